"""Checkpoints stored as their changes, on every backend: chains read, cut and kept whole."""

from __future__ import annotations

import random
from typing import Any

import pytest

from flowpoint import (
    BlobCheckpointStore,
    Checkpoint,
    CorruptCheckpoint,
    GraphMismatch,
    KeyRing,
    SerdeCheckpointCodec,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.codec._serde import DELTA_BASE_KEY
from tests.harnesses.base import StoreHarness

GRAPH = 0x5EED
# Large and random enough that no chain of these tests outgrows it and is cut early.
PROFILE = random.Random(7).randbytes(12_000).hex()


def chat_state(step: int) -> dict[str, Any]:
    """A chat: one message more per step, a constant profile, a turn counter."""
    rng = random.Random(step)
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20}
        for i in range(step + 1)
    ]
    return {"messages": messages, "profile": PROFILE, "turn": step, "noise": rng.random()}


async def run_chat(
    store: TypedCheckpointStore, trace: str, steps: int, *, start: Checkpoint | None = None
) -> list[Checkpoint]:
    checkpoints: list[Checkpoint] = []
    previous = start
    for step in range(0 if start is None else start.step + 1, steps):
        state = chat_state(step)
        checkpoint = (
            Checkpoint.first("agent", state) if previous is None else previous.child("agent", state)
        )
        await store.save_with_trace(trace, checkpoint, GRAPH)
        checkpoints.append(checkpoint)
        previous = checkpoint
    return checkpoints


def is_delta(info_metadata: Any) -> bool:
    return DELTA_BASE_KEY in info_metadata


async def fresh(harness: StoreHarness, codec: SerdeCheckpointCodec[Any] | None = None) -> Any:
    """A second facade over the same storage, with nothing in memory (as another process)."""
    return TypedCheckpointStore(await harness.open(), codec)


async def assert_all_load(
    harness: StoreHarness, checkpoints: list[Checkpoint], codec: Any = None
) -> None:
    async with await fresh(harness, codec) as reader:
        for checkpoint in reversed(checkpoints):
            assert await reader.load(checkpoint.checkpoint_id, GRAPH) == checkpoint


async def test_a_chat_is_stored_as_deltas_and_every_step_loads(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "chat", 40)
    infos = await store.history("chat", 100)
    deltas = [info for info in infos if is_delta(info.metadata)]
    assert len(deltas) >= 25
    whole = sum(info.size for info in infos if not is_delta(info.metadata))
    # What a step adds is stored, not the whole history again.
    assert max(info.size for info in deltas) < 2_000
    assert sum(info.size for info in deltas) < whole * 3
    # The facade that wrote them, and a cold one, read every step back exactly.
    for checkpoint in checkpoints:
        assert await store.load(checkpoint.checkpoint_id, GRAPH) == checkpoint
    await assert_all_load(harness, checkpoints)
    async with await fresh(harness) as reader:
        assert await reader.load_latest("chat", GRAPH) == checkpoints[-1]


async def test_loaded_metadata_never_shows_the_base(store: TypedCheckpointStore) -> None:
    first = Checkpoint.first("agent", chat_state(0), metadata={"user": "ann"})
    second = first.child("agent", chat_state(1), metadata={"user": "ann"})
    for checkpoint in (first, second):
        await store.save_with_trace("t", checkpoint, GRAPH)
    (info,) = await store.history("t", 1)
    assert info.metadata == {"user": "ann", DELTA_BASE_KEY: str(first.checkpoint_id)}
    loaded = await store.load_latest("t", GRAPH)
    assert loaded is not None
    assert dict(loaded.metadata) == {"user": "ann"}


