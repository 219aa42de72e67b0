"""Pending writes (save_writes, load_writes) and how deletes take them along, on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from flowpoint import BlobCheckpointStore, InvalidTraceId, PruneRule
from flowpoint.blob import PendingWrite
from flowpoint.ids import CheckpointId, new_checkpoint_id
from tests.blobs import make_blob
from tests.harnesses.base import StoreHarness

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def writes_of(
    checkpoint_id: CheckpointId, task_id: str, *datas: bytes, trace: str = "trace", start: int = 0
) -> list[PendingWrite]:
    return [
        PendingWrite(trace, checkpoint_id, task_id, start + index, data)
        for index, data in enumerate(datas)
    ]


def keyed(writes: list[PendingWrite]) -> list[tuple[str, int, bytes]]:
    return [(write.task_id, write.index, write.data) for write in writes]


async def saved_checkpoint(
    store: BlobCheckpointStore, trace: str = "trace", step: int = 0
) -> CheckpointId:
    blob = make_blob(trace, step)
    await store.save(blob)
    return blob.checkpoint_id


async def test_writes_come_back_by_task_then_index(blob_store: BlobCheckpointStore) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    assert await blob_store.save_writes(writes_of(checkpoint, "web", b"w0", b"w1")) == 2
    assert await blob_store.save_writes(writes_of(checkpoint, "docs", b"d0")) == 1
    special = [PendingWrite("trace", checkpoint, "docs", -3, b"error")]
    assert await blob_store.save_writes(special) == 1
    loaded = await blob_store.load_writes(checkpoint)
    assert keyed(loaded) == [
        ("docs", -3, b"error"),
        ("docs", 0, b"d0"),
        ("web", 0, b"w0"),
        ("web", 1, b"w1"),
    ]
    assert all(w.trace_id == "trace" and w.checkpoint_id == checkpoint for w in loaded)


async def test_a_checkpoint_without_writes_has_none(blob_store: BlobCheckpointStore) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    assert await blob_store.load_writes(checkpoint) == []
    assert await blob_store.load_writes(new_checkpoint_id()) == []


async def test_the_first_write_of_a_key_wins(blob_store: BlobCheckpointStore) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    assert await blob_store.save_writes(writes_of(checkpoint, "web", b"first")) == 1
    # A rerun of the same task after a crash sends its writes again: nothing changes.
    assert await blob_store.save_writes(writes_of(checkpoint, "web", b"second", b"more")) == 1
    assert keyed(await blob_store.load_writes(checkpoint)) == [
        ("web", 0, b"first"),
        ("web", 1, b"more"),
    ]


async def test_overwrite_replaces_what_is_stored(blob_store: BlobCheckpointStore) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    await blob_store.save_writes(writes_of(checkpoint, "web", b"old", start=-1))
    replaced = writes_of(checkpoint, "web", b"new", start=-1)
    assert await blob_store.save_writes(replaced, overwrite=True) == 1
    assert keyed(await blob_store.load_writes(checkpoint)) == [("web", -1, b"new")]


async def test_concurrent_writers_of_one_key_leave_exactly_one(
    blob_store: BlobCheckpointStore,
) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    attempts = [writes_of(checkpoint, "task", f"attempt {n}".encode()) for n in range(8)]
    counts = await asyncio.gather(*(blob_store.save_writes(one) for one in attempts))
    assert sorted(counts) == [0] * 7 + [1]
    [winner] = await blob_store.load_writes(checkpoint)
    assert winner.data == attempts[counts.index(1)][0].data


async def test_concurrent_calls_each_store_their_own_keys(
    blob_store: BlobCheckpointStore,
) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    calls = [
        [*writes_of(checkpoint, f"task {n}", b"own"), *writes_of(checkpoint, "shared", b"%d" % n)]
        for n in range(8)
    ]
    counts = await asyncio.gather(*(blob_store.save_writes(call) for call in calls))
    assert sorted(counts) == [1] * 7 + [2]
    assert keyed(await blob_store.load_writes(checkpoint)) == [
        ("shared", 0, b"%d" % counts.index(2)),
        *((f"task {n}", 0, b"own") for n in range(8)),
    ]


async def test_writes_of_checkpoints_and_traces_are_kept_apart(
    blob_store: BlobCheckpointStore,
) -> None:
    first = await saved_checkpoint(blob_store, "a", 0)
    second = await saved_checkpoint(blob_store, "a", 1)
    other = await saved_checkpoint(blob_store, "a/b", 0)
    await blob_store.save_writes(writes_of(first, "t", b"first", trace="a"))
    await blob_store.save_writes(writes_of(second, "t", b"second", trace="a"))
    await blob_store.save_writes(writes_of(other, "t", b"other", trace="a/b"))
    assert keyed(await blob_store.load_writes(first)) == [("t", 0, b"first")]
    assert keyed(await blob_store.load_writes(second)) == [("t", 0, b"second")]
    assert keyed(await blob_store.load_writes(other)) == [("t", 0, b"other")]


async def test_any_bytes_and_extreme_keys_round_trip(blob_store: BlobCheckpointStore) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    task = "send:summarise/3 naïve ✓ " + "x" * 200
    writes = [
        PendingWrite("trace", checkpoint, task, INT64_MIN, b""),
        PendingWrite("trace", checkpoint, task, INT64_MAX, bytes(range(256)) * 64),
        PendingWrite("trace", checkpoint, "..", 0, b"\x00" * 10),
    ]
    assert await blob_store.save_writes(writes) == 3
    loaded = await blob_store.load_writes(checkpoint)
    assert sorted(keyed(loaded)) == sorted(keyed(writes))


async def test_deleting_a_checkpoint_deletes_its_writes(blob_store: BlobCheckpointStore) -> None:
    doomed = await saved_checkpoint(blob_store, "t", 0)
    kept = await saved_checkpoint(blob_store, "t", 1)
    await blob_store.save_writes(writes_of(doomed, "x", b"1", trace="t"))
    await blob_store.save_writes(writes_of(kept, "x", b"2", trace="t"))
    assert await blob_store.delete(doomed)
    assert await blob_store.load_writes(doomed) == []
    assert keyed(await blob_store.load_writes(kept)) == [("x", 0, b"2")]


async def test_batch_deletes_and_prune_delete_writes(blob_store: BlobCheckpointStore) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    ids = []
    for step in range(4):
        blob = make_blob("t", step, created_at=old)
        await blob_store.save(blob)
        await blob_store.save_writes(writes_of(blob.checkpoint_id, "x", b"w", trace="t"))
        ids.append(blob.checkpoint_id)
    assert await blob_store.delete_many([ids[0]]) == 1
    assert await blob_store.prune("t", PruneRule(keep_latest=1, older_than=None)) == 2
    assert [await blob_store.load_writes(one) for one in ids[:3]] == [[], [], []]
    assert keyed(await blob_store.load_writes(ids[3])) == [("x", 0, b"w")]


async def test_deleting_a_trace_deletes_every_write_of_it(blob_store: BlobCheckpointStore) -> None:
    saved = await saved_checkpoint(blob_store, "t", 0)
    never_saved = new_checkpoint_id()  # writes may arrive for a checkpoint being deleted
    await blob_store.save_writes(writes_of(saved, "x", b"1", trace="t"))
    await blob_store.save_writes(writes_of(never_saved, "x", b"2", trace="t"))
    other = await saved_checkpoint(blob_store, "u", 0)
    await blob_store.save_writes(writes_of(other, "x", b"3", trace="u"))
    assert await blob_store.delete_trace("t") == 1
    assert await blob_store.load_writes(saved) == []
    assert await blob_store.load_writes(never_saved) == []
    assert keyed(await blob_store.load_writes(other)) == [("x", 0, b"3")]


async def test_writes_of_a_checkpoint_not_stored_are_kept_and_deleted_by_id(
    blob_store: BlobCheckpointStore,
) -> None:
    never_saved = new_checkpoint_id()
    await blob_store.save_writes(writes_of(never_saved, "x", b"1", b"2", trace="t"))
    assert keyed(await blob_store.load_writes(never_saved)) == [("x", 0, b"1"), ("x", 1, b"2")]
    assert await blob_store.delete(never_saved) is False  # no checkpoint, but its writes go
    assert await blob_store.load_writes(never_saved) == []
    await blob_store.save_writes(writes_of(never_saved, "x", b"3", trace="t"))
    assert await blob_store.delete_many([never_saved]) == 0
    assert await blob_store.load_writes(never_saved) == []


async def test_the_writes_of_a_checkpoint_belong_to_one_trace(
    blob_store: BlobCheckpointStore,
) -> None:
    checkpoint = await saved_checkpoint(blob_store, "t", 0)
    await blob_store.save_writes(writes_of(checkpoint, "x", b"1", trace="t"))
    with pytest.raises(ValueError, match="stored under trace 't'"):
        await blob_store.save_writes(writes_of(checkpoint, "y", b"2", trace="other"))
    with pytest.raises(ValueError, match="stored under trace 't'"):
        await blob_store.save_writes(writes_of(checkpoint, "x", b"3", trace="t/"), overwrite=True)
    assert keyed(await blob_store.load_writes(checkpoint)) == [("x", 0, b"1")]
    assert await blob_store.delete_trace("other") == 0
    assert keyed(await blob_store.load_writes(checkpoint)) == [("x", 0, b"1")]
    # Once they are gone, the checkpoint's writes may be saved under any trace.
    assert await blob_store.delete(checkpoint)
    assert await blob_store.save_writes(writes_of(checkpoint, "y", b"2", trace="other")) == 1
    assert [w.trace_id for w in await blob_store.load_writes(checkpoint)] == ["other"]


async def test_many_calls_for_one_checkpoint_resolve_as_they_were_made(
    blob_store: BlobCheckpointStore,
) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    assert await blob_store.save_writes(writes_of(checkpoint, "a", b"a0", b"a1")) == 2
    assert await blob_store.save_writes(writes_of(checkpoint, "a", b"x0", b"x1", b"a2")) == 1
    assert await blob_store.save_writes(writes_of(checkpoint, "a", b"n1", start=1), overwrite=True)
    assert await blob_store.save_writes(writes_of(checkpoint, "a", b"y1", start=1)) == 0
    assert await blob_store.save_writes(writes_of(checkpoint, "b", b"b0")) == 1
    assert keyed(await blob_store.load_writes(checkpoint)) == [
        ("a", 0, b"a0"),
        ("a", 1, b"n1"),
        ("a", 2, b"a2"),
        ("b", 0, b"b0"),
    ]


async def test_writes_survive_reopening(harness: StoreHarness) -> None:
    async with await harness.open() as store:
        checkpoint = await saved_checkpoint(store)
        await store.save_writes(writes_of(checkpoint, "web", b"kept"))
    if harness.name == "memory":
        return  # nothing outlives a memory store
    async with await harness.open() as store:
        assert keyed(await store.load_writes(checkpoint)) == [("web", 0, b"kept")]


async def test_an_empty_call_saves_nothing(blob_store: BlobCheckpointStore) -> None:
    assert await blob_store.save_writes([]) == 0


@pytest.mark.parametrize(
    ("task_id", "index"),
    [
        ("", 0),
        ("x" * 257, 0),
        ("tab\there", 0),
        (7, 0),
        ("t", 2**63),
        ("t", INT64_MIN - 1),
        ("t", True),
        ("t", 1.0),
    ],
)
async def test_bad_keys_are_refused_before_anything_is_stored(
    blob_store: BlobCheckpointStore, task_id: object, index: object
) -> None:
    checkpoint = await saved_checkpoint(blob_store)
    good = PendingWrite("trace", checkpoint, "good", 0, b"x")
    bad = PendingWrite("trace", checkpoint, task_id, index, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"task id|index"):
        await blob_store.save_writes([good, bad])
    assert await blob_store.load_writes(checkpoint) == []


async def test_one_call_takes_one_checkpoint_and_distinct_keys(
    blob_store: BlobCheckpointStore,
) -> None:
    first = await saved_checkpoint(blob_store, "t", 0)
    second = await saved_checkpoint(blob_store, "t", 1)
    mixed = [PendingWrite("t", first, "x", 0, b""), PendingWrite("t", second, "x", 0, b"")]
    with pytest.raises(ValueError, match="one checkpoint"):
        await blob_store.save_writes(mixed)
    twice = [PendingWrite("t", first, "x", 0, b"a"), PendingWrite("t", first, "x", 0, b"b")]
    with pytest.raises(ValueError, match="twice"):
        await blob_store.save_writes(twice)
    with pytest.raises(InvalidTraceId):
        await blob_store.save_writes([PendingWrite("", first, "x", 0, b"")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await blob_store.save_writes([make_blob()])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await blob_store.save_writes([PendingWrite("t", first, "x", 0, "text")])  # type: ignore[arg-type]
    assert await blob_store.load_writes(first) == []
    assert await blob_store.load_writes(second) == []


async def test_writes_of_many_checkpoints_come_back_in_one_call(
    blob_store: BlobCheckpointStore,
) -> None:
    first, second, without = [await saved_checkpoint(blob_store, "a", step) for step in range(3)]
    other, never_stored = await saved_checkpoint(blob_store, "a/b", 0), new_checkpoint_id()
    for checkpoint, trace, task, datas in [
        (first, "a", "web", [b"w0", b"w1"]),
        (second, "a", "t", [b"second"]),
        (other, "a/b", "t", [b"other"]),
    ]:
        await blob_store.save_writes(writes_of(checkpoint, task, *datas, trace=trace))
    await blob_store.save_writes([PendingWrite("a", first, "docs", -3, b"error")])
    wanted = [other, never_stored, first, without, second, first]
    found = await blob_store.load_writes_many(wanted)
    # Every id asked for, once, in the order asked; each with what load_writes gives.
    assert list(found) == [other, never_stored, first, without, second]
    for checkpoint, writes in found.items():
        assert writes == await blob_store.load_writes(checkpoint)
    assert keyed(found[first]) == [("docs", -3, b"error"), ("web", 0, b"w0"), ("web", 1, b"w1")]
    assert keyed(found[other]) == [("t", 0, b"other")]
    assert found[never_stored] == found[without] == []
    assert await blob_store.load_writes_many([]) == {}


async def test_writes_of_more_checkpoints_than_one_query_takes(
    blob_store: BlobCheckpointStore,
) -> None:
    checkpoints = [await saved_checkpoint(blob_store, "many", step) for step in range(3)]
    for checkpoint in checkpoints:
        await blob_store.save_writes(writes_of(checkpoint, "t", checkpoint.bytes, trace="many"))
    unknown = [new_checkpoint_id() for _ in range(1200)]
    found = await blob_store.load_writes_many([*unknown[:700], *checkpoints, *unknown[700:]])
    assert len(found) == 1203
    assert [keyed(found[one]) for one in checkpoints] == [
        [("t", 0, one.bytes)] for one in checkpoints
    ]
    assert not any(found[one] for one in unknown)
