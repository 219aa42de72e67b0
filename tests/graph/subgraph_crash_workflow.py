"""A workflow with a subgraph node, for the crash tests: runs a trace, or resumes it.

Run as ``python -m tests.graph.subgraph_crash_workflow STORE_URL TRACE SIDE_EFFECTS``.
Every node appends ``"<trace> <node> <idempotency key>"`` to SIDE_EFFECTS when it
starts (flushed and fsynced: a side effect the outside world has seen), sleeps a
while that depends only on the node, then returns its update. The subgraph's
nodes run in its child traces (``<trace>/research@<step>``). When the run
reaches END the process prints ``done`` and the final state as JSON.

The graph runs the subgraph twice, in a loop; most of the time goes in it::

    plan -> research (subgraph: search -> read -> summarise) -> count
    count -> research (while rounds < 2) | write -> END
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import random
import sys
import time
from typing import Annotated, Any, TypedDict

from flowpoint import END, START, BuiltGraph, Graph, NodeContext, Runner, open_store

ROUNDS = 2
CHILD_NODES = ("search", "read", "summarise")


class Work(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]
    rounds: int


def effect(path: str | None, name: str, ctx: NodeContext) -> None:
    """Record that ``name`` started, then sleep its while; ``path=None`` does neither."""
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{ctx.trace_id} {name} {ctx.idempotency_key}\n")
        out.flush()
        os.fsync(out.fileno())
    low, high = (0.1, 0.3) if name in CHILD_NODES else (0.02, 0.06)
    time.sleep(random.Random(f"{name}/sleep").uniform(low, high))


def build(path: str | None) -> BuiltGraph[Work]:
    def logging(name: str) -> Any:
        def run(state: Work, ctx: NodeContext) -> dict[str, Any]:  # sync: in a thread
            effect(path, name, ctx)
            return {"log": [f"{name}:{state['rounds']}"]}

        return run

    child = Graph("research", state=Work)
    for name in CHILD_NODES:
        child.add_node(name, logging(name))
    child.add_edge(START, "search").add_edge("search", "read").add_edge("read", "summarise")
    child.add_edge("summarise", END)

    def count(state: Work, ctx: NodeContext) -> dict[str, Any]:
        effect(path, "count", ctx)
        return {"rounds": state["rounds"] + 1}

    def again(state: Work) -> str:
        return "research" if state["rounds"] < ROUNDS else "write"

    g = Graph("subgraph-crash", state=Work)
    g.add_node("plan", logging("plan")).add_node("research", child)
    g.add_node("count", count).add_node("write", logging("write"))
    g.add_edge(START, "plan").add_edge("plan", "research").add_edge("research", "count")
    g.add_conditional_edges("count", again, ["research", "write"])
    g.add_edge("write", END)
    return g.build()


def initial() -> Work:
    return {"topic": "wal", "log": [], "rounds": 0}


async def main(url: str, trace: str, side_effects: str) -> None:
    async with open_store(url) as store:
        runner = Runner(build(side_effects), store)
        if await store.load_latest(trace) is None:
            result = await runner.run(trace, initial())
        else:
            result = await runner.resume(trace)
    print(result.status, json.dumps(result.state, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
