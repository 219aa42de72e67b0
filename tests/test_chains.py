"""The frames a typed facade keeps (tips, eviction by bytes, forgetting), and long chains."""

from __future__ import annotations

import copy
import dataclasses
import gc
import random
import tracemalloc
from collections.abc import Awaitable, Callable

import msgspec
import pytest

import flowpoint.codec._delta as delta_module
from flowpoint import (
    Checkpoint,
    CorruptCheckpoint,
    InMemoryBlobStore,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
)
from flowpoint._chains import FrameCache, MissingBase
from flowpoint.blob import CheckpointBlob
from flowpoint.codec._delta import Frame, state_size
from flowpoint.codec._serde import DELTA_BASE_KEY, MAX_DELTA_CHAIN
from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id
from tests.doubles import DelegatingBlobStore, RewritableDelegatingStore


def frame(trace: str, step: int, size: int = 100) -> Frame:
    # One field (map header and key: 3 bytes) holding binary (2-byte header): ``size`` bytes.
    value = b"\xc4" + bytes([size - 5]) + b"x" * (size - 5)
    made = Frame(
        new_checkpoint_id(),
        TraceId(trace),
        step,
        {"k": value},
        chain_start=step,
        chain_length=0,
        chain_size=0,
        keyframe_size=size,
    )
    assert made.size == size
    return made


def ids(cache: FrameCache, frames: list[Frame]) -> list[CheckpointId]:
    return [f.checkpoint_id for f in frames if cache.get(f.checkpoint_id) is not None]


def test_the_tip_is_the_highest_step_and_a_superseded_tip_goes() -> None:
    cache = FrameCache(10_000)
    first, second = frame("t", 1), frame("t", 2)
    cache.put(first)
    assert cache.tip(TraceId("t")) is first
    cache.put(second)
    assert cache.tip(TraceId("t")) is second
    assert cache.get(first.checkpoint_id) is None
    # An older frame (a load by id) is kept, and leaves the tip alone.
    older = frame("t", 0)
    cache.put(older)
    assert cache.tip(TraceId("t")) is second
    assert cache.get(older.checkpoint_id) is older
    assert cache.tip(TraceId("other")) is None


def test_frames_are_evicted_least_recently_used_within_the_budget() -> None:
    frames = [frame(f"t{i}", 0) for i in range(3)]
    cache = FrameCache(3 * frames[0].held)
    for made in frames:
        cache.put(made)
    assert cache.held == 3 * frames[0].held
    assert cache.get(frames[0].checkpoint_id) is frames[0]  # now the most recent
    cache.put(frame("t3", 0))
    assert ids(cache, frames) == [frames[0].checkpoint_id, frames[2].checkpoint_id]
    assert cache.tip(TraceId("t1")) is None  # an evicted tip is no tip


def test_a_frame_over_the_budget_is_not_kept() -> None:
    made = frame("t", 0, size=100)
    assert made.held > made.size  # the frame, its dict, its bytes objects
    cache = FrameCache(made.held - 1)
    cache.put(made)
    assert cache.tip(TraceId("t")) is None
    nothing = FrameCache(0)
    nothing.put(frame("t", 0, size=10))
    assert nothing.tip(TraceId("t")) is None


def test_elements_split_after_a_frame_is_kept_are_counted() -> None:
    items = msgspec.msgpack.encode(list(range(1000)))
    made = Frame(
        new_checkpoint_id(),
        TraceId("t"),
        0,
        {"items": items},
        chain_start=0,
        chain_length=0,
        chain_size=0,
        keyframe_size=len(items),
    )
    other = frame("other", 0)
    cache = FrameCache(made.held + other.held + 1000)
    cache.put(other)
    cache.put(made)
    lent = cache.tip(TraceId("t"))
    assert lent is made
    before = made.held
    assert made.elements("items") is not None  # as making a delta against it does
    assert made.held > before + 1000 * 48
    # Counted again at the next call: the least recently used frames go until it fits.
    assert cache.get(other.checkpoint_id) is None
    assert cache.held == 0


def test_forgetting() -> None:
    cache = FrameCache(10_000)
    a, b, c = frame("a", 1), frame("a", 0), frame("b", 0)
    for made in (a, b, c):
        cache.put(made)
    cache.forget(a.checkpoint_id)
    assert cache.tip(TraceId("a")) is None
    assert cache.get(b.checkpoint_id) is b
    cache.forget_trace(TraceId("a"))
    assert cache.get(b.checkpoint_id) is None
    assert cache.tip(TraceId("b")) is c
    cache.forget_tip(TraceId("b"))
    assert cache.tip(TraceId("b")) is None
    assert cache.get(c.checkpoint_id) is c
    cache.forget(new_checkpoint_id())  # unknown: harmless


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64"])
def test_the_budget_is_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="frame cache size"):
        FrameCache(bad)  # type: ignore[arg-type]


