"""The run queue's contract, on SQLite and PostgreSQL: submit, claim, leases, fencing, recovery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowpoint import (
    InvalidTraceId,
    InvalidUpdate,
    LeaseLost,
    RunConflict,
    RunQueue,
    RunStatus,
    SerdeCheckpointCodec,
    TraceNotFound,
    TypedCheckpointStore,
)
from flowpoint.blob import PendingWrite
from flowpoint.checkpoint import Checkpoint
from flowpoint.ids import TraceId
from flowpoint.queue._base import Claim, Settlement
from flowpoint.stores._fenced import Fence
from tests.queue import graphs

CHAIN = graphs.chain()
HASH = CHAIN.hash_u64()
LEASE = 30.0
SHORT = 0.3  # seconds: a lease the tests let expire


async def claim(
    queue: RunQueue, worker: str = "w1", limit: int = 10, lease: float = LEASE
) -> list[Claim]:
    return await queue._claim(worker, [HASH], limit, lease)


async def expire(lease: float = SHORT) -> None:
    await asyncio.sleep(lease * 2)


def next_blob(trace: str, step: int) -> Any:
    codec: SerdeCheckpointCodec[dict[str, Any]] = SerdeCheckpointCodec(dict)
    checkpoint = Checkpoint.first("n1", graphs.start())
    for _ in range(step):
        checkpoint = checkpoint.child("n1", checkpoint.state)
    return codec.serialize(checkpoint, HASH, TraceId(trace))


# -- submitting ------------------------------------------------------------------------


async def test_a_submitted_run_is_queued_with_its_first_checkpoint(queue: RunQueue) -> None:
    run = await queue.submit(CHAIN, "ticket-42", graphs.start(7), priority=3)
    assert await queue.status("ticket-42") == RunStatus.QUEUED == "queued"
    assert (run.trace_id, run.graph_name, run.graph_hash) == ("ticket-42", "chain", HASH)
    assert (run.priority, run.epoch, run.attempts, run.owner) == (3, 0, 0, None)
    assert await queue.get("ticket-42") == run
    latest = await TypedCheckpointStore(queue.store).load_latest("ticket-42", HASH)
    assert latest is not None
    assert (latest.step, latest.current_node, latest.state) == (0, "n1", graphs.start(7))


async def test_submitting_a_trace_twice_is_a_conflict(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    with pytest.raises(RunConflict, match="holds this trace already") as refused:
        await queue.submit(CHAIN, "t", graphs.start())
    assert (refused.value.trace_id, refused.value.status) == ("t", "queued")
    with pytest.raises(RunConflict):
        await queue.submit(CHAIN, "t", graphs.start(), dedup_key="k")


async def test_a_retried_submit_with_its_dedup_key_gets_the_run_back(queue: RunQueue) -> None:
    first = await queue.submit(CHAIN, "t", graphs.start(1), dedup_key="order-9")
    again = await queue.submit(CHAIN, "t", graphs.start(2), dedup_key="order-9")
    assert again == first
    with pytest.raises(RunConflict, match="another dedup_key"):
        await queue.submit(CHAIN, "t", graphs.start(), dedup_key="order-10")
    with pytest.raises(RunConflict, match="another dedup_key or graph"):
        await queue.submit(graphs.approval(), "t", {"ticket": 1}, dedup_key="order-9")
    assert len(await queue.store.history("t")) == 1  # nothing else was saved


async def test_concurrent_submits_of_one_trace_queue_it_once(
    queue: RunQueue, other_queue: RunQueue
) -> None:
    outcomes = await asyncio.gather(
        *(
            q.submit(CHAIN, "t", graphs.start(), dedup_key="same")
            for q in (queue, other_queue, queue, other_queue)
        )
    )
    assert len({outcome.submitted_at for outcome in outcomes}) == 1
    assert len(await queue.store.history("t")) == 1


async def test_a_trace_saved_outside_the_queue_is_a_conflict(queue: RunQueue) -> None:
    await queue.store.save(next_blob("direct", 0))
    with pytest.raises(RunConflict, match="saved outside the queue"):
        await queue.submit(CHAIN, "direct", graphs.start())
    assert await queue.get("direct") is None


async def test_bad_submissions_are_refused_and_queue_nothing(queue: RunQueue) -> None:
    with pytest.raises(InvalidUpdate):
        await queue.submit(graphs.approval(), "t", ["not", "a", "dict"])
    with pytest.raises(InvalidTraceId):
        await queue.submit(CHAIN, "", graphs.start())
    for options in ({"priority": "high"}, {"priority": 2**40}, {"max_attempts": 0}):
        with pytest.raises(ValueError, match="must be an int"):
            await queue.submit(CHAIN, "t", graphs.start(), **options)
    with pytest.raises(ValueError, match="dedup_key"):
        await queue.submit(CHAIN, "t", graphs.start(), dedup_key="")
    with pytest.raises(TypeError, match="Graph or BuiltGraph"):
        await queue.submit("chain", "t", graphs.start())  # type: ignore[arg-type]
    assert await queue.runs() == []
    assert await queue.store.traces() == []


async def test_unknown_runs_and_statuses(queue: RunQueue) -> None:
    assert await queue.get("nobody") is None
    with pytest.raises(TraceNotFound):
        await queue.status("nobody")
    with pytest.raises(TraceNotFound):
        await queue.cancel("nobody")
    with pytest.raises(TraceNotFound):
        await queue.resume("nobody")
    with pytest.raises(ValueError, match="unknown run status 'paused'"):
        await queue.runs(status="paused")
    for limit in (0, "10", True):
        with pytest.raises(ValueError, match="limit must be an int"):
            await queue.runs(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidTraceId):
        await queue.status("bad\ttrace")


async def test_an_update_that_cannot_be_stored_is_refused(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [held] = await claim(queue)
    await queue._settle(held, Settlement(RunStatus.INTERRUPTED))
    with pytest.raises(TypeError, match="the resume of run 't' cannot be stored"):
        await queue.resume("t", {"n": object()})
    assert await queue.status("t") == "interrupted"


def test_a_queue_lives_in_sqlite_or_postgresql() -> None:
    for url in ("memory://", "redis://localhost", "file:///tmp/x", 42):
        with pytest.raises(ValueError, match=r"a run queue lives in|must be a str"):
            RunQueue.open(url)  # type: ignore[arg-type]


# -- claiming --------------------------------------------------------------------------


async def test_runs_are_claimed_by_priority_then_age(queue: RunQueue) -> None:
    for trace, priority in (("old", 0), ("urgent", 5), ("newer", 0), ("later-urgent", 5)):
        await queue.submit(CHAIN, trace, graphs.start(), priority=priority)
    assert [run.trace_id for run in await queue.runs()] == [
        "urgent", "later-urgent", "old", "newer"
    ]  # fmt: skip
    claimed = [c.trace_id for c in await claim(queue, limit=3)]
    assert claimed == ["urgent", "later-urgent", "old"]
    assert [c.trace_id for c in await claim(queue)] == ["newer"]
    assert await claim(queue) == []


async def test_a_claim_takes_only_runs_of_the_graphs_the_worker_serves(queue: RunQueue) -> None:
    await queue.submit(graphs.approval(), "other", {"ticket": 1})
    await queue.submit(CHAIN, "mine", graphs.start())
    assert [c.trace_id for c in await claim(queue)] == ["mine"]
    assert await queue.status("other") == "queued"


async def test_a_claim_gives_a_lease_with_a_new_epoch(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [claimed] = await claim(queue, worker="w7")
    assert (claimed.epoch, claimed.latest_step, claimed.attempts) == (1, 0, 0)
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.owner, run.epoch) == ("running", "w7", 1)
    assert run.lease_expires_at is not None
    assert run.lease_expires_at > run.updated_at


async def test_each_run_is_claimed_by_exactly_one_of_many_claimers(
    queue: RunQueue, other_queue: RunQueue
) -> None:
    for n in range(12):
        await queue.submit(CHAIN, f"t{n}", graphs.start(n))
    batches = await asyncio.gather(
        *(claim(q, worker=f"w{i}", limit=4) for i, q in enumerate([queue, other_queue] * 3))
    )
    claimed = [c.trace_id for batch in batches for c in batch]
    assert sorted(claimed) == sorted(f"t{n}" for n in range(12))


# -- leases and fencing ----------------------------------------------------------------


async def test_a_fenced_save_holds_only_while_the_lease_does(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [held] = await claim(queue)
    fence = Fence(held.trace_id, held.epoch)
    await queue.store.save_fenced(next_blob("t", 1), fence)
    with pytest.raises(LeaseLost) as lost:
        await queue.store.save_fenced(next_blob("t", 2), Fence(held.trace_id, held.epoch + 1))
    assert (lost.value.trace_id, lost.value.epoch) == ("t", 2)
    assert [info.step for info in await queue.store.history("t")] == [1, 0]


async def test_no_save_after_the_lease_expired(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [held] = await claim(queue, lease=SHORT)
    await expire()
    fence = Fence(held.trace_id, held.epoch)
    with pytest.raises(LeaseLost):
        await queue.store.save_fenced(next_blob("t", 1), fence)
    blob = next_blob("t", 0)
    write = PendingWrite(TraceId("t"), blob.checkpoint_id, "n1", 0, b"x")
    with pytest.raises(LeaseLost):
        await queue.store.save_writes_fenced([write], fence)
    assert [info.step for info in await queue.store.history("t")] == [0]
    assert await queue.store.load_writes(blob.checkpoint_id) == []


async def test_the_old_owner_cannot_save_once_another_worker_took_over(
    queue: RunQueue, other_queue: RunQueue
) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [old] = await claim(queue, worker="paused", lease=SHORT)
    await queue.store.save_fenced(next_blob("t", 1), Fence(old.trace_id, old.epoch))
    await expire()
    [new] = await claim(other_queue, worker="fresh")
    assert (new.epoch, new.attempts, new.latest_step) == (2, 1, 1)
    with pytest.raises(LeaseLost):
        await queue.store.save_fenced(next_blob("t", 2), Fence(old.trace_id, old.epoch))
    await other_queue.store.save_fenced(next_blob("t", 2), Fence(new.trace_id, new.epoch))
    run = await queue.get("t")
    assert run is not None
    assert (run.owner, run.attempts) == ("fresh", 1)


async def test_fenced_writes_check_the_lease_too(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [held] = await claim(queue)
    blob = next_blob("t", 0)
    write = PendingWrite(TraceId("t"), blob.checkpoint_id, "n1", 0, b"x")
    assert await queue.store.save_writes_fenced([write], Fence(held.trace_id, held.epoch)) == 1
    with pytest.raises(LeaseLost):
        await queue.store.save_writes_fenced([write], Fence(held.trace_id, 9), overwrite=True)
    assert [w.data for w in await queue.store.load_writes(blob.checkpoint_id)] == [b"x"]


async def test_a_fence_names_its_run(queue: RunQueue) -> None:
    with pytest.raises(ValueError, match="cannot be fenced by the lease of run"):
        await queue.store.save_fenced(next_blob("a", 0), Fence(TraceId("b"), 1))
    with pytest.raises(ValueError, match="epoch is an int >= 1"):
        Fence(TraceId("a"), 0)


async def test_a_heartbeat_renews_the_leases_still_held(queue: RunQueue) -> None:
    for trace in ("a", "b"):
        await queue.submit(CHAIN, trace, graphs.start())
    claims = await claim(queue, worker="w", lease=SHORT)
    held = [(c.trace_id, c.epoch) for c in claims]
    for _ in range(4):  # past the lease several times over, renewed each time
        await asyncio.sleep(SHORT / 3)
        assert await queue._heartbeat("w", "host", 1, [HASH], SHORT, held) == set(held)
    await queue.store.save_fenced(next_blob("a", 1), Fence(TraceId("a"), claims[0].epoch))
    assert await queue.cancel("b")
    assert await queue._heartbeat("w", "host", 1, [HASH], SHORT, held) == {held[0]}
    await expire()
    with pytest.raises(LeaseLost):  # expired: saves are refused
        await queue.store.save_fenced(next_blob("a", 2), Fence(TraceId("a"), claims[0].epoch))
    # No one took it over: the next heartbeat renews it, and saves go on.
    assert await queue._heartbeat("w", "host", 1, [HASH], SHORT, held) == {held[0]}
    await queue.store.save_fenced(next_blob("a", 2), Fence(TraceId("a"), claims[0].epoch))
    await expire()
    assert await queue._heartbeat("other", "host", 2, [HASH], SHORT, []) == set()  # requeued
    assert await queue._heartbeat("w", "host", 1, [HASH], SHORT, held) == set()


# -- recovery --------------------------------------------------------------------------


async def test_an_expired_lease_is_requeued_then_dead_after_max_attempts(
    queue: RunQueue, other_queue: RunQueue
) -> None:
    await queue.submit(CHAIN, "t", graphs.start(), max_attempts=2)
    [first] = await claim(queue, worker="w1", lease=SHORT)
    await expire()
    assert await queue._heartbeat("w2", "host", 2, [HASH], LEASE, []) == set()  # requeues it
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.attempts, run.owner) == ("queued", 1, None)
    assert run.error == "the lease of worker w1 expired (attempt 1)"
    [second] = await claim(other_queue, worker="w2", lease=SHORT)
    assert (second.epoch, second.attempts) == (first.epoch + 1, 1)
    await expire()
    assert await claim(queue, worker="w3") == []  # requeued as dead, not claimed
    dead = await queue.get("t")
    assert dead is not None
    assert (dead.status, dead.attempts) == ("dead", 2)
    assert dead.error == "the lease of worker w2 expired (attempt 2)"


async def test_settling_needs_the_lease_still_held(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    [held] = await claim(queue, lease=SHORT)
    await expire()
    [again] = await claim(queue, worker="w2")
    assert not await queue._settle(held, Settlement(RunStatus.DONE))
    assert await queue._settle(again, Settlement(RunStatus.FAILED, 0, "boom"))
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.error, run.owner, run.lease_expires_at) == (
        "failed",
        "boom",
        None,
        None,
    )


# -- cancel and resume -----------------------------------------------------------------


async def test_cancel_stops_queued_and_running_runs(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "waiting", graphs.start())
    await queue.submit(CHAIN, "running", graphs.start())
    [held] = await claim(queue, limit=1)
    assert held.trace_id == "waiting"
    assert await queue.cancel("waiting")
    assert await queue.status("waiting") == "cancelled"
    with pytest.raises(LeaseLost):  # its worker stops at its next save
        await queue.store.save_fenced(next_blob("waiting", 1), Fence(held.trace_id, held.epoch))
    assert not await queue.cancel("waiting")  # settled already
    assert [c.trace_id for c in await claim(queue)] == ["running"]


async def test_resume_queues_an_interrupted_run_with_its_update(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start())
    with pytest.raises(RunConflict, match="only an interrupted, failed or dead run") as refused:
        await queue.resume("t", {"n": 1})
    assert refused.value.status == "queued"
    [held] = await claim(queue)
    await queue.store.save_fenced(next_blob("t", 1), Fence(held.trace_id, held.epoch))
    assert await queue._settle(held, Settlement(RunStatus.INTERRUPTED))
    assert await queue.status("t") == "interrupted"
    with pytest.raises(TypeError, match="dict of fields"):
        await queue.resume("t", ["n", 1])  # type: ignore[arg-type]
    await queue.resume("t", {"n": 5})
    [again] = await claim(queue)
    assert (again.epoch, again.latest_step, again.update_step) == (2, 1, 1)
    assert again.pending_update is not None  # the trace still stands where it was resumed


async def test_a_failed_run_can_be_resumed_after_a_fix(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "t", graphs.start(), max_attempts=1)
    [held] = await claim(queue)
    await queue._settle(held, Settlement(RunStatus.FAILED, 0, "bug"))
    await queue.resume("t")
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.error, run.attempts) == ("queued", None, 0)


# -- listing ---------------------------------------------------------------------------


async def test_runs_are_listed_by_status(queue: RunQueue) -> None:
    for n in range(3):
        await queue.submit(CHAIN, f"t{n}", graphs.start())
    await claim(queue, limit=1)
    assert [run.trace_id for run in await queue.runs(status="running")] == ["t0"]
    assert [run.trace_id for run in await queue.runs(RunStatus.QUEUED)] == ["t1", "t2"]
    assert [run.trace_id for run in await queue.runs(limit=2)] == ["t0", "t1"]


async def test_runs_no_live_worker_serves_are_stranded(queue: RunQueue) -> None:
    await queue.submit(CHAIN, "chain-run", graphs.start())
    await queue.submit(graphs.approval(), "approval-run", {"ticket": 1})
    assert {run.trace_id for run in await queue.stranded()} == {"chain-run", "approval-run"}
    await queue._heartbeat("w", "host", 1, [HASH], LEASE, [])
    assert [run.trace_id for run in await queue.stranded()] == ["approval-run"]
    await queue._unregister("w")
    assert len(await queue.stranded()) == 2
    await queue._heartbeat("short", "host", 1, [HASH], SHORT, [])
    await expire()  # a worker that stopped beating is not live
    assert len(await queue.stranded()) == 2


async def test_a_sqlite_store_has_the_queue_tables_only_once_a_queue_opens_it(
    tmp_path: Any,
) -> None:
    import sqlite3

    from flowpoint import open_store

    path = tmp_path / "runs.db"

    def tables() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}

    async with open_store(f"sqlite:///{path}") as store:
        await store.traces()
    assert not {"flowpoint_runs", "flowpoint_workers"} & tables()  # no pages for a queue
    async with RunQueue.open(f"sqlite:///{path}") as queue:  # reading it makes none either
        assert await queue.runs() == []
        assert await queue.stranded() == []
        assert await queue.get("t") is None
    assert not {"flowpoint_runs", "flowpoint_workers"} & tables()
    async with RunQueue.open(f"sqlite:///{path}") as queue:
        await queue.submit(CHAIN, "t", graphs.start())
    async with RunQueue.open(f"sqlite:///{path}") as queue:  # another finds them made
        assert await queue.status("t") == "queued"
    assert {"flowpoint_runs", "flowpoint_workers", "flowpoint_worker_graphs"} <= tables()
