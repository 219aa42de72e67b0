"""Runner: saves per trigger, retention, interrupts, resume, fork, limits, store failures."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from flowpoint import (
    END,
    START,
    BuiltGraph,
    Checkpoint,
    CheckpointConflict,
    Graph,
    GraphDefinitionError,
    GraphMismatch,
    InMemoryBlobStore,
    InvalidRoute,
    InvalidUpdate,
    RecursionLimitReached,
    RetentionPolicy,
    Runner,
    SerdeCheckpointCodec,
    StorageError,
    TraceNotFound,
    TriggerPolicy,
    TypedCheckpointStore,
)
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.graph.doubles import FailingBlobStore

T = "trace-1"


class Calls:
    """Counts node calls, and makes nodes that append their name to ``state["trail"]``."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []

    def node(
        self, name: str, *, change: bool = True, sync: bool = False, crash_on: int | None = None
    ) -> Callable[[Any], Any]:
        def body(state: dict[str, Any]) -> dict[str, Any] | None:
            self.counts[name] += 1
            self.order.append(name)
            if crash_on is not None and self.counts[name] == crash_on:
                raise RuntimeError(f"{name} crashed")
            return {"trail": [*state["trail"], name]} if change else None

        if sync:
            return body

        async def async_body(state: dict[str, Any]) -> dict[str, Any] | None:
            return body(state)

        return async_body


def linear(
    n: int,
    calls: Calls,
    *,
    unchanged: frozenset[int] = frozenset(),
    crash: dict[int, int] | None = None,
    version: int | None = None,
) -> BuiltGraph[Any]:
    """START -> n0 -> n1 -> ... -> END; nodes in ``unchanged`` return None."""
    g: Graph[Any] = Graph("linear")
    for i in range(n):
        crash_on = (crash or {}).get(i)
        g.add_node(
            f"n{i}",
            calls.node(f"n{i}", change=i not in unchanged, sync=i % 2 == 1, crash_on=crash_on),
            version=version if i == 0 else None,
        )
    g.add_edge(START, "n0")
    for i in range(n - 1):
        g.add_edge(f"n{i}", f"n{i + 1}")
    g.add_edge(f"n{n - 1}", END)
    return g.build()


def names(n: int) -> list[str]:
    return [f"n{i}" for i in range(n)]


def start() -> dict[str, Any]:
    return {"trail": []}


# -- a plain run ------------------------------------------------------------------------


async def test_run_saves_after_every_node() -> None:
    calls, store = Calls(), FailingBlobStore()
    result = await Runner(linear(5, calls), store).run(T, start())
    assert result.status == "done"
    assert result.state == {"trail": names(5)}
    assert result.next_node is None
    assert result.nodes_run == 5
    assert result.durable
    assert result.trace_id == T
    assert result.checkpoint.step == 5
    assert store.saves == 6
    assert await store.steps(T) == [0, 1, 2, 3, 4, 5]
    assert calls.counts == Counter(names(5))
    metadata = [blob.metadata for blob in store.saved]
    assert metadata[0] == {"source": "input"}
    assert [m["node"] for m in metadata[1:]] == names(5)
    assert all(m["source"] == "node" for m in metadata[1:])
    latest = await TypedCheckpointStore(store).load_latest(T, None)
    assert latest is not None
    assert latest.current_node is None
    assert latest.state == result.state
    assert latest.checkpoint_id == result.checkpoint.checkpoint_id


async def test_each_save_completes_before_the_next_node_starts() -> None:
    store = FailingBlobStore(save_delay=0.005)
    seen: list[int] = []

    async def check(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(await store.count(T))
        return {"trail": [*state["trail"], "x"]}

    g: Graph[Any] = Graph("g")
    for i in range(4):
        g.add_node(f"n{i}", check)
    g.add_edge(START, "n0").add_edge("n0", "n1").add_edge("n1", "n2").add_edge("n2", "n3")
    g.add_edge("n3", END)
    await Runner(g, store).run(T, start())
    # Node i finds the first checkpoint and the i checkpoints of the nodes before it.
    assert seen == [1, 2, 3, 4]


async def test_runner_takes_an_unbuilt_graph() -> None:
    calls = Calls()
    g: Graph[Any] = Graph("g").add_node("a", calls.node("a"))
    g.add_edge(START, "a").add_edge("a", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, start())
    assert result.state == {"trail": ["a"]}


# -- trigger policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "unchanged", "saves"),
    [
        # first checkpoint + one per node
        (TriggerPolicy.EVERY_NODE, frozenset(), 1 + 6),
        (TriggerPolicy.EVERY_NODE, frozenset({1, 3, 5}), 1 + 6),
        # first + n0, n2, n4 (changed) + the end (n5 did not change, the end is saved anyway)
        (TriggerPolicy.ON_CHANGE, frozenset({1, 3, 5}), 1 + 3 + 1),
        # first + n0..n5, the last one being the end
        (TriggerPolicy.ON_CHANGE, frozenset(), 1 + 6),
        # first + the end only
        (TriggerPolicy.ON_CHANGE, frozenset(range(6)), 1 + 1),
        (TriggerPolicy.MANUAL, frozenset(), 1 + 1),
        (TriggerPolicy.MANUAL, frozenset({1, 3, 5}), 1 + 1),
    ],
)
async def test_saves_per_trigger_policy(
    trigger: TriggerPolicy, unchanged: frozenset[int], saves: int
) -> None:
    calls, store = Calls(), FailingBlobStore()
    result = await Runner(linear(6, calls, unchanged=unchanged), store, trigger=trigger).run(
        T, start()
    )
    assert result.status == "done"
    assert result.nodes_run == 6
    assert result.durable
    assert store.saves == saves
    # Steps stay contiguous: a skipped position is never written, the next is its parent's child.
    assert await store.steps(T) == list(range(saves))
    assert result.state == {"trail": [f"n{i}" for i in range(6) if i not in unchanged]}


