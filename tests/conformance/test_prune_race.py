"""Readers never report damage on an intact trace that a concurrent prune is cutting.

A prune stores whole every checkpoint that is changes to one it deletes, then
deletes. A reader that fetched a delta just before may then find its base gone;
it reads the checkpoint again (now whole, or deleted) instead of calling it
corrupt, on every backend, and so does ``flowpoint verify``.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowpoint import (
    BlobCheckpointStore,
    Checkpoint,
    TypedCheckpointStore,
    open_store,
)
from flowpoint.cli._verify import check_checkpoint
from flowpoint.codec._serde import DELTA_BASE_KEY
from flowpoint.ids import CheckpointId
from flowpoint.stores._base import RewritableBlobStore
from tests.conformance.test_deltas import GRAPH, chat_state, run_chat
from tests.doubles import RewritableDelegatingStore
from tests.harnesses.base import StoreHarness
from tests.processes import SPAWN

TRACE = "race"


class PruneMidRead(RewritableDelegatingStore):
    """A reader's view of the store: the first time it reads into a chain, a prune runs first."""

    def __init__(self, inner: RewritableBlobStore, prune: Callable[[], Awaitable[object]]) -> None:
        super().__init__(inner)
        self.prune: Callable[[], Awaitable[object]] | None = prune

    async def before(self, call: str) -> None:
        if call == "load_steps" and self.prune is not None:
            prune, self.prune = self.prune, None
            await prune()


class Yielding(RewritableDelegatingStore):
    """Every call lets the other tasks run first, as a network round trip would."""

    async def before(self, call: str) -> None:
        await asyncio.sleep(0)


async def reader_over(harness: StoreHarness) -> RewritableBlobStore:
    store = await harness.open()
    assert isinstance(store, RewritableBlobStore)
    return store


