"""Several processes on one store: one winner per step, and nothing lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from flowpoint import BlobCheckpointStore, CheckpointBlob
from flowpoint.blob import PendingWrite
from flowpoint.ids import new_checkpoint_id
from tests.harnesses.base import StoreHarness
from tests.processes import (
    PROCESSES,
    run_processes,
    save_after_barrier,
    save_writes_after_barrier,
)


def blob(trace: str, step: int, data: bytes) -> CheckpointBlob:
    return CheckpointBlob(
        checkpoint_id=new_checkpoint_id(),
        trace_id=trace,
        step=step,
        parent_id=None,
        graph_hash=0xFEED,
        created_at=datetime.now(UTC),
        current_node="n",
        metadata={"writer": data.decode()},
        data=data,
    )


@pytest.mark.slow
async def test_of_eight_processes_saving_one_step_exactly_one_wins(
    shared_harness: StoreHarness, shared_store: BlobCheckpointStore
) -> None:
    url = shared_harness.store_url()
    blobs = [blob("race/1", 3, f"writer {i}".encode()) for i in range(PROCESSES)]
    outcomes = await asyncio.to_thread(
        run_processes, save_after_barrier, [(url, [each]) for each in blobs]
    )
    assert sorted(outcomes) == ["conflict"] * (PROCESSES - 1) + ["saved"]
    [info] = await shared_store.history("race/1")
    winner = await shared_store.load(info.checkpoint_id)
    assert winner in blobs
    for loser in blobs:
        if loser != winner:
            assert await shared_store.load(loser.checkpoint_id) is None


@pytest.mark.slow
async def test_eight_processes_saving_their_own_traces_lose_nothing(
    shared_harness: StoreHarness, shared_store: BlobCheckpointStore
) -> None:
    url = shared_harness.store_url()
    traces = {
        f"process {i}": [blob(f"process {i}", step, f"{i}:{step}".encode()) for step in range(20)]
        for i in range(PROCESSES)
    }
    outcomes = await asyncio.to_thread(
        run_processes, save_after_barrier, [(url, blobs) for blobs in traces.values()]
    )
    assert outcomes == ["saved"] * PROCESSES
    assert await shared_store.traces() == sorted(traces)
    for trace_id, blobs in traces.items():
        assert await shared_store.history(trace_id, limit=100) == [
            b.info() for b in reversed(blobs)
        ]
        assert await shared_store.load_latest(trace_id) == blobs[-1]


@pytest.mark.slow
async def test_of_eight_processes_writing_one_key_exactly_one_stores_it(
    shared_harness: StoreHarness, shared_store: BlobCheckpointStore
) -> None:
    url = shared_harness.store_url()
    checkpoint = blob("race/writes", 0, b"base")
    await shared_store.save(checkpoint)
    calls = [
        [
            PendingWrite("race/writes", checkpoint.checkpoint_id, "shared", 0, b"writer %d" % n),
            PendingWrite("race/writes", checkpoint.checkpoint_id, f"own {n}", 0, b"%d" % n),
        ]
        for n in range(PROCESSES)
    ]
    outcomes = await asyncio.to_thread(
        run_processes, save_writes_after_barrier, [(url, call) for call in calls]
    )
    # Each call stored its own key; exactly one stored the shared one too.
    counts = dict(outcomes)
    assert sorted(counts.values()) == [1] * (PROCESSES - 1) + [2], outcomes
    [winner] = [int(task[4:]) for task, stored in counts.items() if stored == 2]
    loaded = await shared_store.load_writes(checkpoint.checkpoint_id)
    assert [(w.task_id, w.data) for w in loaded] == [
        *((f"own {n}", b"%d" % n) for n in range(PROCESSES)),
        ("shared", b"writer %d" % winner),
    ]
