"""Task writes through the typed and blocking facades: encoded by the codec, kept by the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flowpoint import (
    Checkpoint,
    CheckpointStoreError,
    CorruptCheckpoint,
    InMemoryBlobStore,
    KeyRing,
    SerdeCheckpointCodec,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.blob import CheckpointBlob
from flowpoint.checkpoint import TaskWrite
from flowpoint.codec import CheckpointCodec
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores.sqlite import SqliteBlobStore

GRAPH = 7
K1, K2 = bytes([1]) * 32, bytes([2]) * 32

# LangGraph's reserved channels and their indexes (langgraph.checkpoint.base.WRITES_IDX_MAP).
WRITES_IDX_MAP = {"__error__": -1, "__scheduled__": -2, "__interrupt__": -3, "__resume__": -4}


def put_writes(
    store: TypedCheckpointStore[Any],
    thread: str,
    checkpoint_id: CheckpointId,
    writes: list[tuple[str, Any]],
    task_id: str,
    task_path: str = "",
) -> Any:
    """LangGraph's ``put_writes``, as its docstring on ``save_writes`` maps it."""
    return store.save_writes(
        thread,
        checkpoint_id,
        [
            TaskWrite(task_id, WRITES_IDX_MAP.get(channel, i), channel, value, task_path)
            for i, (channel, value) in enumerate(writes)
        ],
        overwrite=all(channel in WRITES_IDX_MAP for channel, _ in writes),
    )


async def test_writes_round_trip_and_the_first_of_a_key_wins(tmp_path: Path) -> None:
    async with TypedCheckpointStore(SqliteBlobStore(tmp_path / "w.db")) as store:
        checkpoint = Checkpoint.first("plan", {"n": 0})
        await store.save_with_trace("t", checkpoint, GRAPH)
        ran_from = checkpoint.checkpoint_id
        first = [("notes", ["a"]), ("count", 1)]
        assert await put_writes(store, "t", ran_from, first, "web", "~/web") == 2
        assert await put_writes(store, "t", ran_from, [("notes", ["b"])], "web") == 0
        assert await put_writes(store, "t", ran_from, [("__error__", "boom")], "docs") == 1
        assert await put_writes(store, "t", ran_from, [("__error__", "again")], "docs") == 1
        writes = await store.load_writes(ran_from)
        assert writes == [
            TaskWrite("docs", -1, "__error__", "again"),
            TaskWrite("web", 0, "notes", ["a"], "~/web"),
            TaskWrite("web", 1, "count", 1, "~/web"),
        ]
        assert await store.load_writes(Checkpoint.first("x", {}).checkpoint_id) == []
        # Deleted with their checkpoint, through the facade as through the store.
        await store.delete(ran_from)
        assert await store.load_writes(ran_from) == []


