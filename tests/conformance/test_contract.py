"""The storage contract of docs/architecture.md, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowpoint import (
    BlobCheckpointStore,
    Checkpoint,
    CheckpointConflict,
    GraphMismatch,
    InvalidTraceId,
    PruneRule,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.ids import new_checkpoint_id
from tests.harnesses.base import StoreHarness

GRAPH = 0x0123456789ABCDEF


def chain(length: int, *, start: int = 0, state: dict[str, Any] | None = None) -> list[Checkpoint]:
    """``length`` checkpoints of one run, steps ``start`` onward."""
    first = Checkpoint.first("n0", {"step": start, **(state or {})})
    if start:
        first = dataclasses.replace(first, step=start)
    checkpoints = [first]
    for _ in range(length - 1):
        step = checkpoints[-1].step + 1
        checkpoints.append(checkpoints[-1].child(f"n{step}", {"step": step}))
    return checkpoints


def at_step(step: int, state: Any = None, *, created_at: datetime | None = None) -> Checkpoint:
    return Checkpoint(
        checkpoint_id=new_checkpoint_id(),
        step=step,
        parent_id=None,
        current_node="n",
        state={"step": step} if state is None else state,
        created_at=created_at or datetime.now(UTC),
    )


async def save_all(store: TypedCheckpointStore, trace: str, checkpoints: list[Checkpoint]) -> None:
    for checkpoint in checkpoints:
        await store.save_with_trace(trace, checkpoint, GRAPH)


async def test_missing_id_and_empty_trace_give_none(store: TypedCheckpointStore) -> None:
    assert await store.load(new_checkpoint_id(), GRAPH) is None
    assert await store.load_latest("nobody", GRAPH) is None
    assert await store.history("nobody") == []
    assert await store.traces() == []
    assert await store.store.load(new_checkpoint_id()) is None
    assert await store.store.load_latest("nobody") is None


async def test_latest_is_the_highest_step_not_the_last_write(store: TypedCheckpointStore) -> None:
    for step in (3, 7, 1, 5, 0):
        await store.save_with_trace("t", at_step(step), GRAPH)
    latest = await store.load_latest("t", GRAPH)
    assert latest is not None
    assert latest.step == 7
    assert [info.step for info in await store.history("t")] == [7, 5, 3, 1, 0]


async def test_traces_are_isolated(store: TypedCheckpointStore) -> None:
    await save_all(store, "a", chain(3))
    await save_all(store, "b", chain(5))
    await save_all(store, "a/b", chain(1))
    assert (await store.load_latest("a", GRAPH)).step == 2  # type: ignore[union-attr]
    assert (await store.load_latest("b", GRAPH)).step == 4  # type: ignore[union-attr]
    assert [info.trace_id for info in await store.history("a")] == ["a"] * 3
    assert await store.traces() == ["a", "a/b", "b"]
    assert await store.delete_trace("a") == 3
    assert await store.load_latest("a", GRAPH) is None
    assert (await store.load_latest("a/b", GRAPH)).step == 0  # type: ignore[union-attr]
    assert await store.traces() == ["a/b", "b"]


async def test_a_duplicate_step_conflicts_and_keeps_the_first(store: TypedCheckpointStore) -> None:
    original = at_step(4, {"who": "first"})
    await store.save_with_trace("t", original, GRAPH)
    with pytest.raises(CheckpointConflict) as caught:
        await store.save_with_trace("t", at_step(4, {"who": "second"}), GRAPH)
    assert (caught.value.trace_id, caught.value.step) == ("t", 4)
    assert "step 4" in str(caught.value)
    assert await store.load_latest("t", GRAPH) == original
    assert len(await store.history("t")) == 1
    # The same step in another trace is fine.
    await store.save_with_trace("u", at_step(4), GRAPH)


async def test_a_duplicate_checkpoint_id_conflicts(store: TypedCheckpointStore) -> None:
    checkpoint = at_step(0)
    await store.save_with_trace("t", checkpoint, GRAPH)
    with pytest.raises(CheckpointConflict):
        await store.save_with_trace("t", dataclasses.replace(checkpoint, step=1), GRAPH)
    with pytest.raises(CheckpointConflict):
        await store.save_with_trace("other", checkpoint, GRAPH)
    assert [info.step for info in await store.history("t")] == [0]
    assert await store.history("other") == []


async def test_of_twenty_concurrent_writers_of_one_step_exactly_one_wins(
    store: TypedCheckpointStore,
) -> None:
    await store.save_with_trace("race", at_step(0), GRAPH)
    contenders = [at_step(1, {"writer": n}) for n in range(20)]
    results = await asyncio.gather(
        *(store.save_with_trace("race", c, GRAPH) for c in contenders), return_exceptions=True
    )
    winners = [c for c, r in zip(contenders, results, strict=True) if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, Exception)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(isinstance(r, CheckpointConflict) for r in losers)
    assert await store.load_latest("race", GRAPH) == winners[0]
    assert [info.step for info in await store.history("race")] == [1, 0]


async def test_deleting_the_newest_makes_the_previous_the_latest(
    store: TypedCheckpointStore,
) -> None:
    checkpoints = chain(4)
    await save_all(store, "t", checkpoints)
    assert await store.delete(checkpoints[3].checkpoint_id) is True
    assert await store.load_latest("t", GRAPH) == checkpoints[2]
    assert await store.load(checkpoints[3].checkpoint_id, GRAPH) is None
    assert await store.delete(checkpoints[3].checkpoint_id) is False
    assert await store.delete(new_checkpoint_id()) is False
    # A deleted step can be written again.
    replacement = at_step(3)
    await store.save_with_trace("t", replacement, GRAPH)
    assert await store.load_latest("t", GRAPH) == replacement


async def test_deleting_every_checkpoint_empties_the_trace(store: TypedCheckpointStore) -> None:
    checkpoints = chain(2)
    await save_all(store, "t", checkpoints)
    for checkpoint in checkpoints:
        assert await store.delete(str(checkpoint.checkpoint_id))
    assert await store.load_latest("t", GRAPH) is None
    assert await store.traces() == []
    assert await store.delete_trace("t") == 0


async def test_prune_keep_latest(store: TypedCheckpointStore) -> None:
    checkpoints = chain(10)
    await save_all(store, "t", checkpoints)
    await save_all(store, "other", chain(3))
    assert await store.prune("t", keep_latest=3) == 7
    assert [info.step for info in await store.history("t")] == [9, 8, 7]
    assert await store.load(checkpoints[0].checkpoint_id, GRAPH) is None
    assert await store.prune("t", keep_latest=3) == 0
    assert len(await store.history("other")) == 3
    assert await store.prune("t", keep_latest=0) == 3
    assert await store.traces() == ["other"]


async def test_prune_older_than(store: TypedCheckpointStore) -> None:
    now = datetime.now(UTC)
    ages = {0: 40, 1: 30, 2: 20, 3: 10, 4: 0}  # days
    for step, days in ages.items():
        await store.save_with_trace(
            "t", at_step(step, created_at=now - timedelta(days=days)), GRAPH
        )
    assert await store.prune("t", older_than=timedelta(days=15)) == 3
    assert [info.step for info in await store.history("t")] == [4, 3]
    # Both rules: only what is old *and* beyond the newest N goes.
    assert await store.prune("t", keep_latest=1, older_than=timedelta(days=5)) == 1
    assert [info.step for info in await store.history("t")] == [4]
    assert await store.prune("t", keep_latest=0, older_than=timedelta(days=5)) == 0


async def test_prune_keeps_the_latest_even_when_old(store: TypedCheckpointStore) -> None:
    old = datetime.now(UTC) - timedelta(days=100)
    for step in range(3):
        await store.save_with_trace("t", at_step(step, created_at=old), GRAPH)
    assert await store.prune("t", keep_latest=1, older_than=timedelta(days=1)) == 2
    assert [info.step for info in await store.history("t")] == [2]


@pytest.mark.parametrize(
    ("keep_latest", "older_than"),
    [(None, None), (-1, None), (None, timedelta(days=-1)), (True, None), ("3", None)],
)
async def test_prune_refuses_bad_rules(
    store: TypedCheckpointStore, keep_latest: Any, older_than: Any
) -> None:
    await save_all(store, "t", chain(2))
    with pytest.raises(ValueError):  # noqa: PT011 - each bad rule has its own message
        await store.prune("t", keep_latest=keep_latest, older_than=older_than)
    assert len(await store.history("t")) == 2


async def test_blob_store_prune_takes_a_rule(blob_store: BlobCheckpointStore) -> None:
    store = TypedCheckpointStore(blob_store)
    await save_all(store, "t", chain(5))
    assert await blob_store.prune("t", PruneRule(keep_latest=2, older_than=None)) == 3
    with pytest.raises(TypeError):
        await blob_store.prune("t", 2)  # type: ignore[arg-type]


async def test_history_is_newest_first_and_pages(store: TypedCheckpointStore) -> None:
    checkpoints = chain(23)
    await save_all(store, "t", checkpoints)
    pages: list[list[int]] = []
    before = None
    while page := await store.history("t", limit=10, before_step=before):
        pages.append([info.step for info in page])
        before = page[-1].step
    assert pages == [list(range(22, 12, -1)), list(range(12, 2, -1)), [2, 1, 0]]
    assert [info.step for info in await store.history("t", limit=3, before_step=1)] == [0]
    assert await store.history("t", before_step=0) == []
    newest = (await store.history("t", limit=1))[0]
    assert newest.checkpoint_id == checkpoints[-1].checkpoint_id
    assert newest.parent_id == checkpoints[-2].checkpoint_id
    assert newest.current_node == "n22"
    assert newest.created_at == checkpoints[-1].created_at


@pytest.mark.parametrize(("limit", "before_step"), [(0, None), (-5, None), (10, -1), (1.5, None)])
async def test_history_refuses_bad_arguments(
    store: TypedCheckpointStore, limit: Any, before_step: Any
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        await store.history("t", limit=limit, before_step=before_step)


async def test_graph_mismatch_from_load_and_load_latest(store: TypedCheckpointStore) -> None:
    checkpoint = at_step(0)
    await store.save_with_trace("t", checkpoint, GRAPH)
    other = 0x00000000000000FF
    with pytest.raises(GraphMismatch) as by_id:
        await store.load(checkpoint.checkpoint_id, other)
    with pytest.raises(GraphMismatch) as latest:
        await store.load_latest("t", other)
    for caught in (by_id.value, latest.value):
        assert (caught.expected, caught.actual) == (other, GRAPH)
        assert "0x00000000000000ff" in str(caught)
        assert "0x0123456789abcdef" in str(caught)
    # None means "any graph", for tools that inspect stores.
    assert await store.load(checkpoint.checkpoint_id, None) == checkpoint


AWKWARD_TRACE_IDS = [
    "..",
    ".",
    "../../etc/passwd",
    "/absolute",
    "a/b/c",
    "back\\slash",
    " spaces around ",
    "naïve café 東京",
    "🦜" * 256,
    "x" * 256,
    "%2F",
    "CaseSensitive",
    "casesensitive",
    "'; DROP TABLE flowpoint_checkpoints; --",
    "{braces}:colon*star?",
    "~tilde",
]


async def test_awkward_trace_ids_are_stored_safely(store: TypedCheckpointStore) -> None:
    for n, trace in enumerate(AWKWARD_TRACE_IDS):
        await store.save_with_trace(trace, at_step(n, {"trace": trace}), GRAPH)
    assert await store.traces() == sorted(AWKWARD_TRACE_IDS)
    for n, trace in enumerate(AWKWARD_TRACE_IDS):
        latest = await store.load_latest(trace, GRAPH)
        assert latest is not None
        assert (latest.step, latest.state) == (n, {"trace": trace})
        [info] = await store.history(trace)
        assert info.trace_id == trace
    assert await store.delete_trace("..") == 1
    assert await store.traces() == sorted(set(AWKWARD_TRACE_IDS) - {".."})


@pytest.mark.parametrize("trace", ["", "x" * 257, "tab\there", "new\nline", "nul\x00", "\ud800", 7])
async def test_invalid_trace_ids_are_value_errors(store: TypedCheckpointStore, trace: Any) -> None:
    with pytest.raises(InvalidTraceId):
        await store.save_with_trace(trace, at_step(0), GRAPH)
    with pytest.raises(ValueError):  # noqa: PT011 - InvalidTraceId is also a ValueError
        await store.load_latest(trace, GRAPH)
    with pytest.raises(InvalidTraceId):
        await store.history(trace)
    with pytest.raises(InvalidTraceId):
        await store.store.delete_trace(trace)
    assert await store.traces() == []


async def test_bad_checkpoint_ids_are_value_errors(store: TypedCheckpointStore) -> None:
    with pytest.raises(ValueError, match="not a checkpoint id"):
        await store.load("not-a-uuid", GRAPH)
    with pytest.raises(ValueError, match="not a checkpoint id"):
        await store.delete(12)  # type: ignore[arg-type]


async def test_a_second_store_over_the_same_storage_sees_the_data(
    harness: StoreHarness, store: TypedCheckpointStore
) -> None:
    checkpoints = chain(3)
    await save_all(store, "t", checkpoints)
    async with await harness.open() as second_blob_store:
        second = TypedCheckpointStore(second_blob_store)
        assert await second.load_latest("t", GRAPH) == checkpoints[-1]
        await second.save_with_trace("t", checkpoints[-1].child("next", {}), GRAPH)
    latest = await store.load_latest("t", GRAPH)
    assert latest is not None
    assert latest.step == 3


async def test_the_blocking_facade_works_inside_a_running_loop(
    blob_store: BlobCheckpointStore,
) -> None:
    # The test itself runs in an event loop: the facade must not touch it.
    sync: SyncCheckpointStore[Any] = SyncCheckpointStore(TypedCheckpointStore(blob_store))
    checkpoints = chain(3)
    with sync:
        for checkpoint in checkpoints:
            sync.save_with_trace("t", checkpoint, GRAPH)
        with pytest.raises(CheckpointConflict):
            sync.save_with_trace("t", checkpoints[0], GRAPH)
        assert sync.load_latest("t", GRAPH) == checkpoints[-1]
        assert sync.load(checkpoints[0].checkpoint_id, GRAPH) == checkpoints[0]
        assert [i.step for i in sync.history("t", limit=2)] == [2, 1]
        assert sync.traces() == ["t"]
        assert sync.prune("t", keep_latest=2) == 1
        assert sync.delete(checkpoints[1].checkpoint_id)
        assert sync.delete_trace("t") == 1
        # From another thread too, while this loop keeps running.
        assert await asyncio.to_thread(sync.load_latest, "t", GRAPH) is None
    sync.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        sync.traces()


async def test_save_refuses_what_is_not_a_blob(blob_store: BlobCheckpointStore) -> None:
    with pytest.raises(TypeError):
        await blob_store.save({"data": b""})  # type: ignore[arg-type]
