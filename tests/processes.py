"""Running store work in several processes at once, started together by a barrier."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowpoint import BlobCheckpointStore, CheckpointBlob, CheckpointConflict, open_store
from flowpoint.blob import PendingWrite

PROCESSES = 8
SPAWN = multiprocessing.get_context("spawn")


def save_after_barrier(url: str, barrier: Any, results: Any, blobs: list[CheckpointBlob]) -> None:
    """Run in a child process: open the store at ``url``, wait for the others, save ``blobs``.

    Puts ``"saved"``, ``"conflict"`` or ``"error: ..."`` on ``results``.
    """

    async def save(store: BlobCheckpointStore) -> str:
        for blob in blobs:
            await store.save(blob)
        return "saved"

    _after_barrier(url, barrier, results, save)


def save_writes_after_barrier(
    url: str, barrier: Any, results: Any, writes: list[PendingWrite]
) -> None:
    """Run in a child process: like :func:`save_after_barrier`, for one ``save_writes`` call.

    Puts ``(the last write's task id, how many writes the call stored)`` on ``results``.
    """

    async def save_writes(store: BlobCheckpointStore) -> tuple[str, int]:
        return writes[-1].task_id, await store.save_writes(writes)

    _after_barrier(url, barrier, results, save_writes)


def _after_barrier(
    url: str,
    barrier: Any,
    results: Any,
    work: Callable[[BlobCheckpointStore], Awaitable[object]],
) -> None:
    async def run() -> object:
        async with open_store(url) as store:
            await store.traces()  # connected and set up before the race
            barrier.wait()
            return await work(store)

    outcome: object
    try:
        outcome = asyncio.run(run())
    except CheckpointConflict:
        outcome = "conflict"
    except BaseException as exc:
        outcome = f"error: {exc!r}"
    results.put(outcome)


def run_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned process per argument tuple and return what each put on the queue.

    Each process gets its tuple's first item, then a shared barrier and result queue,
    then the tuple's other items.
    """
    results = SPAWN.Queue()
    barrier = SPAWN.Barrier(len(args), timeout=120)
    processes = [SPAWN.Process(target=target, args=(a[0], barrier, results, *a[1:])) for a in args]
    try:
        for process in processes:
            process.start()
        collected = [results.get(timeout=180) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        return collected
    except queue.Empty:
        pytest.fail("a child process gave no result")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        results.close()
        results.join_thread()