async def save_counts(
    store: TypedCheckpointStore, counts: range, *, every: int = 1
) -> tuple[Checkpoint, int]:
    """A large constant field and a counter; a checkpoint saved every ``every`` steps.

    Returns the last checkpoint saved and how many of them were stored as deltas.
    """
    noise = random.Random(3).randbytes(100_000).hex()  # a keyframe far larger than any delta
    checkpoint = Checkpoint.first("n", {"noise": noise, "count": 0})
    await store.save_with_trace("t", checkpoint, 1)
    for count in counts:
        for _ in range(every):
            checkpoint = checkpoint.child("n", {"noise": noise, "count": count})
        await store.save_with_trace("t", checkpoint, 1)
    infos = await store.history("t", 1000)
    return checkpoint, sum(DELTA_BASE_KEY in info.metadata for info in infos)


async def test_a_chain_spread_over_more_steps_than_one_range_read_still_reads() -> None:
    blobs = InMemoryBlobStore()
    codec = SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN)
    # Checkpoints saved every third step (as a run that saves only on change does).
    last, deltas = await save_counts(TypedCheckpointStore(blobs, codec), range(1, 200), every=3)
    assert deltas == 199
    assert last.step == 597
    reader = TypedCheckpointStore(blobs, codec)  # nothing kept: reads the whole chain
    assert await reader.load_latest("t", 1) == last


async def test_a_chain_is_checked_once_at_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = InMemoryBlobStore()
    codec = SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN)
    last, deltas = await save_counts(TypedCheckpointStore(blobs, codec), range(1, 201))
    assert deltas == 200
    hashed: list[int] = []
    real = delta_module.fields_hash

    def counted(fields: dict[str, bytes]) -> int:
        hashed.append(state_size(fields))
        return real(fields)

    monkeypatch.setattr(delta_module, "fields_hash", counted)
    reader = TypedCheckpointStore(blobs, codec)
    assert await reader.load_latest("t", 1) == last
    # Each link costs what its delta holds: the whole state is hashed once, not per link.
    assert len(hashed) == 1
    assert hashed[0] > 200_000


async def test_a_chain_longer_than_any_writer_makes_is_corrupt() -> None:
    blobs = InMemoryBlobStore()
    codec = SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN)
    codec.max_delta_chain = MAX_DELTA_CHAIN + 40  # a writer past what flowpoint allows
    writer = TypedCheckpointStore(blobs, codec)
    last, deltas = await save_counts(writer, range(1, MAX_DELTA_CHAIN + 41))
    assert deltas == MAX_DELTA_CHAIN + 40
    reader = TypedCheckpointStore(blobs, SerdeCheckpointCodec())
    with pytest.raises(CorruptCheckpoint, match=f"more than {MAX_DELTA_CHAIN} deltas"):
        await reader.load_latest("t", 1)
    # The checkpoints within the limit still read; the writer's own frames still serve it.
    [within] = await reader.store.load_steps("t", MAX_DELTA_CHAIN, MAX_DELTA_CHAIN)
    loaded = await reader.load(within.checkpoint_id, 1)
    assert loaded is not None
    assert loaded.state["count"] == MAX_DELTA_CHAIN
    assert await writer.load_latest("t", 1) == last
    with pytest.raises(ValueError, match="max_delta_chain"):
        SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN + 1)


def chat(turns: int) -> list[Checkpoint]:
    """A chat of ``turns`` checkpoints large enough to be stored as deltas where allowed."""
    profile = random.Random(5).randbytes(4_000).hex()
    checkpoints = [Checkpoint.first("n", {"profile": profile, "messages": []})]
    for turn in range(1, turns):
        messages = [*checkpoints[-1].state["messages"], f"message {turn} " * 10]
        checkpoints.append(checkpoints[-1].child("n", {"profile": profile, "messages": messages}))
    return checkpoints


