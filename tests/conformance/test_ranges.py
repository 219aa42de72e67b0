"""Step ranges (load_steps), the latest check (writes_if_latest) and batch deletes (delete_many), on
every backend."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from flowpoint import BlobCheckpointStore, CorruptCheckpoint, InvalidTraceId
from flowpoint.blob import CheckpointBlob, PendingWrite
from flowpoint.ids import new_checkpoint_id
from tests.blobs import make_blob
from tests.harnesses.base import StoreHarness

MAX_STEP = 2**63 - 1


async def save_steps(
    store: BlobCheckpointStore, trace: str, steps: list[int]
) -> dict[int, CheckpointBlob]:
    """Save one blob per step, in a shuffled order; return them by step."""
    blobs = {step: make_blob(trace, step, data=f"{trace}@{step}".encode()) for step in steps}
    for step in random.sample(steps, len(steps)):
        await store.save(blobs[step])
    return blobs


async def steps_of(store: BlobCheckpointStore, trace: str, first: int, last: int) -> list[int]:
    return [blob.step for blob in await store.load_steps(trace, first, last)]


# -- writes_if_latest ---------------------------------------------------------------------


async def test_writes_if_latest_answers_only_for_the_latest_as_stored(
    blob_store: BlobCheckpointStore,
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 3, 1])
    await save_steps(blob_store, "other", [9])
    latest = await blob_store.load_latest("t")
    assert latest is not None
    assert await blob_store.writes_if_latest(latest) == []
    assert await blob_store.writes_if_latest(blobs[3]) == []
    assert await blob_store.writes_if_latest(blobs[1]) is None  # stored, but not the latest
    assert await blob_store.writes_if_latest(make_blob("t", 3)) is None  # its step, not its id
    assert await blob_store.writes_if_latest(make_blob("nobody", 0)) is None
    newer = make_blob("t", 4, data=b"newer")
    await blob_store.save(newer)
    assert await blob_store.writes_if_latest(blobs[3]) is None
    assert await blob_store.writes_if_latest(newer) == []


async def test_writes_if_latest_gives_the_writes_as_load_writes_does(
    blob_store: BlobCheckpointStore,
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 1])
    latest = blobs[1]
    writes = [
        PendingWrite("t", latest.checkpoint_id, task, index, f"{task}/{index}".encode())
        for task in ("b", "a")
        for index in (1, -3, 0)
    ]
    await blob_store.save_writes(writes)
    await blob_store.save_writes([PendingWrite("t", blobs[0].checkpoint_id, "a", 0, b"older")])
    found = await blob_store.writes_if_latest(latest)
    assert found == await blob_store.load_writes(latest.checkpoint_id)
    assert len(found or ()) == len(writes)
    assert await blob_store.writes_if_latest(blobs[0]) is None


async def test_writes_if_latest_compares_the_bytes_under_the_id(
    blob_store: BlobCheckpointStore,
) -> None:
    kept = make_blob("t", 0, data=b"what was saved")
    await blob_store.save(kept)
    # Deleted, then saved again under the same id with other bytes: no longer what is kept.
    await blob_store.delete(kept.checkpoint_id)
    assert await blob_store.writes_if_latest(kept) is None
    other = dataclasses.replace(kept, data=b"something else")
    await blob_store.save(other)
    assert await blob_store.writes_if_latest(kept) is None
    assert await blob_store.writes_if_latest(other) == []


@pytest.mark.parametrize("given", [None, "blob", b"data", 7])
async def test_writes_if_latest_refuses_what_is_not_a_blob(
    blob_store: BlobCheckpointStore, given: Any
) -> None:
    with pytest.raises(TypeError, match="CheckpointBlob"):
        await blob_store.writes_if_latest(given)


# -- load_steps ---------------------------------------------------------------------------


async def test_the_whole_range_is_every_blob_as_load_gives_it(
    blob_store: BlobCheckpointStore,
) -> None:
    parent = new_checkpoint_id()
    blobs = [
        make_blob("t", 0, data=b""),
        make_blob("t", 1, data=bytes(range(256)) * 3, parent_id=parent),
        make_blob("t", 2, data=random.randbytes(200_000), current_node=None, metadata={}),
        make_blob("t", 3, data=b"\x00", metadata={"x": 0.5, "n": -7, "b": False, "s": "é"}),
    ]
    for blob in reversed(blobs):
        await blob_store.save(blob)

    loaded = await blob_store.load_steps("t", 0, 3)

    assert loaded == [await blob_store.load(blob.checkpoint_id) for blob in blobs]
    assert [blob.data for blob in loaded] == [blob.data for blob in blobs]
    assert all(type(blob.data) is bytes for blob in loaded)
    assert [blob.checkpoint_id for blob in loaded] == [blob.checkpoint_id for blob in blobs]
    assert loaded[1].parent_id == parent
    assert loaded[2].current_node is None
    assert loaded[3].metadata == {"x": 0.5, "n": -7, "b": False, "s": "é"}
    assert await blob_store.load_steps("t", 0, MAX_STEP) == loaded


async def test_a_partial_range_includes_both_ends(blob_store: BlobCheckpointStore) -> None:
    blobs = await save_steps(blob_store, "t", list(range(8)))
    loaded = await blob_store.load_steps("t", 2, 5)
    assert [blob.step for blob in loaded] == [2, 3, 4, 5]
    assert loaded == [blobs[step] for step in (2, 3, 4, 5)]
    assert await steps_of(blob_store, "t", 0, 0) == [0]
    assert await steps_of(blob_store, "t", 7, 7) == [7]
    assert await steps_of(blob_store, "t", 6, 100) == [6, 7]


async def test_steps_not_stored_are_skipped(blob_store: BlobCheckpointStore) -> None:
    await save_steps(blob_store, "t", [0, 2, 5, 9, 10, 99, 100, 1000])
    assert await steps_of(blob_store, "t", 1, 8) == [2, 5]
    assert await steps_of(blob_store, "t", 3, 4) == []
    assert await steps_of(blob_store, "t", 9, 100) == [9, 10, 99, 100]
    assert await steps_of(blob_store, "t", 101, 999) == []
    assert await steps_of(blob_store, "t", 0, 5000) == [0, 2, 5, 9, 10, 99, 100, 1000]


async def test_steps_come_in_numeric_order_over_the_whole_step_range(
    blob_store: BlobCheckpointStore,
) -> None:
    steps = [0, 1, 9, 10, 11, 2**31, 2**32 + 1, 10**18, MAX_STEP - 1, MAX_STEP]
    await save_steps(blob_store, "t", steps)
    assert await steps_of(blob_store, "t", 0, MAX_STEP) == steps
    assert await steps_of(blob_store, "t", 10, 2**32 + 1) == [10, 11, 2**31, 2**32 + 1]
    assert await steps_of(blob_store, "t", MAX_STEP, MAX_STEP) == [MAX_STEP]
    # Bounds past the highest step a store can hold are fine: nothing is there.
    assert await steps_of(blob_store, "t", 10**18, 2**64) == [10**18, MAX_STEP - 1, MAX_STEP]
    assert await steps_of(blob_store, "t", 0, 10**30) == steps
    assert await steps_of(blob_store, "t", MAX_STEP + 1, 2**64) == []


async def test_an_empty_range_or_an_unknown_trace_gives_nothing(
    blob_store: BlobCheckpointStore,
) -> None:
    await save_steps(blob_store, "t", [0, 1, 2, 3])
    assert await blob_store.load_steps("t", 3, 2) == []
    assert await blob_store.load_steps("t", 2**70, 0) == []
    assert await blob_store.load_steps("nobody", 0, MAX_STEP) == []
    assert await blob_store.load_steps("t/", 0, 3) == []
    assert await blob_store.load_steps("T", 0, 3) == []


async def test_other_traces_never_leak_in(blob_store: BlobCheckpointStore) -> None:
    # Ids that extend, prefix or escape like one another, each holding the same steps.
    traces = ["a", "ab", "a/b", "a b", "a_2Fb", "a%2Fb", "a:1", "b"]
    saved = {trace: await save_steps(blob_store, trace, [0, 1, 2, 3]) for trace in traces}
    for trace in traces:
        loaded = await blob_store.load_steps(trace, 0, 3)
        assert loaded == [saved[trace][step] for step in range(4)]
        assert {blob.trace_id for blob in loaded} == {trace}
        assert [blob.data for blob in loaded] == [f"{trace}@{step}".encode() for step in range(4)]


async def test_deleted_checkpoints_are_not_in_a_range(blob_store: BlobCheckpointStore) -> None:
    blobs = await save_steps(blob_store, "t", list(range(5)))
    assert await blob_store.delete(blobs[1].checkpoint_id)
    assert await blob_store.delete(blobs[4].checkpoint_id)
    assert await steps_of(blob_store, "t", 0, 4) == [0, 2, 3]
    await blob_store.delete_trace("t")
    assert await blob_store.load_steps("t", 0, 4) == []


@pytest.mark.parametrize("bad", [-1, -(2**70), True, False, 1.0, "1", None, 2**64 + 0.5])
async def test_bad_steps_are_refused(blob_store: BlobCheckpointStore, bad: Any) -> None:
    await save_steps(blob_store, "t", [0, 1])
    with pytest.raises(ValueError, match="first_step"):
        await blob_store.load_steps("t", bad, 1)
    with pytest.raises(ValueError, match="last_step"):
        await blob_store.load_steps("t", 0, bad)


@pytest.mark.parametrize("trace", ["", "x" * 10_000, "a\x00b", 7])
async def test_a_bad_trace_id_is_refused(blob_store: BlobCheckpointStore, trace: Any) -> None:
    with pytest.raises(InvalidTraceId):
        await blob_store.load_steps(trace, 0, 1)


async def test_damage_is_reported_as_load_reports_it(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 1, 2])
    await harness.mangle_header(blobs[1].checkpoint_id)
    try:
        damaged = await blob_store.load(blobs[1].checkpoint_id)
    except CorruptCheckpoint:
        with pytest.raises(CorruptCheckpoint):
            await blob_store.load_steps("t", 0, 2)
        # A range that stops below the damage reads none of it.
        assert await blob_store.load_steps("t", 0, 0) == [blobs[0]]
    else:  # a store that keeps typed values (memory) has nothing to check
        assert await blob_store.load_steps("t", 0, 2) == [blobs[0], damaged, blobs[2]]


# -- delete_many --------------------------------------------------------------------------


async def test_delete_many_counts_what_was_there(blob_store: BlobCheckpointStore) -> None:
    blobs = await save_steps(blob_store, "t", list(range(6)))
    others = await save_steps(blob_store, "other", [1, 3])
    doomed = [blobs[1].checkpoint_id, blobs[3].checkpoint_id]
    missing = new_checkpoint_id()

    deleted = await blob_store.delete_many(
        [doomed[0], missing, doomed[1], doomed[0], str(doomed[1]), missing]
    )

    assert deleted == 2
    for checkpoint_id in doomed:
        assert await blob_store.load(checkpoint_id) is None
    assert [info.step for info in await blob_store.history("t")] == [5, 4, 2, 0]
    assert await steps_of(blob_store, "t", 0, 5) == [0, 2, 4, 5]
    assert await blob_store.load_latest("t") == blobs[5]
    assert await blob_store.load_steps("other", 0, 3) == [others[1], others[3]]
    assert await blob_store.delete_many(doomed) == 0


async def test_delete_many_of_the_newest_moves_latest_down(
    blob_store: BlobCheckpointStore,
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 3, 7, 8, 12])
    assert await blob_store.delete_many(blobs[step].checkpoint_id for step in (12, 8, 3)) == 3
    assert await blob_store.load_latest("t") == blobs[7]
    assert [info.step for info in await blob_store.history("t")] == [7, 0]

    assert await blob_store.delete_many([blobs[7].checkpoint_id]) == 1
    assert await blob_store.load_latest("t") == blobs[0]

    assert await blob_store.delete_many([blobs[0].checkpoint_id, blobs[12].checkpoint_id]) == 1
    assert await blob_store.load_latest("t") is None
    assert await blob_store.history("t") == []
    assert await blob_store.traces() == []


async def test_delete_many_across_traces(blob_store: BlobCheckpointStore) -> None:
    a = await save_steps(blob_store, "a", [0, 1, 2])
    b = await save_steps(blob_store, "b", [0, 1])
    c = await save_steps(blob_store, "c", [5])
    ids = [a[2].checkpoint_id, b[0].checkpoint_id, b[1].checkpoint_id, c[5].checkpoint_id]
    assert await blob_store.delete_many(ids) == 4
    assert await blob_store.traces() == ["a"]
    assert await blob_store.load_latest("a") == a[1]
    assert await blob_store.load_latest("b") is None
    assert await blob_store.load_latest("c") is None


async def test_delete_many_of_nothing(blob_store: BlobCheckpointStore) -> None:
    blobs = await save_steps(blob_store, "t", [0, 1])
    assert await blob_store.delete_many([]) == 0
    assert await blob_store.delete_many(iter(())) == 0
    assert await blob_store.delete_many([new_checkpoint_id(), new_checkpoint_id()]) == 0
    assert await blob_store.load_steps("t", 0, 1) == [blobs[0], blobs[1]]


async def test_delete_many_checks_every_id_before_deleting_any(
    blob_store: BlobCheckpointStore,
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 1])
    with pytest.raises(ValueError, match="not a checkpoint id"):
        await blob_store.delete_many([blobs[0].checkpoint_id, "not-an-id"])
    with pytest.raises(ValueError, match="not a checkpoint id"):
        await blob_store.delete_many([blobs[1].checkpoint_id, 42])  # type: ignore[list-item]
    assert await blob_store.load_steps("t", 0, 1) == [blobs[0], blobs[1]]


async def test_a_second_store_sees_a_batch_delete(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    blobs = await save_steps(blob_store, "t", [0, 1, 2, 3])
    assert await blob_store.delete_many([blobs[3].checkpoint_id, blobs[1].checkpoint_id]) == 2
    async with await harness.open() as second:
        assert await second.load_steps("t", 0, 3) == [blobs[0], blobs[2]]
        assert await second.load_latest("t") == blobs[2]
