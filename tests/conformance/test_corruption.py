"""Bytes damaged underneath a store give CorruptCheckpoint, never another exception."""

from __future__ import annotations

import pytest

from flowpoint import Checkpoint, CorruptCheckpoint, TypedCheckpointStore
from tests.harnesses.base import StoreHarness

GRAPH = 0xABCDEF


async def saved(store: TypedCheckpointStore, trace: str = "t", n: int = 2) -> list[Checkpoint]:
    checkpoints = [Checkpoint.first("a", {"payload": "p" * 200, "n": 0})]
    for i in range(1, n):
        checkpoints.append(checkpoints[-1].child("b", {"payload": "q" * 200, "n": i}))
    for checkpoint in checkpoints:
        await store.save_with_trace(trace, checkpoint, GRAPH)
    return checkpoints


async def assert_corrupt(store: TypedCheckpointStore, checkpoint: Checkpoint, trace: str) -> None:
    with pytest.raises(CorruptCheckpoint) as by_id:
        await store.load(checkpoint.checkpoint_id, GRAPH)
    assert by_id.value.checkpoint_id == checkpoint.checkpoint_id
    with pytest.raises(CorruptCheckpoint):
        await store.load_latest(trace, GRAPH)


@pytest.mark.parametrize("keep", [0, 1, 4, 9, 20, -5, -1])
async def test_truncated_data(
    harness: StoreHarness, store: TypedCheckpointStore, keep: int
) -> None:
    checkpoint = (await saved(store, n=1))[0]
    data = await harness.read_data(checkpoint.checkpoint_id)
    await harness.write_data(checkpoint.checkpoint_id, data[:keep])
    await assert_corrupt(store, checkpoint, "t")


async def test_every_flipped_byte_is_caught(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoint = (await saved(store, n=1))[0]
    data = await harness.read_data(checkpoint.checkpoint_id)
    positions = sorted({0, 3, 4, 5, 8, 9, len(data) // 2, len(data) - 5, len(data) - 1})
    positions += range(10, len(data), max(1, len(data) // 40))
    for position in positions:
        mangled = bytearray(data)
        mangled[position] ^= 0x40
        await harness.write_data(checkpoint.checkpoint_id, bytes(mangled))
        await assert_corrupt(store, checkpoint, "t")
    await harness.write_data(checkpoint.checkpoint_id, data)
    assert await store.load(checkpoint.checkpoint_id, GRAPH) == checkpoint


async def test_data_swapped_between_checkpoints_is_caught(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    first, second = await saved(store, n=2)
    [other] = await saved(store, trace="other", n=1)
    one = await harness.read_data(first.checkpoint_id)
    two = await harness.read_data(second.checkpoint_id)
    three = await harness.read_data(other.checkpoint_id)
    await harness.write_data(first.checkpoint_id, two)
    await harness.write_data(second.checkpoint_id, one)
    await harness.write_data(other.checkpoint_id, two)
    for checkpoint in (first, second):
        with pytest.raises(CorruptCheckpoint, match="another checkpoint"):
            await store.load(checkpoint.checkpoint_id, GRAPH)
    await assert_corrupt(store, other, "other")
    await harness.write_data(other.checkpoint_id, three)
    assert await store.load_latest("other", GRAPH) == other


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 64, b"\x89FPC", b"\x89FPC\x01" + b"\xff" * 40, b"{}" * 100, "é".encode() * 9],
)
async def test_garbage_data(
    harness: StoreHarness, store: TypedCheckpointStore, garbage: bytes
) -> None:
    checkpoint = (await saved(store, n=1))[0]
    await harness.write_data(checkpoint.checkpoint_id, garbage)
    await assert_corrupt(store, checkpoint, "t")


async def test_a_mangled_header_record(harness: StoreHarness, store: TypedCheckpointStore) -> None:
    first, second = await saved(store, n=2)
    await harness.mangle_header(second.checkpoint_id)
    await assert_corrupt(store, second, "t")
    assert await store.load(first.checkpoint_id, GRAPH) == first