async def test_on_change_sees_an_equal_update_as_no_change() -> None:
    store = FailingBlobStore()

    def same(state: dict[str, Any]) -> dict[str, Any]:
        return {"x": state["x"]}

    def bump(state: dict[str, Any]) -> dict[str, Any]:
        return {"x": state["x"] + 1}

    g: Graph[Any] = Graph("g").add_node("same", same).add_node("bump", bump)
    g.add_node("same2", same)
    g.add_edge(START, "same").add_edge("same", "bump").add_edge("bump", "same2")
    g.add_edge("same2", END)
    await Runner(g, store, trigger=TriggerPolicy.ON_CHANGE).run(T, {"x": 1})
    assert [blob.metadata.get("node") for blob in store.saved] == [None, "bump", "same2"]


async def test_manual_trigger_still_saves_pauses() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(6, calls), store, trigger=TriggerPolicy.MANUAL, interrupt_before=["n3"])
    paused = await runner.run(T, start())
    assert paused.status == "interrupted"
    assert paused.durable
    assert store.saves == 2  # the input, the pause
    done = await runner.resume(T)
    assert done.status == "done"
    assert store.saves == 3  # + the end
    assert calls.counts == Counter(names(6))


async def test_on_change_resume_reruns_the_nodes_since_the_last_save() -> None:
    # n1 changes nothing, so the last checkpoint before n2 crashes points at n1.
    calls, store = Calls(), FailingBlobStore()
    graph = linear(4, calls, unchanged=frozenset({1}), crash={2: 1})
    runner = Runner(graph, store, trigger=TriggerPolicy.ON_CHANGE)
    with pytest.raises(RuntimeError, match="n2 crashed"):
        await runner.run(T, start())
    result = await runner.resume(T)
    assert result.status == "done"
    assert result.state == {"trail": ["n0", "n2", "n3"]}
    assert calls.counts == Counter({"n0": 1, "n1": 2, "n2": 2, "n3": 1})


async def test_manual_resume_reruns_everything_since_the_last_pause() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(4, calls, crash={3: 1}), store, trigger=TriggerPolicy.MANUAL)
    with pytest.raises(RuntimeError, match="n3 crashed"):
        await runner.run(T, start())
    result = await runner.resume(T)
    assert result.state == {"trail": names(4)}
    assert calls.counts == Counter({"n0": 2, "n1": 2, "n2": 2, "n3": 2})


# -- retention --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retention", "left"),
    [
        (None, 11),
        (RetentionPolicy.keep_all(), 11),
        (RetentionPolicy.keep_latest(3), 3),
        (RetentionPolicy.keep_latest(1), 1),
        (RetentionPolicy.keep_latest(50), 11),
        (RetentionPolicy.keep_for(timedelta(days=1)), 11),
    ],
)
async def test_checkpoints_left_per_retention(retention: RetentionPolicy | None, left: int) -> None:
    calls, store = Calls(), FailingBlobStore()
    result = await Runner(linear(10, calls), store, retention=retention).run(T, start())
    assert store.saves == 11
    assert await store.steps(T) == list(range(11 - left, 11))
    assert result.checkpoint.step == 10
    if retention is None or retention.keeps_all:
        assert store.prunes == 0


