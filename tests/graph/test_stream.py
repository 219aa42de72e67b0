"""Runner.stream: the events of a run, one by one, and a consumer that stops early."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import operator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest

from flowpoint import (
    END,
    START,
    CheckpointSaved,
    Graph,
    InMemoryBlobStore,
    Interrupted,
    NodeFinished,
    NodeStarted,
    RunEvent,
    RunFinished,
    Runner,
    TraceNotFound,
    interrupt,
)
from flowpoint.graph._runner import UPDATE_CHANNEL

T = "trace-1"


def brief(event: RunEvent) -> tuple[Any, ...]:
    """An event without its ids and times, to compare lists of them."""
    if isinstance(event, CheckpointSaved):
        assert event.info.checkpoint_id == event.checkpoint_id
        assert event.info.step == event.step
        return ("saved", event.step, event.info.current_node)
    if isinstance(event, NodeStarted):
        return ("started", event.step, event.task_id, event.attempt)
    if isinstance(event, NodeFinished):
        return ("finished", event.step, event.task_id, event.update)
    if isinstance(event, Interrupted):
        return ("interrupted", event.step, event.reason, event.node, event.payload)
    assert isinstance(event, RunFinished)
    return ("done", event.result.status, event.result.checkpoint.step)


def counter(name: str, calls: list[str]) -> Any:
    def node(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(name)
        return {"n": state.get("n", 0) + 1, name: True}

    return node


def line(calls: list[str]) -> Graph[dict[str, Any]]:
    g: Graph[dict[str, Any]] = Graph("line")
    g.add_node("a", counter("a", calls)).add_node("b", counter("b", calls))
    return g.add_edge(START, "a").add_edge("a", "b").add_edge("b", END)


async def test_a_linear_run_streams_each_event_in_order() -> None:
    store = InMemoryBlobStore()
    runner = Runner(line([]), store)
    events = [event async for event in runner.stream(T, {})]
    assert [brief(event) for event in events] == [
        ("saved", 0, "a"),
        ("started", 0, "a", 1),
        ("finished", 0, "a", {"n": 1, "a": True}),
        ("saved", 1, "b"),
        ("started", 1, "b", 1),
        ("finished", 1, "b", {"n": 2, "b": True}),
        ("saved", 2, None),
        ("done", "done", 2),
    ]
    assert all(event.trace_id == T for event in events)
    saved = [event.checkpoint_id for event in events if isinstance(event, CheckpointSaved)]
    history = await runner.store.history(T)
    assert saved == [info.checkpoint_id for info in reversed(history)]
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert final.result.state == {"n": 2, "a": True, "b": True}


async def test_run_is_the_stream_without_the_iteration() -> None:
    streamed = Runner(line([]), InMemoryBlobStore())
    events = [event async for event in streamed.stream(T, {})]
    ran = Runner(line([]), InMemoryBlobStore())
    result = await ran.run(T, {})
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert (final.result.state, final.result.nodes_run, final.result.status) == (
        result.state,
        result.nodes_run,
        result.status,
    )
    assert len(await streamed.store.history(T)) == len(await ran.store.history(T))


@dataclass
class Research:
    notes: Annotated[list[str], operator.add] = field(default_factory=list)
    report: str = ""


async def test_a_parallel_superstep_streams_an_event_per_task() -> None:
    """``papers`` finishes only once the consumer has seen ``web`` finish: a fixed order."""
    web_seen = asyncio.Event()

    async def web(state: Research) -> dict[str, Any]:
        return {"notes": ["web"]}

    async def papers(state: Research) -> dict[str, Any]:
        await web_seen.wait()
        return {"notes": ["papers"]}

    def write(state: Research) -> dict[str, Any]:
        return {"report": "/".join(state.notes)}

    g = Graph("par", state=Research)
    g.add_node("plan", lambda state: None)
    g.add_node("web", web).add_node("papers", papers).add_node("write", write)
    g.add_edge(START, "plan").add_edge("plan", "web").add_edge("plan", "papers")
    g.add_edge(["web", "papers"], "write").add_edge("write", END)
    store = InMemoryBlobStore()
    runner = Runner(g, store)
    seen = []
    last_saved = None
    async for event in runner.stream(T, Research()):
        seen.append(brief(event))
        if isinstance(event, CheckpointSaved):
            last_saved = event.checkpoint_id
        if isinstance(event, NodeFinished) and event.task_id == "web":
            # Its pending write is saved before the event says it finished.
            assert last_saved is not None
            writes = await runner.store.load_writes(last_saved)
            assert [write.task_id for write in writes] == ["web"]
            web_seen.set()
    assert seen == [
        ("saved", 0, "plan"),
        ("started", 0, "plan", 1),
        ("finished", 0, "plan", None),
        ("saved", 1, "papers, web"),
        ("started", 1, "papers", 1),
        ("started", 1, "web", 1),
        ("finished", 1, "web", {"notes": ["web"]}),
        ("finished", 1, "papers", {"notes": ["papers"]}),
        ("saved", 2, "write"),
        ("started", 2, "write", 1),
        ("finished", 2, "write", {"report": "papers/web"}),
        ("saved", 3, None),
        ("done", "done", 3),
    ]


async def test_a_static_pause_ends_the_stream_with_interrupted() -> None:
    runner = Runner(line([]), InMemoryBlobStore(), interrupt_before=["b"])
    events = [brief(event) async for event in runner.stream(T, {})]
    assert events[-3:] == [
        ("saved", 1, "b"),
        ("interrupted", 1, "before", "b", None),
        ("done", "interrupted", 1),
    ]
    resumed = [brief(event) async for event in runner.stream_resume(T, update={"x": 1})]
    assert resumed == [
        ("saved", 2, "b"),
        ("started", 2, "b", 1),
        ("finished", 2, "b", {"n": 2, "b": True}),
        ("saved", 3, None),
        ("done", "done", 3),
    ]


async def test_interrupt_in_a_node_streams_its_payload_then_the_answer_finishes() -> None:
    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"ok": interrupt({"question": "publish?"})}

    g = Graph("ask").add_node("ask", ask).add_edge(START, "ask").add_edge("ask", END)
    runner = Runner(g, InMemoryBlobStore())
    events = [brief(event) async for event in runner.stream(T, {})]
    assert events == [
        ("saved", 0, "ask"),
        ("started", 0, "ask", 1),
        ("saved", 1, "ask"),
        ("interrupted", 1, "interrupt", "ask", {"question": "publish?"}),
        ("done", "interrupted", 1),
    ]
    answered = [brief(event) async for event in runner.stream_resume(T, value=True)]
    assert answered == [
        ("saved", 2, "ask"),
        ("started", 2, "ask", 1),
        ("finished", 2, "ask", {"ok": True}),
        ("saved", 3, None),
        ("done", "done", 3),
    ]


@pytest.mark.parametrize("stop_after", [1, 2, 3, 4, 5, 6, 7])
async def test_a_consumer_that_stops_leaves_the_last_checkpoint_and_resume_finishes(
    stop_after: int,
) -> None:
    calls: list[str] = []
    runner = Runner(line(calls), InMemoryBlobStore())
    seen: list[RunEvent] = []
    async with aclosing(runner.stream(T, {})) as events:
        async for event in events:
            seen.append(event)
            if len(seen) == stop_after:
                break
    # The run did nothing past the last event the consumer took.
    last_saved = [event for event in seen if isinstance(event, CheckpointSaved)][-1]
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.checkpoint_id == last_saved.checkpoint_id
    assert calls == [event.node for event in seen if isinstance(event, NodeFinished)]
    before = list(calls)
    done = await runner.resume(T)
    assert done.status == "done"
    assert done.state == {"n": 2, "a": True, "b": True}
    # At least once: a node the consumer stopped in runs again; one whose
    # checkpoint was saved never does.
    rerun = calls[len(before) :]
    assert rerun == ["a", "b"][last_saved.step :]


@pytest.mark.parametrize("closing", ["aclosing", "collected"])
async def test_stopping_mid_superstep_cancels_the_branch_still_running(closing: str) -> None:
    cancelled: list[str] = []
    hang = asyncio.Event()

    async def fast(state: dict[str, Any]) -> dict[str, Any]:
        return {"fast": 1}

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        try:
            await hang.wait()
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return {"slow": 1}

    def build() -> Graph[dict[str, Any]]:
        g: Graph[dict[str, Any]] = Graph("two")
        g.add_node("fast", fast).add_node("slow", slow)
        g.add_node("go", lambda state: None).add_edge(START, "go")
        g.add_edge("go", "fast").add_edge("go", "slow")
        return g.add_edge("fast", END).add_edge("slow", END)

    runner = Runner(build(), InMemoryBlobStore())
    events = runner.stream(T, {})
    async with contextlib.AsyncExitStack() as stack:
        if closing == "aclosing":
            await stack.enter_async_context(aclosing(events))
        async for event in events:
            if isinstance(event, NodeFinished) and event.task_id == "fast":
                break
    if closing == "collected":
        del events  # Python closes an abandoned async generator on its loop
        gc.collect()
        for _ in range(100):
            if cancelled:
                break
            await asyncio.sleep(0)
    assert cancelled == ["slow"]
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.current_node == "fast, slow"
    writes = await runner.store.load_writes(latest.checkpoint_id)
    assert [(write.task_id, write.channel) for write in writes] == [("fast", UPDATE_CHANNEL)]
    hang.set()
    done = await runner.resume(T)
    assert done.state == {"fast": 1, "slow": 1}
    assert done.nodes_run == 1  # only slow ran again


async def test_a_failing_node_raises_from_the_loop_after_the_events_before_it() -> None:
    def boom(state: dict[str, Any]) -> None:
        raise LookupError("no such page")

    g = Graph("boom").add_node("boom", boom).add_edge(START, "boom").add_edge("boom", END)
    seen: list[tuple[Any, ...]] = []

    async def consume() -> None:
        async for event in Runner(g, InMemoryBlobStore()).stream(T, {}):
            seen.append(brief(event))

    with pytest.raises(LookupError, match="no such page"):
        await consume()
    assert seen == [("saved", 0, "boom"), ("started", 0, "boom", 1)]


async def test_events_are_frozen_and_name_their_trace() -> None:
    event = NodeStarted(T, 0, "a", "a")
    with pytest.raises(AttributeError):
        event.node = "b"  # type: ignore[misc]
    assert event.attempt == 1


async def test_a_run_started_inside_a_node_feeds_no_event_to_the_outer_stream() -> None:
    inner = Runner(line([]), InMemoryBlobStore())

    async def outer_async(state: dict[str, Any]) -> dict[str, Any]:
        result = await inner.run("inner-async", {})
        return {"async": result.state["n"]}

    def outer_sync(state: dict[str, Any]) -> dict[str, Any]:
        # A worker thread without a loop: run_sync runs the inner run on one of its own.
        return {"sync": inner.run_sync("inner-sync", {}).state["n"]}

    g: Graph[dict[str, Any]] = Graph("outer")
    g.add_node("outer_async", outer_async).add_node("outer_sync", outer_sync)
    g.add_edge(START, "outer_async").add_edge("outer_async", "outer_sync")
    g.add_edge("outer_sync", END)
    events = [event async for event in Runner(g, InMemoryBlobStore()).stream(T, {})]
    assert {event.trace_id for event in events} == {T}
    assert [brief(event) for event in events if isinstance(event, NodeFinished)] == [
        ("finished", 0, "outer_async", {"async": 2}),
        ("finished", 1, "outer_sync", {"sync": 2}),
    ]


async def test_streaming_a_trace_that_does_not_exist_raises_from_the_loop() -> None:
    runner = Runner(line([]), InMemoryBlobStore())

    async def consume() -> list[RunEvent]:
        return [event async for event in runner.stream_resume("nowhere")]

    with pytest.raises(TraceNotFound):
        await consume()


async def test_cancelling_the_consumer_cancels_the_run() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def hang(state: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("hang")
            raise

    g: Graph[dict[str, Any]] = Graph("hang").add_node("hang", hang)
    g.add_edge(START, "hang").add_edge("hang", END)
    runner = Runner(g, InMemoryBlobStore())

    async def consume() -> None:
        async with aclosing(runner.stream(T, {})) as events:
            async for _ in events:
                pass

    consumer = asyncio.ensure_future(consume())
    await started.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert cancelled == ["hang"]


async def test_a_pause_after_a_node_ends_the_stream_with_interrupted_after() -> None:
    runner = Runner(line([]), InMemoryBlobStore(), interrupt_after=["a"])
    events = [brief(event) async for event in runner.stream(T, {})]
    assert events[-2:] == [
        ("interrupted", 1, "after", "b", None),
        ("done", "interrupted", 1),
    ]
