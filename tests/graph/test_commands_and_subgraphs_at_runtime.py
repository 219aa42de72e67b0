"""Commands and subgraphs with the rest of the runtime: streams, interrupt() and retries."""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest

from flowpoint import (
    END,
    START,
    Command,
    CorruptCheckpoint,
    Graph,
    InMemoryBlobStore,
    NodeFinished,
    NodeStarted,
    RetentionPolicy,
    Retry,
    Runner,
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


def asking_parent() -> Graph[Work]:
    """A graph whose subgraph node's first node asks two questions, then ``end`` runs."""

    def ask(state: Work) -> dict[str, Any]:
        first = interrupt({"q": "first?"})
        second = interrupt({"q": "second?"})
        return {"log": [f"ask:{first}:{second}"]}

    child = Graph("child", state=Work).add_node("ask", ask)
    child.add_node("after", lambda s: {"log": ["after"]})
    child.add_edge(START, "ask").add_edge("ask", "after").add_edge("after", END)
    g = Graph("g", state=Work).add_node("sub", child).add_node("end", lambda s: {"log": ["end"]})
    return g.add_edge(START, "sub").add_edge("sub", "end").add_edge("end", END)


CHILD = "t/sub@0"


async def test_an_interrupt_inside_a_subgraph_pauses_the_parent_for_its_answers() -> None:
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store)
    first = await runner.run("t", {"log": []})
    assert (first.status, first.interrupt, first.next_node) == (
        "interrupted",
        {"q": "first?"},
        "sub",
    )
    # Resumed without an answer, it stays paused, as at any interrupt().
    assert (await runner.resume("t")).interrupt == {"q": "first?"}
    second = await runner.resume("t", value="yes")
    assert (second.status, second.interrupt) == ("interrupted", {"q": "second?"})
    done = await runner.resume("t", value="no")
    assert done.status == "done"
    assert done.state["log"] == ["ask:yes:no", "after", "end"]
    # Each checkpoint of the child trace counts the parent's answers it has had.
    counts = [info.metadata.get("parent_answers") for info in await store.history(CHILD)]
    assert counts[-1] is None  # its start, before any answer
    assert counts[0] == 2
    assert sorted(set(counts) - {None}) == [1, 2]


async def test_a_crash_between_the_childs_pause_and_the_parents_asks_again() -> None:
    # The child paused at its second question (saved), the parent's pause was not saved:
    # the parent's last checkpoint holds the first answer only. Its resume must ask the
    # second question again, not hand the first answer to it.
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store)
    await runner.run("t", {"log": []})
    await runner.resume("t", value="yes")
    [paused, *_] = await store.history("t")
    assert await store.delete(paused.checkpoint_id)
    await asks_the_second_question_again(runner)


async def asks_the_second_question_again(runner: Runner[Work]) -> None:
    """Resumed after the crash, ``t`` asks the second question, then takes its answer."""
    again = await runner.resume("t")
    assert (again.status, again.interrupt) == ("interrupted", {"q": "second?"})
    done = await runner.resume("t", value="no")
    assert done.state["log"] == ["ask:yes:no", "after", "end"]


async def test_a_crash_after_an_answer_reached_the_child_goes_on_inside_it() -> None:
    # The child saved the answer and then the process died, before its next question.
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store)
    await runner.run("t", {"log": []})
    await runner.resume("t", value="yes")
    [parent_paused, *_] = await store.history("t")
    [child_paused, child_answered, *_] = await store.history(CHILD)
    assert child_answered.metadata["source"] == "resume"
    for gone in (parent_paused, child_paused):
        assert await store.delete(gone.checkpoint_id)
    await asks_the_second_question_again(runner)


async def test_an_interrupt_inside_a_subgraph_with_only_the_latest_kept() -> None:
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store, retention=RetentionPolicy.keep_latest(1))
    await runner.run("t", {"log": []})
    await runner.resume("t", value="yes")
    assert len(await store.history(CHILD)) == 1
    done = await runner.resume("t", value="no")
    assert done.state["log"] == ["ask:yes:no", "after", "end"]