async def test_writes_are_checked_on_the_way_in_and_out() -> None:
    blobs = InMemoryBlobStore()
    store = TypedCheckpointStore(blobs)
    ran_from = Checkpoint.first("plan", {}).checkpoint_id
    with pytest.raises(TypeError, match="TaskWrite"):
        await store.save_writes("t", ran_from, [("notes", 1)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="trace"):
        await store.save_writes("", ran_from, [TaskWrite("web", 0, "c", 1)])
    with pytest.raises(ValueError, match="checkpoint"):
        await store.save_writes("t", "not-an-id", [TaskWrite("web", 0, "c", 1)])
    with pytest.raises(CheckpointStoreError):
        await store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", object())])
    # Data moved under another key of the store is caught.
    await store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", 1)])
    (stored,) = await blobs.load_writes(ran_from)
    await blobs.save_writes([stored.__class__("t", ran_from, "docs", 0, stored.data)])
    with pytest.raises(CorruptCheckpoint, match="belongs to another write: task_id"):
        await store.load_writes(ran_from)


class NoWrites(CheckpointCodec[Any]):
    """A codec of its own that stores no pending writes."""

    def serialize(self, checkpoint: Checkpoint[Any], graph_hash: int, trace_id: TraceId) -> Any:
        return SerdeCheckpointCodec().serialize(checkpoint, graph_hash, trace_id)

    def deserialize(self, blob: CheckpointBlob, expected_hash: int | None) -> Any:
        return SerdeCheckpointCodec().deserialize(blob, expected_hash)


async def test_a_codec_that_cannot_store_writes_says_so() -> None:
    store = TypedCheckpointStore(InMemoryBlobStore(), NoWrites())
    ran_from = Checkpoint.first("plan", {}).checkpoint_id
    with pytest.raises(TypeError, match="NoWrites cannot store pending writes"):
        await store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", 1)])
    with pytest.raises(TypeError, match="NoWrites cannot store pending writes"):
        await store.load_writes(ran_from)


def test_the_blocking_facade_has_the_same_methods(tmp_path: Path) -> None:
    with SyncCheckpointStore.open(f"sqlite:///{tmp_path / 'w.db'}") as store:
        ran_from = Checkpoint.first("plan", {}).checkpoint_id
        assert store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", {"x": 1})]) == 1
        assert store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", 2)]) == 0
        assert store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", 2)], overwrite=True) == 1
        assert store.load_writes(ran_from) == [TaskWrite("web", 0, "c", 2)]


async def test_rekey_moves_writes_to_the_primary_key() -> None:
    blobs = InMemoryBlobStore()
    old = TypedCheckpointStore(
        blobs, SerdeCheckpointCodec(encryption=KeyRing({"k1": K1}, primary="k1"))
    )
    checkpoint = Checkpoint.first("plan", {"n": 1})
    await old.save_with_trace("t", checkpoint, GRAPH)
    await old.save_writes("t", checkpoint.checkpoint_id, [TaskWrite("web", 0, "c", "x")])
    both = KeyRing({"k1": K1, "k2": K2}, primary="k2")
    result = await TypedCheckpointStore(blobs, SerdeCheckpointCodec(encryption=both)).rekey()
    assert (result.rewritten, result.writes, result.skipped) == (1, 1, ())
    only_new = TypedCheckpointStore(
        blobs, SerdeCheckpointCodec(encryption=KeyRing({"k2": K2}, primary="k2"))
    )
    assert await only_new.load_writes(checkpoint.checkpoint_id) == [TaskWrite("web", 0, "c", "x")]
    again = await TypedCheckpointStore(blobs, SerdeCheckpointCodec(encryption=both)).rekey()
    assert (again.rewritten, again.writes) == (0, 0)


async def test_rekey_leaves_unencrypted_writes_and_says_where() -> None:
    blobs = InMemoryBlobStore()
    checkpoint = Checkpoint.first("plan", {"n": 1})
    ring = KeyRing({"k1": K1}, primary="k1")
    await TypedCheckpointStore(blobs, SerdeCheckpointCodec(encryption=ring)).save_with_trace(
        "t", checkpoint, GRAPH
    )
    plain = TypedCheckpointStore(blobs)
    await plain.save_writes("t", checkpoint.checkpoint_id, [TaskWrite("web", 0, "c", "x")])
    result = await TypedCheckpointStore(blobs, SerdeCheckpointCodec(encryption=ring)).rekey()
    assert (result.writes, result.skipped) == (0, (checkpoint.checkpoint_id,))
    allowing = SerdeCheckpointCodec(encryption=ring, allow_unencrypted=True)
    assert (await TypedCheckpointStore(blobs, allowing).rekey()).writes == 1


def test_the_facades_run_from_a_thread_with_a_loop_elsewhere(tmp_path: Path) -> None:
    async def main() -> list[TaskWrite]:
        def blocking() -> list[TaskWrite]:
            with SyncCheckpointStore.open(f"sqlite:///{tmp_path / 'w.db'}") as store:
                ran_from = Checkpoint.first("plan", {}).checkpoint_id
                store.save_writes("t", ran_from, [TaskWrite("web", 0, "c", 1)])
                return store.load_writes(ran_from)

        return await asyncio.to_thread(blocking)

    assert asyncio.run(main()) == [TaskWrite("web", 0, "c", 1)]


async def test_the_writes_of_many_checkpoints_load_in_one_call(tmp_path: Path) -> None:
    async with TypedCheckpointStore(SqliteBlobStore(tmp_path / "w.db")) as store:
        first = Checkpoint.first("plan", {"n": 0})
        second = first.child("plan", {"n": 1})
        for checkpoint in (first, second):
            await store.save_with_trace("t", checkpoint, GRAPH)
        await put_writes(store, "t", first.checkpoint_id, [("count", 1), ("notes", "a")], "web")
        calls: list[str] = []
        store.store._load_writes = lambda *_: calls.append("one")  # type: ignore[method-assign]
        found = await store.load_writes_many([second.checkpoint_id, str(first.checkpoint_id)])
        assert found == {
            second.checkpoint_id: [],
            first.checkpoint_id: [
                TaskWrite("web", 0, "count", 1),
                TaskWrite("web", 1, "notes", "a"),
            ],
        }
        assert calls == []  # one query for all, never one per checkpoint
    with SyncCheckpointStore(TypedCheckpointStore(SqliteBlobStore(tmp_path / "w.db"))) as blocking:
        assert blocking.load_writes_many([first.checkpoint_id]) == {
            first.checkpoint_id: found[first.checkpoint_id]
        }


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_the_latest_saved_gives_its_writes_in_one_call(tmp_path: Path, backend: str) -> None:
    blobs = SqliteBlobStore(tmp_path / "w.db") if backend == "sqlite" else InMemoryBlobStore()
    async with TypedCheckpointStore(blobs) as store:
        first = Checkpoint.first("plan", {"n": 0})
        saved = await store.save_encoded("t", first, GRAPH)
        assert saved.info() == (await store.history("t"))[0]
        assert await store.writes_if_latest(saved) == []
        await put_writes(store, "t", first.checkpoint_id, [("count", 1), ("notes", "a")], "web")
        calls: list[str] = []
        store.store._load_writes = lambda *_: calls.append("one")  # type: ignore[method-assign]
        store.store._load_latest = lambda *_: calls.append("latest")  # type: ignore[method-assign]
        expected = [TaskWrite("web", 0, "count", 1), TaskWrite("web", 1, "notes", "a")]
        if backend == "sqlite":
            assert await store.writes_if_latest(saved) == expected
            assert calls == []  # the check and the writes, in one query
        del store.store._load_writes, store.store._load_latest
        assert await store.writes_if_latest(saved) == expected
        newer = await store.save_encoded("t", first.child("plan", {"n": 1}), GRAPH)
        assert await store.writes_if_latest(saved) is None
        assert await store.writes_if_latest(newer) == []


async def test_a_write_returned_under_another_checkpoint_is_refused() -> None:
    blobs = InMemoryBlobStore()
    store = TypedCheckpointStore(blobs)
    checkpoint = Checkpoint.first("plan", {"n": 0})
    other = Checkpoint.first("plan", {"n": 1})
    await store.save_with_trace("t", checkpoint, GRAPH)
    await put_writes(store, "t", checkpoint.checkpoint_id, [("count", 1)], "web")
    misplaced = await blobs.load_writes(checkpoint.checkpoint_id)

    async def swapped(ids: list[CheckpointId]) -> dict[CheckpointId, Any]:
        return {other.checkpoint_id: misplaced}

    blobs._load_writes_many = swapped  # type: ignore[method-assign]
    with pytest.raises(CorruptCheckpoint, match="returned a write of checkpoint"):
        await store.load_writes_many([other.checkpoint_id])