class _OldClock(datetime):
    """A clock stuck two days ago: the checkpoints it stamps are old at once."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime(2000, 1, 1, tzinfo=UTC)


async def test_keep_for_always_keeps_the_latest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowpoint.checkpoint.datetime", _OldClock)
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(10, calls), store, retention=RetentionPolicy.keep_for(timedelta(days=1)))
    result = await runner.run(T, start())
    assert await store.steps(T) == [10]
    assert (await runner.resume(T)).state == result.state


async def test_keep_for_drops_old_checkpoints_and_keeps_young_ones() -> None:
    calls, store = Calls(), FailingBlobStore()
    graph = linear(6, calls)
    typed = TypedCheckpointStore(store)
    # Steps 0..3 of the trace were written two days ago; n3 is next.
    old = datetime.now(UTC) - timedelta(days=2)
    checkpoint = Checkpoint.first("n0", start())
    for step in range(4):
        state = {"trail": names(step)}
        checkpoint = dataclasses.replace(
            checkpoint.child(f"n{step}", state) if step else checkpoint, created_at=old
        )
        await typed.save_with_trace(T, checkpoint, graph.hash_u64())
    runner = Runner(graph, store, retention=RetentionPolicy.keep_for(timedelta(days=1)))
    result = await runner.resume(T)
    assert result.state == {"trail": names(6)}
    assert calls.counts == Counter(names(6)[3:])
    assert await store.steps(T) == [4, 5, 6]


async def test_keep_latest_and_max_age_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowpoint.checkpoint.datetime", _OldClock)
    store = FailingBlobStore()
    retention = RetentionPolicy(latest=3, max_age=timedelta(days=1))
    await Runner(linear(10, Calls()), store, retention=retention).run(T, start())
    assert await store.steps(T) == [8, 9, 10]


def test_retention_policy_checks_its_arguments() -> None:
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="at least 1"):
            RetentionPolicy.keep_latest(bad)  # type: ignore[arg-type]
    for age in (timedelta(0), timedelta(seconds=-1), 60):
        with pytest.raises(ValueError, match="max_age"):
            RetentionPolicy.keep_for(age)  # type: ignore[arg-type]
    assert RetentionPolicy.keep_all().keeps_all
    assert not RetentionPolicy.keep_latest(2).keeps_all


# -- interrupts -------------------------------------------------------------------------


async def test_interrupt_before_pauses_and_resume_continues() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(5, calls), store, interrupt_before=["n2"])
    paused = await runner.run(T, start())
    assert paused.status == "interrupted"
    assert paused.next_node == "n2"
    assert paused.nodes_run == 2
    assert paused.state == {"trail": ["n0", "n1"]}
    assert paused.durable
    assert calls.counts == Counter(["n0", "n1"])
    assert store.saves == 3
    latest = await runner.store.load_latest(T, runner.graph.hash_u64())
    assert latest is not None
    assert latest.current_node == "n2"

    done = await runner.resume(T)
    assert done.status == "done"
    assert done.nodes_run == 3
    assert done.state == {"trail": names(5)}
    assert calls.counts == Counter(names(5))  # nothing ran twice
    assert store.saves == 6


async def test_interrupt_after_pauses_and_resume_continues() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(5, calls), store, interrupt_after=["n2"])
    paused = await runner.run(T, start())
    assert paused.status == "interrupted"
    assert paused.next_node == "n3"
    assert paused.nodes_run == 3
    assert paused.state == {"trail": names(3)}
    assert store.saved[-1].metadata == {"source": "node", "node": "n2", "interrupt": "after"}
    done = await runner.resume(T)
    assert done.status == "done"
    assert done.nodes_run == 2
    assert calls.counts == Counter(names(5))


async def test_interrupt_before_the_first_node() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(3, calls), store, interrupt_before=["n0"])
    paused = await runner.run(T, start())
    assert (paused.status, paused.next_node, paused.nodes_run) == ("interrupted", "n0", 0)
    assert store.saves == 1
    assert (await runner.resume(T)).state == {"trail": names(3)}
    assert calls.counts == Counter(names(3))


async def test_interrupt_after_the_last_node_is_the_end() -> None:
    calls = Calls()
    result = await Runner(linear(3, calls), InMemoryBlobStore(), interrupt_after=["n2"]).run(
        T, start()
    )
    assert result.status == "done"
    assert result.next_node is None


async def test_interrupt_before_and_after_the_same_node() -> None:
    calls = Calls()
    runner = Runner(
        linear(4, calls), InMemoryBlobStore(), interrupt_before=["n1"], interrupt_after=["n1"]
    )
    first = await runner.run(T, start())
    second = await runner.resume(T)
    third = await runner.resume(T)
    assert [(r.status, r.next_node, r.nodes_run) for r in (first, second, third)] == [
        ("interrupted", "n1", 1),
        ("interrupted", "n2", 1),
        ("done", None, 2),
    ]
    assert calls.counts == Counter(names(4))


async def test_interrupts_under_on_change_flush_the_pending_position() -> None:
    # n0, n1 change nothing: nothing is saved until the pause, which must be durable.
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(
        linear(4, calls, unchanged=frozenset({0, 1})),
        store,
        trigger=TriggerPolicy.ON_CHANGE,
        interrupt_before=["n2"],
    )
    paused = await runner.run(T, start())
    assert paused.durable
    assert store.saves == 2
    assert store.saved[-1].metadata["node"] == "n1"
    await runner.resume(T)
    assert calls.counts == Counter(names(4))


async def test_a_pause_before_a_node_is_marked_in_its_checkpoint() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(4, calls), store, interrupt_before=["n2"])
    await runner.run(T, start())
    assert store.saved[-1].metadata == {"source": "node", "node": "n1", "interrupt": "before"}
    # A resume with an update goes past the pause: the human has acted.
    done = await runner.resume(T, update={"trail": ["n0", "n1", "human"]})
    assert done.status == "done"
    assert done.state == {"trail": ["n0", "n1", "human", "n2", "n3"]}


async def test_an_update_passes_the_pause_also_after_the_node_fails() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(3, calls, crash={1: 1}), store, interrupt_before=["n1"])
    await runner.run(T, start())
    with pytest.raises(RuntimeError, match="n1 crashed"):
        await runner.resume(T, update={"approved": True})
    assert store.saved[-1].metadata["interrupt"] == "before"  # the update's checkpoint
    done = await runner.resume(T)  # goes on past the pause: the human has acted
    assert (done.status, done.nodes_run) == ("done", 2)
    assert done.state == {"trail": names(3), "approved": True}
    assert calls.counts == Counter({"n0": 1, "n1": 2, "n2": 1})


async def test_an_update_to_a_trace_not_paused_before_its_node_does_not_pass_a_pause() -> None:
    calls, store = Calls(), FailingBlobStore()
    graph = linear(3, calls)
    await Runner(graph, store, interrupt_after=["n0"]).run(T, start())
    runner = Runner(graph, store, interrupt_before=["n1"])
    paused = await runner.resume(T, update={"seen": True})
    assert (paused.status, paused.next_node, paused.nodes_run) == ("interrupted", "n1", 0)
    assert "interrupt" not in store.saved[2].metadata
    assert (await runner.resume(T)).status == "done"


async def test_a_pause_after_then_a_pause_before_the_next_node() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(4, calls), store, interrupt_after=["n1"], interrupt_before=["n2"])
    after = await runner.run(T, start())
    before = await runner.resume(T)
    done = await runner.resume(T)
    assert [(r.status, r.next_node, r.nodes_run) for r in (after, before, done)] == [
        ("interrupted", "n2", 2),
        ("interrupted", "n2", 0),
        ("done", None, 2),
    ]
    assert store.saved[3].metadata == {"source": "pause", "interrupt": "before"}
    assert calls.counts == Counter(names(4))


async def test_a_runner_with_a_new_interrupt_pauses_a_resumed_trace_first() -> None:
    calls, store = Calls(), FailingBlobStore()
    graph = linear(4, calls)
    await Runner(graph, store, interrupt_after=["n1"]).run(T, start())
    runner = Runner(graph, store, interrupt_before=["n2"])
    paused = await runner.resume(T)
    assert (paused.status, paused.next_node, paused.nodes_run) == ("interrupted", "n2", 0)
    assert (await runner.resume(T)).status == "done"
    assert calls.counts == Counter(names(4))


def test_interrupts_must_name_nodes() -> None:
    graph = linear(2, Calls())
    with pytest.raises(GraphDefinitionError, match="ghost"):
        Runner(graph, InMemoryBlobStore(), interrupt_before=["ghost"])
    with pytest.raises(GraphDefinitionError, match="interrupt_after"):
        Runner(graph, InMemoryBlobStore(), interrupt_after=["n0", "ghost"])
    with pytest.raises(TypeError, match="list of node names"):
        Runner(graph, InMemoryBlobStore(), interrupt_before="n0")


# -- resume -----------------------------------------------------------------------------


async def test_resume_with_an_update_records_it() -> None:
    seen: list[Any] = []

    def approve(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(state.get("approved"))
        return {"trail": [*state["trail"], "approve"]}

    calls, store = Calls(), FailingBlobStore()
    g: Graph[Any] = Graph("g").add_node("draft", calls.node("draft"))
    g.add_node("approve", approve).add_edge(START, "draft").add_edge("draft", "approve")
    g.add_edge("approve", END)
    runner = Runner(g, store, interrupt_before=["approve"])
    await runner.run(T, start())
    result = await runner.resume(T, update={"approved": True, "by": "ana"})
    assert result.status == "done"
    assert result.state == {"trail": ["draft", "approve"], "approved": True, "by": "ana"}
    assert seen == [True]
    assert calls.counts == Counter(["draft"])
    update = store.saved[2]
    assert update.step == 2
    assert update.metadata["source"] == "update"
    assert json.loads(str(update.metadata["update"])) == {"approved": True, "by": "ana"}
    saved = await runner.store.load(update.checkpoint_id, None)
    assert saved is not None
    assert saved.current_node == "approve"
    assert saved.state == {"trail": ["draft"], "approved": True, "by": "ana"}
    assert saved.parent_id == store.saved[1].checkpoint_id


async def test_a_long_update_is_recorded_by_its_keys() -> None:
    store = FailingBlobStore()
    runner = Runner(linear(2, Calls()), store, interrupt_before=["n1"])
    await runner.run(T, start())
    await runner.resume(T, update={"big": "x" * 5000, "small": 1})
    recorded = store.saved[2].metadata["update"]
    assert json.loads(str(recorded)) == {"keys": ["big", "small"], "type": "dict"}


async def test_an_update_of_very_many_keys_is_recorded_within_the_metadata_limits() -> None:
    store = FailingBlobStore()
    runner = Runner(linear(2, Calls()), store, interrupt_before=["n1"])
    await runner.run(T, start())
    update = {f"key-number-{n:05}": n for n in range(2000)} | {"trail": ["x"]}
    await runner.resume(T, update=update)
    recorded = json.loads(str(store.saved[2].metadata["update"]))
    assert recorded["keys"][:2] == ["key-number-00000", "key-number-00001"]
    assert len(recorded["keys"]) + recorded["more"] == len(update)


async def test_a_bad_update_is_refused_and_nothing_is_saved() -> None:
    store = FailingBlobStore()
    runner = Runner(linear(2, Calls()), store, interrupt_before=["n1"])
    await runner.run(T, start())
    with pytest.raises(InvalidUpdate, match="the update"):
        await runner.resume(T, update=["not", "a", "dict"])
    assert store.saves == 2


async def test_a_finished_trace_resumes_to_done() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(3, calls), store)
    first = await runner.run(T, start())
    again = await runner.resume(T)
    assert again.status == "done"
    assert again.nodes_run == 0
    assert again.state == first.state
    assert again.checkpoint.checkpoint_id == first.checkpoint.checkpoint_id
    assert store.saves == 4
    assert calls.counts == Counter(names(3))


async def test_resume_an_unknown_trace() -> None:
    runner = Runner(linear(2, Calls()), InMemoryBlobStore())
    with pytest.raises(TraceNotFound, match="ghost") as caught:
        await runner.resume("ghost")
    assert isinstance(caught.value, LookupError)


async def test_resume_after_a_failed_node_reruns_only_that_node() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(5, calls, crash={3: 1}), store)
    with pytest.raises(RuntimeError, match="n3 crashed"):
        await runner.run(T, start())
    assert store.saves == 4
    result = await runner.resume(T)
    assert result.state == {"trail": names(5)}
    assert result.nodes_run == 2
    assert calls.counts == Counter({"n0": 1, "n1": 1, "n2": 1, "n3": 2, "n4": 1})


# -- loops and the recursion limit ------------------------------------------------------


def loop_graph(calls: Counter[str], crash_at: int | None = None) -> BuiltGraph[Any]:
    """``inc`` runs until ``count`` reaches ``target``, then ``finish`` once."""

    async def inc(state: dict[str, Any]) -> dict[str, Any]:
        calls["inc"] += 1
        if crash_at is not None and calls["inc"] == crash_at:
            raise RuntimeError("crash in the loop")
        return {"count": state["count"] + 1, "total": state["total"] + state["count"]}

    def again(state: dict[str, Any]) -> str:
        return "inc" if state["count"] < state["target"] else "finish"

    def finish(state: dict[str, Any]) -> dict[str, Any]:
        calls["finish"] += 1
        return {"done": True}

    g: Graph[Any] = Graph("loop").add_node("inc", inc).add_node("finish", finish)
    g.add_edge(START, "inc").add_conditional_edges("inc", again, ["inc", "finish"])
    g.add_edge("finish", END)
    return g.build()


def loop_start(target: int) -> dict[str, Any]:
    return {"count": 0, "total": 0, "target": target, "done": False}


async def test_a_loop_checkpoints_every_visit() -> None:
    calls: Counter[str] = Counter()
    store = FailingBlobStore()
    result = await Runner(loop_graph(calls), store).run(T, loop_start(50))
    assert result.state == {"count": 50, "total": sum(range(50)), "target": 50, "done": True}
    assert result.nodes_run == 51
    assert calls == Counter({"inc": 50, "finish": 1})
    assert store.saves == 52
    nodes = [blob.metadata.get("node") for blob in store.saved]
    assert nodes == [None] + ["inc"] * 50 + ["finish"]


async def test_a_loop_resumed_in_the_middle_ends_as_an_uninterrupted_one() -> None:
    reference = await Runner(loop_graph(Counter()), InMemoryBlobStore()).run(T, loop_start(50))
    calls: Counter[str] = Counter()
    store = FailingBlobStore()
    runner = Runner(loop_graph(calls, crash_at=23), store)
    with pytest.raises(RuntimeError, match="crash in the loop"):
        await runner.run(T, loop_start(50))
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert (latest.step, latest.current_node, latest.state["count"]) == (22, "inc", 22)
    result = await runner.resume(T)
    assert result.state == reference.state
    assert result.nodes_run == 29
    assert calls == Counter({"inc": 51, "finish": 1})  # visit 23 ran twice, no other


async def test_a_loop_paused_on_every_visit() -> None:
    calls: Counter[str] = Counter()
    runner = Runner(loop_graph(calls), InMemoryBlobStore(), interrupt_after=["inc"])
    result = await runner.run(T, loop_start(5))
    pauses = 0
    while result.status == "interrupted":
        assert result.nodes_run == 1
        assert result.next_node == ("inc" if result.state["count"] < 5 else "finish")
        pauses += 1
        result = await runner.resume(T)
    assert pauses == 5
    assert result.state["count"] == 5
    assert calls == Counter({"inc": 5, "finish": 1})


async def test_the_recursion_limit_stops_a_runaway_loop_and_saves_progress() -> None:
    calls: Counter[str] = Counter()
    store = FailingBlobStore()
    runner = Runner(loop_graph(calls), store, recursion_limit=10)
    with pytest.raises(RecursionLimitReached) as caught:
        await runner.run(T, loop_start(25))
    error = caught.value
    assert (error.trace_id, error.limit, error.node) == (T, 10, "inc")
    assert "resume" in str(error)
    assert "recursion_limit" in str(error)
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert (latest.step, latest.current_node, latest.state["count"]) == (10, "inc", 10)
    with pytest.raises(RecursionLimitReached):
        await runner.resume(T)
    result = await runner.resume(T)
    assert result.status == "done"
    assert result.nodes_run == 6
    assert result.state["count"] == 25
    assert calls == Counter({"inc": 25, "finish": 1})


async def test_the_recursion_limit_saves_pending_progress_under_manual() -> None:
    calls: Counter[str] = Counter()
    store = FailingBlobStore()
    runner = Runner(loop_graph(calls), store, trigger=TriggerPolicy.MANUAL, recursion_limit=10)
    with pytest.raises(RecursionLimitReached):
        await runner.run(T, loop_start(1000))
    assert store.saves == 2
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert (latest.step, latest.state["count"]) == (1, 10)
    assert calls["inc"] == 10


@pytest.mark.parametrize(("limit", "error"), [(0, ValueError), (-3, ValueError), (True, TypeError)])
def test_recursion_limit_checks(limit: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="recursion_limit"):
        Runner(linear(1, Calls()), InMemoryBlobStore(), recursion_limit=limit)


# -- store failures ---------------------------------------------------------------------


async def test_a_store_failure_fails_the_run_by_default() -> None:
    calls = Calls()
    store = FailingBlobStore(fail_saves={3})  # 1: input, 2: after n0, 3: after n1
    with pytest.raises(StorageError, match="#3"):
        await Runner(linear(5, calls), store).run(T, start())
    assert calls.counts == Counter(["n0", "n1"])  # n2 did not start
    assert await store.steps(T) == [0, 1]


async def test_warn_keeps_going_and_says_so() -> None:
    calls = Calls()
    store = FailingBlobStore(fail_saves={3})
    runner = Runner(linear(5, calls), store, on_save_error="warn")
    with pytest.warns(RuntimeWarning, match="step 2 of trace 'trace-1' was not saved") as record:
        result = await runner.run(T, start())
    assert len(record) == 1
    assert result.status == "done"
    assert result.durable  # the last save succeeded
    assert result.state == {"trail": names(5)}
    assert calls.counts == Counter(names(5))
    # The failed position is skipped: the next save takes its step, the chain stays whole.
    assert await store.steps(T) == [0, 1, 2, 3, 4]
    assert [blob.metadata.get("node") for blob in store.saved] == [None, "n0", "n2", "n3", "n4"]
    typed = TypedCheckpointStore(store)
    for parent, child in zip(store.saved, store.saved[1:], strict=False):
        loaded = await typed.load(child.checkpoint_id, None)
        assert loaded is not None
        assert loaded.parent_id == parent.checkpoint_id


async def test_warn_tells_the_truth_when_the_last_save_fails() -> None:
    store = FailingBlobStore(fail_saves={4})  # the end of a 3-node run
    runner = Runner(linear(3, Calls()), store, on_save_error="warn")
    with pytest.warns(RuntimeWarning, match="not saved"):
        result = await runner.run(T, start())
    assert result.status == "done"
    assert not result.durable
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.checkpoint_id != result.checkpoint.checkpoint_id
    assert latest.current_node == "n2"


async def test_warn_with_every_save_failing_reruns_everything_on_resume() -> None:
    calls = Calls()
    store = FailingBlobStore(fail_saves=range(2, 100))
    runner = Runner(linear(3, calls), store, on_save_error="warn")
    with pytest.warns(RuntimeWarning, match="not saved") as record:
        result = await runner.run(T, start())
    assert len(record) == 3
    assert not result.durable
    assert await store.steps(T) == [0]
    store.fail_saves.clear()
    again = await runner.resume(T)
    assert again.state == result.state
    assert calls.counts == Counter({"n0": 2, "n1": 2, "n2": 2})


async def test_warn_on_an_interrupt_whose_save_fails() -> None:
    store = FailingBlobStore(fail_saves={3})  # the pause after n1
    runner = Runner(linear(4, Calls()), store, on_save_error="warn", interrupt_after=["n1"])
    with pytest.warns(RuntimeWarning, match="not saved"):
        paused = await runner.run(T, start())
    assert paused.status == "interrupted"
    assert not paused.durable


@pytest.mark.parametrize("on_save_error", ["raise", "warn"])
async def test_the_first_save_always_raises(on_save_error: Any) -> None:
    calls = Calls()
    store = FailingBlobStore(fail_all=True)
    runner = Runner(linear(2, calls), store, on_save_error=on_save_error)
    with pytest.raises(StorageError):
        await runner.run(T, start())
    assert calls.counts == Counter()


@pytest.mark.parametrize("on_save_error", ["raise", "warn"])
async def test_the_save_of_an_update_always_raises(on_save_error: Any) -> None:
    store = FailingBlobStore()
    runner = Runner(linear(3, Calls()), store, on_save_error=on_save_error, interrupt_before=["n1"])
    await runner.run(T, start())
    store.fail_all = True
    with pytest.raises(StorageError):
        await runner.resume(T, update={"x": 1})


async def test_warn_when_pruning_fails() -> None:
    calls = Calls()
    store = FailingBlobStore(fail_prune=True)
    runner = Runner(
        linear(3, calls), store, on_save_error="warn", retention=RetentionPolicy.keep_latest(1)
    )
    with pytest.warns(RuntimeWarning, match="pruning its old checkpoints failed") as record:
        result = await runner.run(T, start())
    # Steps 1, 2 and 3 each had one to prune; after step 0 there was nothing to delete.
    assert len(record) == 3
    assert result.status == "done"
    # Every checkpoint was saved; only the pruning failed.
    assert result.durable
    assert await store.steps(T) == [0, 1, 2, 3]
    assert calls.counts == Counter(names(3))


async def test_warn_when_one_prune_fails_does_not_resave_the_step() -> None:
    # The save of step 2 succeeds, its prune (the first with anything to delete) fails:
    # the run must not save step 2 again.
    calls = Calls()
    store = FailingBlobStore(fail_prunes={1})
    runner = Runner(
        linear(3, calls), store, on_save_error="warn", retention=RetentionPolicy.keep_latest(2)
    )
    with pytest.warns(RuntimeWarning, match="step 2 of trace 'trace-1' is saved"):
        result = await runner.run(T, start())
    assert result.status == "done"
    assert result.durable
    assert store.saves == 4
    assert await store.steps(T) == [2, 3]
    assert calls.counts == Counter(names(3))


async def test_raise_when_pruning_fails() -> None:
    store = FailingBlobStore(fail_prune=True)
    runner = Runner(linear(3, Calls()), store, retention=RetentionPolicy.keep_latest(1))
    with pytest.raises(StorageError, match="prune"):
        await runner.run(T, start())


def test_on_save_error_checks() -> None:
    with pytest.raises(ValueError, match="on_save_error"):
        Runner(linear(1, Calls()), InMemoryBlobStore(), on_save_error="ignore")  # type: ignore[arg-type]


# -- conflicts --------------------------------------------------------------------------


async def test_starting_a_trace_twice_conflicts() -> None:
    calls, store = Calls(), FailingBlobStore()
    await Runner(linear(2, calls), store).run(T, start())
    with pytest.raises(CheckpointConflict) as caught:
        await Runner(linear(2, calls), store).run(T, start())
    assert caught.value.step == 0
    assert calls.counts == Counter(names(2))


async def test_two_runners_starting_the_same_trace_at_once() -> None:
    calls, store = Calls(), InMemoryBlobStore()
    graph = linear(3, calls)
    results = await asyncio.gather(
        Runner(graph, store).run(T, start()),
        Runner(graph, store).run(T, start()),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, CheckpointConflict)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(conflicts) == 1
    assert len(done) == 1
    assert calls.counts == Counter(names(3))


async def test_two_runners_resuming_the_same_trace_at_once() -> None:
    calls, store = Calls(), InMemoryBlobStore()
    graph = linear(4, calls)
    await Runner(graph, store, interrupt_before=["n1"]).run(T, start())
    results = await asyncio.gather(
        Runner(graph, store).resume(T), Runner(graph, store).resume(T), return_exceptions=True
    )
    assert sum(isinstance(r, CheckpointConflict) for r in results) == 1
    latest = await TypedCheckpointStore(store).load_latest(T, None)
    assert latest is not None
    assert latest.state == {"trail": names(4)}
    # n1 ran in both (at-least-once); the loser stopped at its first save.
    assert calls.counts == Counter({"n0": 1, "n1": 2, "n2": 1, "n3": 1})


# -- graph changes and fork -------------------------------------------------------------


async def test_resume_on_a_changed_graph_raises_graph_mismatch() -> None:
    store = FailingBlobStore()
    old = Runner(linear(3, Calls(), version=1), store, interrupt_before=["n1"])
    await old.run(T, start())
    new = Runner(linear(3, Calls(), version=2), store)
    with pytest.raises(GraphMismatch) as caught:
        await new.resume(T)
    error = caught.value
    assert error.expected == new.graph.hash_u64()
    assert error.actual == old.graph.hash_u64()
    message = str(error)
    assert f"0x{error.actual:016x}" in message
    assert "Finish it with the graph that started it" in message
    assert "allow_graph_change=True" in message
    assert "fork" in message
    assert store.saves == 2  # nothing written
    # The old graph can still finish it.
    assert (await old.resume(T)).status == "done"


async def test_fork_is_time_travel() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(5, calls), store)
    original = await runner.run(T, start())
    at_step_2 = store.saved[2]
    forked = await runner.fork(at_step_2.checkpoint_id, "trace-2")
    assert forked.step == 0
    assert forked.parent_id == at_step_2.checkpoint_id
    assert forked.current_node == "n2"
    assert forked.state == {"trail": ["n0", "n1"]}
    assert forked.metadata == {
        "source": "fork",
        "forked_from": str(at_step_2.checkpoint_id),
        "forked_from_step": 2,
    }
    result = await runner.resume("trace-2")
    assert result.status == "done"
    assert result.nodes_run == 3
    assert result.state == original.state
    assert calls.counts == Counter({"n0": 1, "n1": 1, "n2": 2, "n3": 2, "n4": 2})
    assert await store.steps(T) == [0, 1, 2, 3, 4, 5]  # the original is untouched
    assert await store.steps("trace-2") == [0, 1, 2, 3]


async def test_fork_onto_a_changed_graph_needs_the_override() -> None:
    store = FailingBlobStore()
    old = Runner(linear(4, Calls(), version=1), store, interrupt_before=["n2"])
    await old.run(T, start())
    paused_at = store.saved[-1].checkpoint_id
    calls = Calls()
    new = Runner(linear(4, calls, version=2), store)
    with pytest.raises(GraphMismatch, match="allow_graph_change=True"):
        await new.fork(paused_at, "trace-2")
    assert await store.traces() == [T]
    forked = await new.fork(paused_at, "trace-2", allow_graph_change=True)
    assert forked.current_node == "n2"
    result = await new.resume("trace-2")
    assert result.state == {"trail": names(4)}
    assert calls.counts == Counter(["n2", "n3"])
    # The new trace is the new graph's: the old runner cannot resume it.
    with pytest.raises(GraphMismatch):
        await old.resume("trace-2")


async def test_fork_refuses_a_node_the_graph_does_not_have() -> None:
    store = FailingBlobStore()
    await Runner(linear(4, Calls()), store, interrupt_before=["n3"]).run(T, start())
    smaller = Runner(linear(2, Calls()), store)
    with pytest.raises(GraphDefinitionError, match="'n3'"):
        await smaller.fork(store.saved[-1].checkpoint_id, "trace-2", allow_graph_change=True)


async def test_fork_errors() -> None:
    store = FailingBlobStore()
    runner = Runner(linear(2, Calls()), store)
    await runner.run(T, start())
    with pytest.raises(TraceNotFound):
        await runner.fork("01935f3c-7a51-7c4e-9a0b-2b7f9c1d0e11", "trace-2")
    with pytest.raises(CheckpointConflict):
        await runner.fork(store.saved[0].checkpoint_id, T)


async def test_fork_a_finished_checkpoint() -> None:
    calls, store = Calls(), FailingBlobStore()
    runner = Runner(linear(2, calls), store)
    await runner.run(T, start())
    await runner.fork(store.saved[-1].checkpoint_id, "trace-2")
    result = await runner.resume("trace-2")
    assert (result.status, result.nodes_run) == ("done", 0)


# -- routes and updates -----------------------------------------------------------------


def routed(router: Callable[[Any], Any], targets: Any) -> BuiltGraph[Any]:
    g: Graph[Any] = Graph("routed").add_node("a", lambda s: None).add_node("b", lambda s: None)
    g.add_edge(START, "a").add_conditional_edges("a", router, targets).add_edge("b", END)
    return g.build()


@pytest.mark.parametrize(
    ("route", "targets"),
    [
        ("c", ["b", END]),
        (None, ["b", END]),
        ("b", {"left": "b", "stop": END}),
        (["unhashable"], {"left": "b", "stop": END}),
    ],
)
async def test_a_router_returning_an_undeclared_target(route: Any, targets: Any) -> None:
    store = FailingBlobStore()
    with pytest.raises(InvalidRoute) as caught:
        await Runner(routed(lambda s: route, targets), store).run(T, start())
    assert caught.value.node == "a"
    assert caught.value.route == route
    assert "'a'" in str(caught.value)
    assert store.saves == 1  # the node's result was not saved


@pytest.mark.parametrize("route", ["left", "stop"])
async def test_path_map_routes(route: str) -> None:
    async def router(state: Any) -> str:
        return route

    result = await Runner(routed(router, {"left": "b", "stop": END}), InMemoryBlobStore()).run(
        T, start()
    )
    assert result.nodes_run == (2 if route == "left" else 1)


async def test_route_to_end_directly() -> None:
    result = await Runner(routed(lambda s: END, ["b", END]), InMemoryBlobStore()).run(T, start())
    assert (result.status, result.nodes_run) == ("done", 1)


@dataclasses.dataclass
class DC:
    count: int
    label: str = ""


class ST(msgspec.Struct):
    count: int
    label: str = ""


class PD(pydantic.BaseModel):
    count: int
    label: str = pydantic.Field(default="", alias="Label")


class TD(TypedDict):
    count: int
    label: str


def one_node(state_type: Any, node: Callable[[Any], Any]) -> BuiltGraph[Any]:
    g: Graph[Any] = Graph("one", state=state_type).add_node("a", node)
    return g.add_edge(START, "a").add_edge("a", END).build()


@pytest.mark.parametrize(
    ("state_type", "initial", "update", "expected"),
    [
        (dict, {"count": 1, "label": "x"}, {"count": 2}, {"count": 2, "label": "x"}),
        (dict, {"count": 1}, {"new": [1]}, {"count": 1, "new": [1]}),
        (TD, TD(count=1, label="x"), {"count": 2}, TD(count=2, label="x")),
        (DC, DC(1, "x"), {"count": 2}, DC(2, "x")),
        (DC, DC(1, "x"), DC(5), DC(5)),
        (ST, ST(1, "x"), {"count": 2}, ST(2, "x")),
        (ST, ST(1, "x"), ST(7, "y"), ST(7, "y")),
        (PD, PD(count=1, Label="x"), {"count": 2}, PD(count=2, Label="x")),
        (PD, PD(count=1, Label="x"), {"Label": "y"}, PD(count=1, Label="y")),
        (PD, PD(count=1, Label="x"), {"label": "z"}, PD(count=1, Label="z")),
        (DC, DC(1, "x"), None, DC(1, "x")),
    ],
)
async def test_partial_updates_merge(
    state_type: Any, initial: Any, update: Any, expected: Any
) -> None:
    store = InMemoryBlobStore()
    runner = Runner(one_node(state_type, lambda s: update), store)
    result = await runner.run(T, initial)
    assert result.state == expected
    assert type(result.state) is type(expected)
    # What was stored decodes to the same state.
    latest = await runner.store.load_latest(T, runner.graph.hash_u64())
    assert latest is not None
    assert latest.state == expected


@pytest.mark.parametrize(
    ("state_type", "initial", "update", "match"),
    [
        (dict, {"count": 1}, "count=2", "dict of keys"),
        (dict, {"count": 1}, [("count", 2)], "dict of keys"),
        (DC, DC(1), ["count"], "expected a DC"),
        (DC, DC(1), ST(1), "expected a DC"),
        (DC, DC(1), {"ghost": 1}, "unknown field"),
        (ST, ST(1), {"count": 1, "ghost": 1}, "'ghost'"),
        (PD, PD(count=1), {"ghost": 1}, "unknown field"),
        (PD, PD(count=1), {"count": "not a number"}, "does not fit"),
        (TD, TD(count=1, label=""), {"ghost": 1}, "'ghost'"),
    ],
)
async def test_a_node_returning_a_bad_update(
    state_type: Any, initial: Any, update: Any, match: str
) -> None:
    store = FailingBlobStore()
    runner = Runner(one_node(state_type, lambda s: update), store)
    with pytest.raises(InvalidUpdate, match=match) as caught:
        await runner.run(T, initial)
    assert "node 'a'" in str(caught.value)
    assert isinstance(caught.value, TypeError)
    assert store.saves == 1


async def test_sync_nodes_run_off_the_event_loop_thread() -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def sync_node(state: Any) -> None:
        threads["sync"] = threading.get_ident()

    async def async_node(state: Any) -> None:
        threads["async"] = threading.get_ident()

    def sync_router(state: Any) -> str:
        threads["router"] = threading.get_ident()
        return END

    g: Graph[Any] = Graph("threads").add_node("s", sync_node).add_node("a", async_node)
    g.add_edge(START, "s").add_edge("s", "a").add_conditional_edges("a", sync_router, [END])
    await Runner(g, InMemoryBlobStore()).run(T, start())
    assert threads["sync"] != loop_thread
    assert threads["router"] != loop_thread
    assert threads["async"] == loop_thread


async def test_a_callable_object_returning_a_coroutine_is_awaited() -> None:
    class Node:
        async def run(self, state: Any) -> dict[str, Any]:
            return {"n": 1}

        def __call__(self, state: Any) -> Any:
            return self.run(state)

    result = await Runner(one_node(dict, Node()), InMemoryBlobStore()).run(T, {})
    assert result.state == {"n": 1}


# -- stores -----------------------------------------------------------------------------


async def test_over_a_typed_store() -> None:
    calls = Calls()
    typed = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(dict, format="json"))
    runner = Runner(linear(3, calls), typed, interrupt_before=["n1"])
    assert runner.store is typed
    await runner.run(T, start())
    result = await runner.resume(T)
    assert result.state == {"trail": names(3)}


async def test_over_sqlite_across_runners(tmp_path: Path) -> None:
    calls = Calls()
    graph = linear(4, calls)
    async with SqliteBlobStore(tmp_path / "runs.db") as store:
        paused = await Runner(graph, store, interrupt_after=["n1"]).run(T, start())
        assert paused.next_node == "n2"
    async with SqliteBlobStore(tmp_path / "runs.db") as store:
        result = await Runner(graph, store, retention=RetentionPolicy.keep_latest(2)).resume(T)
        assert result.state == {"trail": names(4)}
        assert [info.step for info in await store.history(T)] == [4, 3]
    assert calls.counts == Counter(names(4))


async def test_dataclass_state_over_sqlite(tmp_path: Path) -> None:
    def bump(state: DC) -> dict[str, Any]:
        return {"count": state.count + 1}

    g: Graph[Any] = Graph("dc", state=DC).add_node("a", bump).add_node("b", bump)
    g.add_edge(START, "a").add_edge("a", "b").add_edge("b", END)
    async with SqliteBlobStore(tmp_path / "dc.db") as store:
        await Runner(g, store, interrupt_before=["b"]).run(T, DC(0, "x"))
        result = await Runner(g, store).resume(T, update={"label": "y"})
    assert result.state == DC(2, "y")


def test_runner_argument_checks() -> None:
    graph = linear(1, Calls())
    with pytest.raises(TypeError, match="checkpoint store"):
        Runner(graph, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TriggerPolicy"):
        Runner(graph, InMemoryBlobStore(), trigger="every_node")  # type: ignore[arg-type]