async def test_a_store_that_cannot_rewrite_gets_every_checkpoint_whole() -> None:
    # Deleting a base means rewriting its dependents whole: without that ability no
    # delta is written, and deleting and pruning work as on any store.
    store = TypedCheckpointStore(DelegatingBlobStore())
    checkpoints = chat(12)
    for checkpoint in checkpoints:
        await store.save_with_trace("t", checkpoint, 1)
    infos = await store.history("t", 100)
    assert not any(DELTA_BASE_KEY in info.metadata for info in infos)
    assert await store.delete(checkpoints[3].checkpoint_id)
    assert await store.delete_checkpoints("t", [checkpoints[0].checkpoint_id]) == 1
    assert await store.prune("t", keep_latest=5) == 5
    cold = TypedCheckpointStore(store.store)
    for checkpoint in checkpoints[-5:]:
        assert await cold.load(checkpoint.checkpoint_id, 1) == checkpoint
    # The same chat on a store that can rewrite is stored as deltas.
    rewritable = TypedCheckpointStore(RewritableDelegatingStore())
    for checkpoint in checkpoints:
        await rewritable.save_with_trace("t", checkpoint, 1)
    infos = await rewritable.history("t", 100)
    assert sum(DELTA_BASE_KEY in info.metadata for info in infos) >= 8


async def held_by(work: Callable[[], Awaitable[object]]) -> int:
    """Bytes of memory the object ``work()`` returns holds, measured with tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = await work()
        gc.collect()
        with_it = tracemalloc.get_traced_memory()[0]
        del kept
        gc.collect()
        return with_it - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


async def test_the_frames_kept_stay_within_their_budget() -> None:
    # Long arrays of small elements: once split for a delta, each element is an
    # object of its own, far larger than its bytes in the state.
    budget = 8 * 1024 * 1024
    blobs = InMemoryBlobStore()
    rng = random.Random(11)
    states = {
        f"t{n}": {"items": [rng.randrange(1 << 20) for _ in range(50_000)]} for n in range(12)
    }
    for trace, state in states.items():  # stored before measuring: the store's memory is not
        first = Checkpoint.first("n", state)
        await TypedCheckpointStore(blobs).save_with_trace(trace, first, 1)

    async def write() -> TypedCheckpointStore:
        store = TypedCheckpointStore(blobs, frame_cache_bytes=budget)
        for trace in states:
            latest = await store.load_latest(trace, 1)
            assert latest is not None
            for step in range(3):
                items = list(latest.state["items"])
                items[step * 7] += 1
                latest = latest.child("n", {"items": items})
                await store.save_with_trace(trace, latest, 1)
            infos = await store.history(trace, 1)
            assert DELTA_BASE_KEY in infos[0].metadata  # patched: both arrays were split
        return store

    async def read() -> TypedCheckpointStore:
        store = TypedCheckpointStore(blobs, frame_cache_bytes=budget)
        for trace in states:  # each latest rebuilt through its chain of patches
            assert await store.load_latest(trace, 1) is not None
        return store

    for work in (write, read):
        held = await held_by(work)
        assert held < budget * 1.25, f"{work.__name__}: {held / 2**20:.1f} MiB for 8 MiB"


def test_a_missing_base_keeps_its_facts_across_processes() -> None:
    ids = [new_checkpoint_id() for _ in range(3)]
    error = MissingBase(*ids)
    copied = copy.copy(error)  # through __reduce__, as pickling between processes does
    assert isinstance(copied, CorruptCheckpoint)
    assert (copied.checkpoint_id, copied.missing, copied.named_by) == tuple(ids)
    assert str(copied) == str(error)
    assert str(ids[1]) in str(error)
    assert "deleted while it was read" in str(MissingBase(ids[0], None))


class Counting(RewritableDelegatingStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def before(self, call: str) -> None:
        self.calls.append(call)


async def test_a_chain_far_apart_costs_one_range_read_then_a_load_by_id() -> None:
    # Steps far apart (or a header that claims its chain starts far below): the
    # reader does not read range after empty range down to where the chain starts.
    store = Counting()
    writer = TypedCheckpointStore(store)
    noise = random.Random(4).randbytes(20_000).hex()
    first = Checkpoint.first("n", {"noise": noise, "count": 0})
    await writer.save_with_trace("t", first, 1)
    far = Checkpoint(
        checkpoint_id=new_checkpoint_id(),
        step=1_000_000,
        parent_id=first.checkpoint_id,
        current_node="n",
        state={"noise": noise, "count": 1},
        created_at=first.created_at,
    )
    await writer.save_with_trace("t", far, 1)
    assert DELTA_BASE_KEY in (await writer.history("t", 1))[0].metadata
    store.calls.clear()
    assert await TypedCheckpointStore(store).load_latest("t", 1) == far
    assert store.calls == ["load_latest", "load_steps", "load"]


def test_a_kept_frame_serves_reads_but_never_becomes_the_tip() -> None:
    cache = FrameCache(100_000)
    tip, low, mid, other = frame("t", 9), frame("t", 2), frame("t", 5), frame("u", 4)
    cache.put(tip)
    for made in (low, mid, other):
        cache.keep(made)
    cache.keep(low)  # kept already: stays as it is
    assert cache.tip(TraceId("t")) is tip
    assert cache.tip(TraceId("u")) is None
    assert cache.below(TraceId("t"), 9, 0) is mid
    assert cache.below(TraceId("t"), 5, 0) is low
    assert cache.below(TraceId("t"), 5, 3) is None  # below where the chain starts
    assert cache.below(TraceId("t"), 2, 0) is None
    assert cache.below(TraceId("v"), 9, 0) is None
    cache.forget(mid.checkpoint_id)
    assert cache.below(TraceId("t"), 9, 0) is low
    cache.forget_trace(TraceId("t"))
    assert cache.below(TraceId("t"), 9, 0) is None
    assert cache.below(TraceId("u"), 9, 0) is other
    tiny = FrameCache(low.held - 1)
    tiny.keep(low)
    assert tiny.below(TraceId("t"), 9, 0) is None
    # Two checkpoints at one step (one deleted, another saved there since): either serves,
    # and forgetting one leaves the other.
    again, other_again = frame("t", 3), frame("t", 3)
    cache.keep(again)
    cache.keep(other_again)
    found = cache.below(TraceId("t"), 9, 0)
    assert found is again or found is other_again
    cache.forget(found.checkpoint_id)
    assert cache.below(TraceId("t"), 9, 0) is (other_again if found is again else again)


class Ranges(RewritableDelegatingStore):
    """Records the range of steps of each range read."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        self.ranges.append((first_step, last_step))
        return await super()._load_steps(trace_id, first_step, last_step)