async def test_a_damaged_count_of_answers_is_refused() -> None:
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store)
    await runner.run("t", {"log": []})
    [child_paused] = [
        blob
        for info in await store.history(CHILD)
        if (blob := await store.load(info.checkpoint_id)) is not None
    ][:1]
    damaged = dataclasses.replace(
        child_paused, metadata={**child_paused.metadata, "parent_answers": "two"}
    )
    await store.delete(child_paused.checkpoint_id)
    await store.save(damaged)
    with pytest.raises(CorruptCheckpoint, match="parent_answers"):
        await runner.resume("t", value="yes")


async def test_a_damaged_child_step_in_the_parents_interrupt_is_refused() -> None:
    store = InMemoryBlobStore()
    graph = asking_parent()
    runner = Runner(graph, store)
    await runner.run("t", {"log": []})
    latest = await runner.store.load_latest("t", graph.hash_u64())
    assert latest is not None
    [record] = latest.cursor["interrupts"]
    assert record["child_step"] == 0
    cursor = {**latest.cursor, "interrupts": [{**record, "child_step": -1}]}
    damaged = latest.child(latest.current_node, latest.state, cursor=cursor)
    await runner.store.save_with_trace("t", damaged, graph.hash_u64())
    with pytest.raises(CorruptCheckpoint, match="the interrupt of task 'sub' names step -1"):
        await runner.resume("t", value="yes")


async def test_a_fork_of_a_parent_paused_in_a_subgraph_has_a_child_trace_of_its_own() -> None:
    store = InMemoryBlobStore()
    runner = Runner(asking_parent(), store)
    await runner.run("t", {"log": []})
    paused = await runner.resume("t", value="yes")
    await runner.fork(paused.checkpoint.checkpoint_id, "f")
    # The fork replays the answers given so far to a child trace of its own.
    assert (await runner.resume("f", value="no")).state["log"] == ["ask:yes:no", "after", "end"]
    assert (await runner.resume("t", value="maybe")).state["log"] == [
        "ask:yes:maybe",
        "after",
        "end",
    ]
    assert await store.traces() == ["f", "f/sub@0", "t", "t/sub@0"]


async def test_the_childs_finished_nodes_do_not_run_again_across_answers() -> None:
    calls: Counter[str] = Counter()

    def prep(state: Work) -> dict[str, Any]:
        calls["prep"] += 1
        return {"log": ["prep"]}

    def ask(state: Work) -> dict[str, Any]:
        calls["ask"] += 1
        return {"log": [f"ask:{interrupt('first?')}:{interrupt('second?')}"]}

    child = Graph("child", state=Work).add_node("prep", prep).add_node("ask", ask)
    child.add_edge(START, "prep").add_edge("prep", "ask").add_edge("ask", END)
    g = Graph("g", state=Work).add_node("sub", child).add_edge(START, "sub").add_edge("sub", END)
    store = InMemoryBlobStore()
    runner = Runner(g, store)
    await runner.run("t", {"log": []})
    await runner.resume("t", value=1)
    done = await runner.resume("t", value=2)
    assert done.state["log"] == ["prep", "ask:1:2"]
    assert calls == {"prep": 1, "ask": 3}  # ask reran from the top for each answer
    assert await store.traces() == ["t", "t/sub@0"]  # one child trace throughout


async def test_parallel_subgraphs_that_ask_are_answered_one_after_the_other() -> None:
    def asking(name: str) -> Graph[Work]:
        def ask(state: Work) -> dict[str, Any]:
            return {"log": [f"{name}:{interrupt(f'{name}?')}"]}

        child = Graph(f"child-{name}", state=Work).add_node("ask", ask)
        return child.add_edge(START, "ask").add_edge("ask", END)

    def last(parent: Work, final: Work) -> dict[str, Any]:
        return {"log": final["log"][-1:]}

    g = Graph("g", state=Work).add_node("fan", lambda s: {"log": ["fan"]})
    g.add_node("a", asking("a"), output=last).add_node("b", asking("b"), output=last)
    g.add_edge(START, "fan").add_edge("fan", "a").add_edge("fan", "b")
    g.add_edge("a", END).add_edge("b", END)
    runner = Runner(g, InMemoryBlobStore())
    first = await runner.run("t", {"log": []})
    assert first.interrupt == "a?"
    second = await runner.resume("t", value="yes")
    assert (second.status, second.interrupt) == ("interrupted", "b?")
    done = await runner.resume("t", value="no")
    assert done.status == "done"
    assert done.state["log"] == ["fan", "a:yes", "b:no"]


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