async def test_a_latest_whose_base_a_prune_deleted_is_read_again(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    writer = TypedCheckpointStore(blob_store)
    checkpoints = await run_chat(writer, TRACE, 6)
    assert DELTA_BASE_KEY in (await writer.history(TRACE, 1))[0].metadata

    async def prune() -> None:
        assert await writer.prune(TRACE, keep_latest=1) == 5

    reader = TypedCheckpointStore(PruneMidRead(await reader_over(harness), prune))
    assert await reader.load_latest(TRACE, GRAPH) == checkpoints[-1]
    assert (await writer.history(TRACE, 10))[0].checkpoint_id == checkpoints[-1].checkpoint_id


async def test_a_checkpoint_whose_base_a_prune_deleted_is_read_again(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    writer = TypedCheckpointStore(blob_store)
    checkpoints = await run_chat(writer, TRACE, 6)

    async def prune() -> None:
        await writer.prune(TRACE, keep_latest=1)

    reader = TypedCheckpointStore(PruneMidRead(await reader_over(harness), prune))
    assert await reader.load(checkpoints[-1].checkpoint_id, GRAPH) == checkpoints[-1]
    # One the prune deleted while it was read is not there: None, not damage.
    gone = TypedCheckpointStore(PruneMidRead(await reader_over(harness), prune))
    await run_chat(writer, TRACE, 9, start=checkpoints[-1])
    older = (await writer.history(TRACE, 2))[1]
    assert await gone.load(older.checkpoint_id, GRAPH) is None


async def test_verify_reports_a_pruned_checkpoint_as_vanished_not_corrupt(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    writer = TypedCheckpointStore(blob_store)
    await run_chat(writer, TRACE, 6)
    infos = await writer.history(TRACE, 10)

    async def prune() -> None:
        await writer.prune(TRACE, keep_latest=1)

    # The latest is made whole, then its base deleted, while verify reads its chain.
    reader = TypedCheckpointStore(PruneMidRead(await reader_over(harness), prune))
    assert await check_checkpoint(reader, infos[0]) is None
    await run_chat(writer, TRACE, 9, start=await writer.load_latest(TRACE, GRAPH))
    infos = await writer.history(TRACE, 10)
    # The one below it is deleted itself while verify reads its chain.
    reader = TypedCheckpointStore(PruneMidRead(await reader_over(harness), prune))
    assert await check_checkpoint(reader, infos[1]) == "vanished"


async def test_a_missing_base_that_stays_missing_is_still_damage(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    writer = TypedCheckpointStore(blob_store)
    checkpoints = await run_chat(writer, TRACE, 4)
    assert await blob_store.delete(checkpoints[2].checkpoint_id)  # behind the facade's back
    reader = TypedCheckpointStore(await reader_over(harness))
    info = (await writer.history(TRACE, 1))[0]
    problem = await check_checkpoint(reader, info)
    assert problem is not None
    assert problem != "vanished"
    assert problem.kind == "corrupt"
    assert str(checkpoints[2].checkpoint_id) in problem.reason


async def write_and_prune(
    writer: TypedCheckpointStore, steps: int, written: dict[CheckpointId, Checkpoint]
) -> None:
    """Save a chat a step at a time, pruning to the newest checkpoint after each save."""
    previous: Checkpoint | None = None
    for step in range(steps):
        state = chat_state(step)
        checkpoint = (
            Checkpoint.first("agent", state) if previous is None else previous.child("agent", state)
        )
        written[checkpoint.checkpoint_id] = checkpoint
        await writer.save_with_trace(TRACE, checkpoint, GRAPH)
        await writer.prune(TRACE, keep_latest=1)
        previous = checkpoint


async def test_readers_racing_a_writer_that_prunes_never_see_damage(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    written: dict[CheckpointId, Checkpoint] = {}
    writer = TypedCheckpointStore(Yielding(await reader_over(harness)))
    finished = asyncio.Event()

    async def write() -> None:
        try:
            await write_and_prune(writer, 30, written)
        finally:
            finished.set()

    async def read() -> int:
        # Nothing kept in memory: every load of a delta reads its chain.
        reader = TypedCheckpointStore(Yielding(await reader_over(harness)), frame_cache_bytes=0)
        loads = 0
        while not finished.is_set():
            latest = await reader.load_latest(TRACE, GRAPH)
            if latest is not None:
                assert latest == written[latest.checkpoint_id]
            loads += 1
        return loads

    results = await asyncio.gather(write(), read(), read(), read())
    assert all(loads > 10 for loads in results[1:])


def read_while_pruned(url: str, ready: Any, stop: Any, results: Any) -> None:
    """Run in a child process: load the trace's latest until ``stop`` is set; report counts."""

    async def run() -> dict[str, int]:
        counts = {"loads": 0, "found": 0}
        async with open_store(url) as store:
            reader = TypedCheckpointStore(store, frame_cache_bytes=0)
            await store.traces()  # connected and set up before the race
            ready.set()
            while not stop.is_set():
                latest = await reader.load_latest(TRACE, GRAPH)
                counts["loads"] += 1
                counts["found"] += latest is not None
        return counts

    try:
        results.put(asyncio.run(run()))
    except BaseException as exc:  # reported to the test, which fails on it
        results.put(f"error: {exc!r}")


@pytest.mark.slow
async def test_a_reader_in_another_process_never_sees_damage(
    shared_harness: StoreHarness, shared_store: BlobCheckpointStore
) -> None:
    ready, stop, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(
        target=read_while_pruned, args=(shared_harness.store_url(), ready, stop, results)
    )
    child.start()
    try:
        assert await asyncio.to_thread(ready.wait, 120)
        written: dict[CheckpointId, Checkpoint] = {}
        await write_and_prune(TypedCheckpointStore(shared_store), 80, written)
        stop.set()
        outcome = await asyncio.to_thread(results.get, True, 120)
        child.join(timeout=60)
    except queue.Empty:
        pytest.fail("the reading process gave no result")
    finally:
        stop.set()
        if child.is_alive():
            child.kill()
            child.join()
        child.close()
        results.close()
        results.join_thread()
    assert isinstance(outcome, dict), outcome
    assert outcome["found"] > 0
