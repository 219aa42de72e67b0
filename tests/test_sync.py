"""The blocking facade: in the caller's thread over blocking stores, on its own loop otherwise."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flowpoint import (
    Checkpoint,
    CheckpointConflict,
    InMemoryBlobStore,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.stores._base import run_in_caller_thread
from tests.doubles import DelegatingBlobStore

GRAPH = 7


class AsyncDriverStore(DelegatingBlobStore):
    """Stands for a backend with a real async driver: every call suspends once, and
    each call records the thread it ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    async def before(self, call: str) -> None:
        self.threads.add(threading.current_thread().name)
        await asyncio.sleep(0)


def test_a_store_with_an_async_driver_runs_on_the_facades_own_loop() -> None:
    backend = AsyncDriverStore()
    with SyncCheckpointStore(TypedCheckpointStore(backend)) as store:
        checkpoint = Checkpoint.first("a", {"x": 1})
        store.save_with_trace("t", checkpoint, GRAPH)
        assert store.load_latest("t", GRAPH) == checkpoint
        with pytest.raises(CheckpointConflict):
            store.save_with_trace("t", checkpoint, GRAPH)
        assert store.prune("t", keep_latest=1) == 0
    assert backend.threads == {"flowpoint-sync"}


async def test_a_store_with_an_async_driver_works_while_the_callers_loop_runs() -> None:
    with SyncCheckpointStore(TypedCheckpointStore(AsyncDriverStore())) as store:
        store.save_with_trace("t", Checkpoint.first("a", {}), GRAPH)
        assert await asyncio.to_thread(store.traces) == ["t"]
        assert store.traces() == ["t"]


def test_a_blocking_store_runs_in_the_calling_thread(tmp_path: Path) -> None:
    seen: list[str] = []
    with SyncCheckpointStore.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        original = store.store.store._call  # type: ignore[attr-defined]

        def spy(*args: Any) -> Any:
            seen.append(threading.current_thread().name)
            return original(*args)

        store.store.store._call = spy  # type: ignore[attr-defined]
        store.save_with_trace("t", Checkpoint.first("a", {}), GRAPH)
        worker = threading.Thread(target=store.traces, name="worker-7")
        worker.start()
        worker.join()
        store.history("t")
    here = threading.current_thread().name
    assert seen[:3] == [here, "worker-7", here]


def test_many_threads_share_one_blocking_store(tmp_path: Path) -> None:
    with SyncCheckpointStore.open(f"sqlite:///{tmp_path / 's.db'}") as store:

        def own_trace(n: int) -> None:
            checkpoint = Checkpoint.first("a", {"n": n})
            store.save_with_trace(f"trace-{n}", checkpoint, GRAPH)
            for _ in range(9):
                checkpoint = checkpoint.child("b", {"n": n})
                store.save_with_trace(f"trace-{n}", checkpoint, GRAPH)

        def race(n: int) -> bool:
            try:
                store.save_with_trace("shared", Checkpoint.first("a", {"n": n}), GRAPH)
            except CheckpointConflict:
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(own_trace, range(8)))
            wins = list(pool.map(race, range(16)))
        assert wins.count(True) == 1
        assert store.traces() == ["shared", *(f"trace-{n}" for n in range(8))]
        for n in range(8):
            assert [info.step for info in store.history(f"trace-{n}")] == list(range(9, -1, -1))


def test_closed_facades_refuse_calls_for_both_runners(tmp_path: Path) -> None:
    for typed in (
        TypedCheckpointStore(AsyncDriverStore()),
        TypedCheckpointStore.open(f"sqlite:///{tmp_path / 'c.db'}"),
    ):
        store: SyncCheckpointStore[Any] = SyncCheckpointStore(typed)
        store.close()
        store.close()
        with pytest.raises(RuntimeError, match="closed"):
            store.traces()


def test_run_in_caller_thread_refuses_a_coroutine_that_waits() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="waited on an event loop"):
        run_in_caller_thread(waits())


def test_the_facade_takes_only_a_typed_store() -> None:
    with pytest.raises(TypeError):
        SyncCheckpointStore(InMemoryBlobStore())  # type: ignore[arg-type]
