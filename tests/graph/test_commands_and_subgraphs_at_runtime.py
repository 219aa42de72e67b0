"""Commands and subgraphs with the rest of the runtime: streams, interrupt() and retries."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest

from flowpoint import (
    END,
    START,
    Command,
    Graph,
    InMemoryBlobStore,
    NodeFinished,
    NodeStarted,
    Retry,
    Runner,
    WorkflowError,
    interrupt,
)


class Work(TypedDict):
    log: Annotated[list[str], operator.add]


async def test_a_stream_shows_the_command_a_node_returned_and_not_a_subgraphs_events() -> None:
    child = Graph("child", state=Work).add_node("inner", lambda s: {"log": ["inner"]})
    child.add_edge(START, "inner").add_edge("inner", END)
    g = Graph("g", state=Work)
    g.add_node("route", lambda s: Command(update={"log": ["route"]}, goto="sub"), goto=["sub"])
    g.add_node("sub", child).add_edge(START, "route").add_edge("sub", END)
    events = [event async for event in Runner(g, InMemoryBlobStore()).stream("t", {"log": []})]
    finished = [event for event in events if isinstance(event, NodeFinished)]
    assert [(event.node, event.trace_id) for event in finished] == [("route", "t"), ("sub", "t")]
    assert finished[0].update == Command({"log": ["route"]}, ["sub"])
    # The subgraph's own nodes run in its trace, without events in the parent's stream.
    started = [event.node for event in events if isinstance(event, NodeStarted)]
    assert started == ["route", "sub"]


async def test_interrupt_inside_a_subgraph_is_refused_clearly() -> None:
    def ask(state: Work) -> dict[str, Any]:
        return {"log": [str(interrupt("ok?"))]}

    child = Graph("child", state=Work).add_node("ask", ask)
    child.add_edge(START, "ask").add_edge("ask", END)
    g = Graph("g", state=Work).add_node("sub", child).add_edge(START, "sub").add_edge("sub", END)
    with pytest.raises(WorkflowError, match=r"subgraph node 'sub' paused .*cannot pause"):
        await Runner(g, InMemoryBlobStore()).run("t", {"log": []})


async def test_a_retried_subgraph_node_resumes_its_child_trace() -> None:
    calls: Counter[str] = Counter()

    def node(name: str, fails: int = 0) -> Any:
        def body(state: Work) -> dict[str, Any]:
            calls[name] += 1
            if calls[name] <= fails:
                raise TimeoutError(f"{name} timed out")
            return {"log": [name]}

        return body

    child = Graph("child", state=Work).add_node("a", node("a")).add_node("b", node("b", 1))
    child.add_edge(START, "a").add_edge("a", "b").add_edge("b", END)
    g = Graph("g", state=Work)
    g.add_node("sub", child, retry=Retry(max_attempts=2, backoff=0, on=TimeoutError))
    g.add_edge(START, "sub").add_edge("sub", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", {"log": []})
    assert result.state["log"] == ["a", "b"]
    assert calls == {"a": 1, "b": 2}  # the second try went on inside the child trace


async def test_a_goto_saved_before_an_interrupt_routes_after_the_answer() -> None:
    calls: Counter[str] = Counter()

    def fast(state: Work) -> Command:
        calls["fast"] += 1
        return Command(update={"log": ["fast"]}, goto="chosen")

    def ask(state: Work) -> dict[str, Any]:
        calls["ask"] += 1
        return {"log": [f"ask: {interrupt('ok?')}"]}

    g = Graph("g", state=Work).add_node("plan", lambda s: None)
    g.add_node("fast", fast, goto=["chosen", "other"]).add_node("ask", ask)
    g.add_node("chosen", lambda s: {"log": ["chosen"]}).add_node("other", lambda s: None)
    g.add_edge(START, "plan").add_edge("plan", "fast").add_edge("plan", "ask")
    g.add_edge("fast", "other").add_edge("ask", END)
    g.add_edge("chosen", END).add_edge("other", END)
    runner = Runner(g, InMemoryBlobStore())
    paused = await runner.run("t", {"log": []})
    assert paused.status == "interrupted"
    result = await runner.resume("t", value="yes")
    assert result.state["log"] == ["ask: yes", "fast", "chosen"]
    assert calls == {"fast": 1, "ask": 2}  # fast's output and goto were carried over