async def test_a_run_resumed_by_another_facade_continues_the_chain(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    first_half = await run_chat(store, "t", 10)
    async with await fresh(harness) as second:
        latest = await second.load_latest("t", GRAPH)
        assert latest == first_half[-1]
        second_half = await run_chat(second, "t", 20, start=latest)
    infos = await store.history("t", 100)
    assert all(is_delta(info.metadata) for info in infos if info.step > 0)
    await assert_all_load(harness, first_half + second_half)


async def test_a_graph_mismatch_comes_before_the_chain_is_read(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 5)
    # Break the chain underneath: a mismatch must still be reported as such.
    await harness.write_data(checkpoints[0].checkpoint_id, b"\x89FPC junk")
    async with await fresh(harness) as reader:
        with pytest.raises(GraphMismatch):
            await reader.load_latest("t", GRAPH + 1)
        with pytest.raises(CorruptCheckpoint):
            await reader.load_latest("t", GRAPH)


async def test_a_damaged_base_is_reported_for_the_delta_on_it(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 6)
    data = bytearray(await harness.read_data(checkpoints[2].checkpoint_id))
    data[-20] ^= 0x01
    await harness.write_data(checkpoints[2].checkpoint_id, bytes(data))
    async with await fresh(harness) as reader:
        with pytest.raises(CorruptCheckpoint):
            await reader.load(checkpoints[4].checkpoint_id, GRAPH)
        # Below the damage, the chain still reads.
        assert await reader.load(checkpoints[1].checkpoint_id, GRAPH) == checkpoints[1]


async def test_a_base_deleted_behind_the_facade_is_named(
    harness: StoreHarness, blob_store: BlobCheckpointStore, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 4)
    # The blob store's own delete knows nothing of chains.
    assert await blob_store.delete(checkpoints[1].checkpoint_id)
    async with await fresh(harness) as reader:
        with pytest.raises(CorruptCheckpoint, match=str(checkpoints[1].checkpoint_id)):
            await reader.load(checkpoints[3].checkpoint_id, GRAPH)


@pytest.mark.parametrize("doomed_step", [0, 5, 10, 19])
async def test_deleting_any_checkpoint_keeps_the_others_whole(
    harness: StoreHarness, store: TypedCheckpointStore, doomed_step: int
) -> None:
    checkpoints = await run_chat(store, "t", 20)
    doomed = checkpoints.pop(doomed_step)
    assert await store.delete(doomed.checkpoint_id)
    assert not await store.delete(doomed.checkpoint_id)
    infos = await store.history("t", 100)
    assert all(info.metadata.get(DELTA_BASE_KEY) != "x" for info in infos)
    await assert_all_load(harness, checkpoints)
    # And the run goes on as deltas.
    more = await run_chat(store, "t", 25, start=checkpoints[-1])
    await assert_all_load(harness, checkpoints + more)


async def test_prune_keeps_the_survivors_readable(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 30)
    assert await store.prune("t", keep_latest=7) == 23
    survivors = checkpoints[-7:]
    await assert_all_load(harness, survivors)
    infos = await store.history("t", 100)
    assert [info.step for info in infos] == list(range(29, 22, -1))


async def test_delete_checkpoints_deletes_a_batch(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 12)
    await run_chat(store, "other", 3)
    doomed = [checkpoints[i].checkpoint_id for i in (0, 3, 4, 8)]
    stranger = (await store.history("other", 1))[0].checkpoint_id
    assert await store.delete_checkpoints("t", [*doomed, doomed[0], stranger]) == 4
    kept = [c for c in checkpoints if c.checkpoint_id not in doomed]
    await assert_all_load(harness, kept)
    assert len(await store.history("other", 10)) == 3
    assert await store.delete_checkpoints("t", []) == 0


async def test_the_chain_is_cut_after_max_delta_chain(blob_store: BlobCheckpointStore) -> None:
    store = TypedCheckpointStore(blob_store, SerdeCheckpointCodec(max_delta_chain=3))
    await run_chat(store, "t", 12)
    infos = sorted(await store.history("t", 100), key=lambda info: info.step)
    kinds = "".join("d" if is_delta(info.metadata) else "W" for info in infos)
    assert kinds == "WdddWdddWddd"
    default = TypedCheckpointStore(blob_store)
    await run_chat(default, "long", 70)
    infos = sorted(await default.history("long", 100), key=lambda info: info.step)
    kinds = "".join("d" if is_delta(info.metadata) else "W" for info in infos)
    # By default a chain holds at most 64 deltas, fewer once they outweigh its start.
    assert kinds[0] == "W"
    assert kinds.count("W") >= 2
    assert max(len(run) for run in kinds.split("W")) <= 64


async def test_no_frames_kept_means_whole_checkpoints(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    store = TypedCheckpointStore(blob_store, frame_cache_bytes=0)
    checkpoints = await run_chat(store, "t", 5)
    assert not any(is_delta(info.metadata) for info in await store.history("t", 10))
    await assert_all_load(harness, checkpoints)


async def test_encrypted_deltas_read_back_and_rekey(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    old, new = b"o" * 32, b"n" * 32
    codec = SerdeCheckpointCodec(encryption=KeyRing({"old": old}, primary="old"))
    store = TypedCheckpointStore(blob_store, codec)
    checkpoints = await run_chat(store, "t", 8)
    assert sum(is_delta(info.metadata) for info in await store.history("t", 10)) >= 5
    rotated = SerdeCheckpointCodec(encryption=KeyRing({"old": old, "new": new}, primary="new"))
    rekeyed = TypedCheckpointStore(blob_store, rotated)
    assert (await rekeyed.rekey("t")).rewritten == 8
    only_new = SerdeCheckpointCodec(encryption=KeyRing({"new": new}, primary="new"))
    await assert_all_load(harness, checkpoints, only_new)


async def test_the_blocking_facade_writes_and_reads_chains(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    sync: SyncCheckpointStore[Any] = SyncCheckpointStore(TypedCheckpointStore(blob_store))
    checkpoints: list[Checkpoint] = []
    with sync:  # closes the store in the facade's own loop, where an async driver opened it
        for step in range(6):
            state = chat_state(step)
            checkpoint = (
                Checkpoint.first("a", state)
                if not checkpoints
                else checkpoints[-1].child("a", state)
            )
            sync.save_with_trace("sync", checkpoint, GRAPH)
            assert sync.load_latest("sync", GRAPH) == checkpoint
            checkpoints.append(checkpoint)
        assert sum(is_delta(info.metadata) for info in sync.history("sync")) >= 4
        assert sync.delete(checkpoints[2].checkpoint_id)
        assert sync.delete_checkpoints("sync", [checkpoints[0].checkpoint_id]) == 1
    await assert_all_load(harness, checkpoints[1:2] + checkpoints[3:])


async def test_a_kept_frame_does_not_skip_checking_the_stored_bytes(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = await run_chat(store, "t", 3)
    # The facade kept the latest's fields when it saved it; the stored bytes still count.
    with pytest.raises(GraphMismatch):
        await store.load_latest("t", GRAPH + 1)
    data = bytearray(await harness.read_data(checkpoints[-1].checkpoint_id))
    data[-12] ^= 0x40
    await harness.write_data(checkpoints[-1].checkpoint_id, bytes(data))
    with pytest.raises(CorruptCheckpoint):
        await store.load_latest("t", GRAPH)
    with pytest.raises(CorruptCheckpoint):
        await store.load(checkpoints[-1].checkpoint_id, GRAPH)
