"""W4 fan-out agent step: 1 node -> 8 parallel tool nodes -> join, 200 supersteps.

The same graph on both engines: ``agent`` routes to the 8 tools (a router returning
the list of them), the tools run in one superstep, and a join
(``add_edge([tool_0, ..., tool_7], "agent")``) brings the run back to ``agent``. The
state is a message list with a reducer (``Annotated[list[str], operator.add]``):
``agent`` appends one message, each tool one result. After ``w4_supersteps // 2``
rounds ``agent`` routes to END; the run has ``2 * rounds + 1`` supersteps.

- ``fp.Runner.sqlite``: flowpoint's ``Runner`` (async) on ``sqlite:///`` (WAL,
  ``synchronous=FULL``): one checkpoint per superstep, and each tool's update saved
  as a pending write as it finishes.
- ``lg.StateGraph.SqliteSaver``: LangGraph's compiled ``StateGraph`` (``invoke``) on
  ``SqliteSaver``, at the same durability: one checkpoint per superstep, and each
  task's writes through ``put_writes``.

The nodes are the same sync functions on both (flowpoint runs them in worker
threads, LangGraph in its thread pool). Reported: the run's wall time, per
superstep (mean) and per round (agent and tools: p50, p90 of the time between two
calls of ``agent``), and bytes at rest.
"""

from __future__ import annotations

import asyncio
import operator
import random
import sqlite3
from collections.abc import Callable
from functools import cache
from pathlib import Path
from time import perf_counter_ns
from typing import Annotated, Any, TypedDict

from benchmarks.config import Sizes
from benchmarks.places import sqlite_bytes, sqlite_pragmas
from benchmarks.stats import latency_ms
from benchmarks.text import text

TOOLS = tuple(f"tool_{i}" for i in range(8))
TRACE = "w4-agent"


class AgentState(TypedDict):
    messages: Annotated[list[str], operator.add]
    rounds: int


@cache
def texts(sizes: Sizes) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The agent's message and each tool's result, per round (built before any clock)."""
    rng = random.Random(sizes.seed + 4)
    rounds = rounds_of(sizes) + 1
    agent = tuple(text(rng, sizes.w4_message_chars) for _ in range(rounds))
    tools = tuple(tuple(text(rng, sizes.w4_message_chars) for _ in TOOLS) for _ in range(rounds))
    return agent, tools


def rounds_of(sizes: Sizes) -> int:
    return sizes.w4_supersteps // 2


class Nodes:
    """The graph's functions, for one engine's END; ``calls`` times each call of ``agent``."""

    def __init__(self, sizes: Sizes, end: str) -> None:
        self.agent_texts, self.tool_texts = texts(sizes)
        self.rounds = rounds_of(sizes)
        self.end = end
        self.calls: list[int] = []

    def agent(self, state: AgentState) -> dict[str, Any]:
        self.calls.append(perf_counter_ns())
        done = state["rounds"]
        return {"messages": [self.agent_texts[done]], "rounds": done + 1}

    def tool(self, index: int) -> Callable[[AgentState], dict[str, Any]]:
        def run(state: AgentState) -> dict[str, Any]:
            return {"messages": [self.tool_texts[state["rounds"]][index]]}

        return run

    def route(self, state: AgentState) -> Any:
        return list(TOOLS) if state["rounds"] <= self.rounds else self.end


def initial() -> AgentState:
    return {"messages": [], "rounds": 0}


def _result(nodes: Nodes, wall_ns: int, state: AgentState, path: Path) -> dict[str, Any]:
    supersteps = 2 * nodes.rounds + 1
    expected = nodes.rounds * (len(TOOLS) + 1) + 1
    if len(state["messages"]) != expected:
        raise AssertionError(f"{len(state['messages'])} messages, expected {expected}")
    rounds = [b - a for a, b in zip(nodes.calls, nodes.calls[1:], strict=False)]
    return {
        "supersteps": supersteps,
        "wall_s": wall_ns / 1e9,
        "superstep_ms": wall_ns / 1e6 / supersteps,
        "round_ms": latency_ms(rounds),
        "bytes_at_rest": sqlite_bytes(path)["bytes"],
        "last_state_messages": len(state["messages"]),
    }


# -- flowpoint ---------------------------------------------------------------------------


def run_flowpoint(sizes: Sizes, directory: Path) -> dict[str, Any]:
    from flowpoint import END, START, Graph, Runner, open_store

    nodes = Nodes(sizes, END)
    g: Graph[Any] = Graph("w4", state=AgentState).add_node("agent", nodes.agent)
    for index, name in enumerate(TOOLS):
        g.add_node(name, nodes.tool(index))
    g.add_edge(START, "agent").add_conditional_edges("agent", nodes.route, [*TOOLS, END])
    g.add_edge(list(TOOLS), "agent")
    graph = g.build()
    path = directory / "checkpoints.db"

    async def run() -> tuple[int, AgentState]:
        async with open_store(f"sqlite:///{path}") as store:
            runner = Runner(graph, store, recursion_limit=sizes.w4_supersteps + 10)
            t0 = perf_counter_ns()
            result = await runner.run(TRACE, initial())
            wall = perf_counter_ns() - t0
        if result.status != "done":
            raise AssertionError(f"the run ended {result.status}")
        return wall, result.state

    wall, state = asyncio.run(run())
    conn = sqlite3.connect(path)
    try:
        settings = {"path": str(path), **sqlite_pragmas(conn)}
    finally:
        conn.close()
    return {**_result(nodes, wall, state, path), "settings": settings}


# -- LangGraph ---------------------------------------------------------------------------


def run_langgraph(sizes: Sizes, directory: Path) -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    nodes = Nodes(sizes, END)
    builder = StateGraph(AgentState)
    builder.add_node("agent", nodes.agent)
    for index, name in enumerate(TOOLS):
        builder.add_node(name, nodes.tool(index))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", nodes.route, [*TOOLS, END])
    builder.add_edge(list(TOOLS), "agent")
    path = directory / "checkpoints.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        # flowpoint's default durability: WAL, synchronous=FULL.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        settings = {"path": str(path), **sqlite_pragmas(conn)}
        saver = SqliteSaver(conn)
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        config: Any = {
            "configurable": {"thread_id": TRACE},
            "recursion_limit": sizes.w4_supersteps + 10,
        }
        t0 = perf_counter_ns()
        state = graph.invoke(initial(), config)
        wall = perf_counter_ns() - t0
    finally:
        conn.close()
    return {**_result(nodes, wall, state, path), "settings": settings}


ENGINES: dict[str, tuple[str, Callable[[Sizes, Path], dict[str, Any]]]] = {
    "fp.Runner.sqlite": ("flowpoint Runner (async) on SQLite", run_flowpoint),
    "lg.StateGraph.SqliteSaver": ("LangGraph StateGraph.invoke on SqliteSaver", run_langgraph),
}