async def test_loads_by_id_keep_frames_along_the_chain_and_start_above_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Ranges()
    codec = SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN)
    await save_counts(TypedCheckpointStore(store, codec), range(1, 41))
    ids_by_step = {info.step: info.checkpoint_id for info in await store.history("t", 100)}
    applied: list[int] = []
    real = delta_module.Rebuild.apply

    def counted(self: delta_module.Rebuild, delta: delta_module.Delta) -> None:
        applied.append(delta.state_size)
        real(self, delta)

    monkeypatch.setattr(delta_module.Rebuild, "apply", counted)
    reader = TypedCheckpointStore(store, codec)
    loaded = await reader.load(ids_by_step[30], 1)
    assert loaded is not None
    assert loaded.state["count"] == 30
    assert store.ranges == [(0, 29)]  # the whole chain below, in one read
    assert len(applied) == 30
    # The frames of steps 0 (the whole checkpoint), 8, 16 and 24 were kept on the way.
    store.ranges.clear()
    applied.clear()
    loaded = await reader.load(ids_by_step[22], 1)
    assert loaded is not None
    assert loaded.state["count"] == 22
    assert store.ranges == [(17, 21)]  # starts above step 16's frame
    assert len(applied) == 6
    store.ranges.clear()
    loaded = await reader.load(ids_by_step[3], 1)
    assert loaded is not None
    assert loaded.state["count"] == 3
    assert store.ranges == [(1, 2)]  # above the whole checkpoint's frame
    # A damaged link is still found on a read that starts at a kept frame.
    [stored] = await store.load_steps("t", 12, 12)
    damaged = stored.data[:-20] + bytes(b ^ 1 for b in stored.data[-20:-8]) + stored.data[-8:]
    await store.rewrite(dataclasses.replace(stored, data=damaged))
    with pytest.raises(CorruptCheckpoint):
        await reader.load(ids_by_step[14], 1)


async def test_load_latest_keeps_no_frames_on_the_way() -> None:
    store = Ranges()
    codec = SerdeCheckpointCodec(max_delta_chain=MAX_DELTA_CHAIN)
    last, _ = await save_counts(TypedCheckpointStore(store, codec), range(1, 41))
    reader = TypedCheckpointStore(store, codec)
    assert await reader.load_latest("t", 1) == last
    store.ranges.clear()
    infos = await store.history("t", 100)
    loaded = await reader.load(next(i.checkpoint_id for i in infos if i.step == 30), 1)
    assert loaded is not None
    # Only the whole checkpoint's frame was kept: the read starts above step 0.
    assert store.ranges == [(1, 29)]
