"""The optional rewrite ability, and rekeying on top of it, on every backend that has it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from flowpoint import (
    BlobCheckpointStore,
    Checkpoint,
    CheckpointBlob,
    CheckpointConflict,
    CodecError,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
)
from flowpoint.codec import KeyRing
from flowpoint.stores._base import RewritableBlobStore
from flowpoint.typed import RekeyResult
from tests.harnesses.base import StoreHarness

GRAPH = 0x5EC0DE
K1, K2 = bytes(range(32)), bytes(range(1, 33))
OLD = KeyRing({"k1": K1}, primary="k1")
ROTATED = KeyRing({"k1": K1, "k2": K2}, primary="k2")
NEW_ONLY = KeyRing({"k2": K2}, primary="k2")


@pytest.fixture
def rewritable(blob_store: BlobCheckpointStore) -> RewritableBlobStore:
    if not isinstance(blob_store, RewritableBlobStore):
        pytest.skip("no rewrite ability")  # a capability this backend lacks, not a missing server
    return blob_store


def typed(store: BlobCheckpointStore, keys: KeyRing | None = None) -> TypedCheckpointStore[Any]:
    return TypedCheckpointStore(store, SerdeCheckpointCodec(dict, encryption=keys))


async def saved_blobs(store: RewritableBlobStore, trace: str = "t", n: int = 3) -> list[Any]:
    facade = typed(store)
    checkpoint = Checkpoint.first("a", {"n": 0}, metadata={"i": 1, "f": 1.0, "b": True, "s": "x"})
    blobs = []
    for i in range(n):
        if i:
            checkpoint = checkpoint.child("b", {"n": i}, metadata={"i": i})
        await facade.save_with_trace(trace, checkpoint, GRAPH)
        blob = await store.load(checkpoint.checkpoint_id)
        assert blob is not None
        blobs.append(blob)
    return blobs


async def test_rewrite_replaces_the_data_only(
    harness: StoreHarness, rewritable: RewritableBlobStore
) -> None:
    first, second, _ = await saved_blobs(rewritable)
    assert await rewritable.rewrite(
        dataclasses.replace(first, data=b"new data, longer than before")
    )
    loaded = await rewritable.load(first.checkpoint_id)
    assert loaded is not None
    assert loaded.data == b"new data, longer than before"
    assert loaded.info() == dataclasses.replace(first.info(), size=len(loaded.data))
    [info] = [i for i in await rewritable.history("t") if i.checkpoint_id == first.checkpoint_id]
    assert info.size == len(loaded.data)
    assert await rewritable.load(second.checkpoint_id) == second
    # Another store over the same storage (another process) sees it.
    other = await harness.open()
    async with other:
        assert await other.load(first.checkpoint_id) == loaded


async def test_rewriting_what_is_not_there_changes_nothing(rewritable: RewritableBlobStore) -> None:
    [blob] = await saved_blobs(rewritable, n=1)
    assert await rewritable.delete(blob.checkpoint_id)
    assert await rewritable.rewrite(blob) is False
    assert await rewritable.load(blob.checkpoint_id) is None
    assert await rewritable.traces() == []


@pytest.mark.parametrize(
    "change",
    [
        {"trace_id": "other"},
        {"step": 9},
        {"parent_id": None},
        {"graph_hash": GRAPH + 1},
        {"created_at": timedelta(microseconds=1)},
        {"current_node": "elsewhere"},
        {"metadata": {"i": 1.0}},
        {"metadata": {"i": True}},
        {"metadata": {}},
    ],
    ids=lambda change: "-".join(f"{k}={v!r}" for k, v in change.items()),
)
async def test_rewrite_with_another_header_is_a_conflict(
    rewritable: RewritableBlobStore, change: dict[str, Any]
) -> None:
    _, second, _ = await saved_blobs(rewritable)
    if "created_at" in change:
        change = {"created_at": second.created_at + change["created_at"]}
    forged = dataclasses.replace(second, data=b"forged", **change)
    with pytest.raises(CheckpointConflict, match="is stored with another"):
        await rewritable.rewrite(forged)
    assert await rewritable.load(second.checkpoint_id) == second


async def test_rewrite_accepts_the_same_metadata_in_another_order(
    rewritable: RewritableBlobStore,
) -> None:
    [first] = await saved_blobs(rewritable, n=1)
    reordered = dict(reversed(list(first.metadata.items())))
    assert await rewritable.rewrite(dataclasses.replace(first, metadata=reordered, data=b"v2"))
    loaded = await rewritable.load(first.checkpoint_id)
    assert loaded is not None
    assert (loaded.data, dict(loaded.metadata)) == (b"v2", dict(first.metadata))


async def test_rewrite_checks_its_arguments(rewritable: RewritableBlobStore) -> None:
    [blob] = await saved_blobs(rewritable, n=1)
    with pytest.raises(TypeError):
        await rewritable.rewrite(blob.info())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trace id"):
        await rewritable.rewrite(dataclasses.replace(blob, trace_id=""))
    with pytest.raises(ValueError, match="metadata"):
        await rewritable.rewrite(dataclasses.replace(blob, metadata={"k": [1]}))


async def test_readers_see_the_old_or_the_new_data_never_a_mix(
    rewritable: RewritableBlobStore,
) -> None:
    [blob] = await saved_blobs(rewritable, n=1)
    versions = [bytes([n]) * 50_000 for n in range(8)]
    seen: set[bytes] = set()

    async def read() -> None:
        for _ in range(20):
            loaded = await rewritable.load(blob.checkpoint_id)
            assert loaded is not None
            seen.add(loaded.data)

    async def write() -> None:
        for version in versions:
            assert await rewritable.rewrite(dataclasses.replace(blob, data=version))

    await asyncio.gather(read(), write(), read())
    assert seen <= {blob.data, *versions}


async def test_a_rewrite_never_brings_back_a_deleted_checkpoint(
    rewritable: RewritableBlobStore,
) -> None:
    blobs = await saved_blobs(rewritable, n=12)

    async def rewrite_then_check(blob: CheckpointBlob) -> None:
        await rewritable.rewrite(dataclasses.replace(blob, data=b"rewritten"))

    results = await asyncio.gather(
        *(rewrite_then_check(blob) for blob in blobs),
        *(rewritable.delete(blob.checkpoint_id) for blob in blobs),
    )
    assert all(results[len(blobs) :])  # every delete found its checkpoint
    for blob in blobs:
        assert await rewritable.load(blob.checkpoint_id) is None
    assert await rewritable.history("t") == []


# -- rekey ---------------------------------------------------------------------------------


async def save_states(store: TypedCheckpointStore[Any], trace: str, n: int) -> list[Checkpoint]:
    checkpoints = [Checkpoint.first("a", {"secret": "s" * 600, "n": 0})]
    for i in range(1, n):
        checkpoints.append(checkpoints[-1].child("b", {"secret": "t" * 600, "n": i}))
    for checkpoint in checkpoints:
        await store.save_with_trace(trace, checkpoint, GRAPH)
    return checkpoints


async def test_rekey_moves_every_checkpoint_to_the_primary_key(
    rewritable: RewritableBlobStore,
) -> None:
    one = await save_states(typed(rewritable, OLD), "one", 3)
    two = await save_states(typed(rewritable, OLD), "two", 2)
    plain = await save_states(typed(rewritable), "plain", 2)
    rotated = typed(rewritable, ROTATED)
    infos_before = {i.checkpoint_id: i for t in ("one", "two") for i in await rotated.history(t)}

    assert (await rotated.rekey("one")).rewritten == 3
    assert (await rotated.rekey("one")).rewritten == 0
    # The rest of "two"; unencrypted checkpoints only with allow_unencrypted.
    plain_ids = tuple(checkpoint.checkpoint_id for checkpoint in reversed(plain))
    assert await rotated.rekey() == RekeyResult(rewritten=2, skipped=plain_ids)
    migrating = SerdeCheckpointCodec(dict, encryption=ROTATED, allow_unencrypted=True)
    assert await TypedCheckpointStore(rewritable, migrating).rekey() == RekeyResult(2)
    assert await rotated.rekey() == RekeyResult(0)

    fresh = typed(rewritable, NEW_ONLY)
    for trace, checkpoints in (("one", one), ("two", two), ("plain", plain)):
        for checkpoint in checkpoints:
            assert await fresh.load(checkpoint.checkpoint_id, GRAPH) == checkpoint
        assert await fresh.load_latest(trace, GRAPH) == checkpoints[-1]
    for trace in ("one", "two"):
        for info in await fresh.history(trace):
            before = infos_before[info.checkpoint_id]
            assert dataclasses.replace(info, size=before.size) == before


async def test_rekey_names_a_key_the_ring_no_longer_holds(
    rewritable: RewritableBlobStore,
) -> None:
    await save_states(typed(rewritable, OLD), "t", 1)
    with pytest.raises(CodecError, match="key 'k1', which this key ring does not hold"):
        await typed(rewritable, NEW_ONLY).rekey()


async def test_rekey_needs_a_key_ring(rewritable: RewritableBlobStore) -> None:
    with pytest.raises(TypeError, match="key ring"):
        await typed(rewritable).rekey()
