"""run_sync, resume_sync and stream_sync: from a script, and from inside a running loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from flowpoint import (
    END,
    START,
    Graph,
    InMemoryBlobStore,
    NodeFinished,
    RunFinished,
    Runner,
    interrupt,
)

T = "trace-1"


def graph(threads: list[str] | None = None) -> Graph[dict[str, Any]]:
    async def count(state: dict[str, Any]) -> dict[str, Any]:
        if threads is not None:
            threads.append(threading.current_thread().name)
        return {"n": state.get("n", 0) + 1}

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        return {"answer": interrupt("go?")}

    g: Graph[dict[str, Any]] = Graph("blocking").add_node("count", count).add_node("ask", ask)
    return g.add_edge(START, "count").add_edge("count", "ask").add_edge("ask", END)


def test_run_sync_and_resume_sync_without_a_loop() -> None:
    runner = Runner(graph(), InMemoryBlobStore())
    paused = runner.run_sync(T, {})
    assert (paused.status, paused.interrupt) == ("interrupted", "go?")
    done = runner.resume_sync(T, value=42)
    assert done.state == {"n": 1, "answer": 42}


async def test_run_sync_inside_a_running_loop_runs_on_a_private_loop() -> None:
    threads: list[str] = []
    runner = Runner(graph(threads), InMemoryBlobStore())
    paused = runner.run_sync(T, {})  # as a notebook cell would call it
    assert paused.interrupt == "go?"
    assert threads == ["flowpoint-sync"]
    assert runner.resume_sync(T, value=1).state == {"n": 1, "answer": 1}
    assert asyncio.get_running_loop().is_running()  # this loop was never blocked into a deadlock


def test_stream_sync_is_a_plain_iterator_of_the_same_events() -> None:
    runner = Runner(graph(), InMemoryBlobStore())
    kinds = [type(event).__name__ for event in runner.stream_sync(T, {})]
    assert kinds == [
        "CheckpointSaved",
        "NodeStarted",
        "NodeFinished",
        "CheckpointSaved",
        "NodeStarted",
        "CheckpointSaved",
        "Interrupted",
        "RunFinished",
    ]


async def test_stream_sync_inside_a_running_loop() -> None:
    runner = Runner(graph(), InMemoryBlobStore())
    events = list(runner.stream_sync(T, {}))
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert final.result.interrupt == "go?"


def test_leaving_stream_sync_early_stops_the_run_and_resume_sync_finishes() -> None:
    runner = Runner(graph(), InMemoryBlobStore())
    events = runner.stream_sync(T, {})
    for event in events:
        if isinstance(event, NodeFinished):
            break
    events.close()  # cancels the run there: the checkpoints saved stand
    history = asyncio.run(runner.store.history(T))
    assert [info.step for info in history] in ([0], [1, 0])
    paused = runner.resume_sync(T)
    assert paused.interrupt == "go?"
    assert runner.resume_sync(T, value="y").state == {"n": 1, "answer": "y"}


def test_every_blocking_call_of_a_runner_runs_on_one_loop() -> None:
    # A store whose driver belongs to the loop it first ran on (PostgreSQL's pool)
    # must serve the resume_sync after a run_sync: both run on the runner's loop.
    loops: list[asyncio.AbstractEventLoop] = []

    async def note(state: dict[str, Any]) -> dict[str, Any]:
        loops.append(asyncio.get_running_loop())
        return {"answer": interrupt("go?")}

    g: Graph[dict[str, Any]] = Graph("one-loop").add_node("note", note)
    runner = Runner(g.add_edge(START, "note").add_edge("note", END), InMemoryBlobStore())
    assert runner.run_sync(T, {}).status == "interrupted"
    assert runner.resume_sync(T, value=1).state == {"answer": 1}
    events = list(runner.stream_sync("trace-2", {}))
    assert isinstance(events[-1], RunFinished)
    assert len(loops) == 3
    assert loops[0] is loops[1] is loops[2]
