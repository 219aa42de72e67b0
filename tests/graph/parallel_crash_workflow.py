"""A parallel workflow for the crash tests: runs a trace, or resumes it if it exists.

Run as ``python -m tests.graph.parallel_crash_workflow STORE_URL TRACE SIDE_EFFECTS``.
Every task appends ``"<trace> <task id> <idempotency key>"`` to SIDE_EFFECTS when it
starts (flushed and fsynced: a side effect the outside world has seen), sleeps a
while that depends only on the task, then returns its update. When the run
reaches END the process prints ``done`` and the final state as JSON.

The graph, five supersteps::

    plan -> web, docs, wiki (a 3-way fan-out) -> join -> split
    split -> Send("summarise", i) for 8 items (a map) -> reduce -> END

Tasks of one superstep finish in an order unrelated to their canonical one, so
a kill often leaves some of them saved as pending writes and others in flight.
"""

from __future__ import annotations

import asyncio
import operator
import sys
from typing import Annotated, Any, TypedDict

from flowpoint import END, START, BuiltGraph, Graph, NodeContext, Send, open_store
from tests.graph.support_crash import pause, record_effect, run_or_resume

BRANCHES = ("web", "docs", "wiki")
ITEMS = 8


class Work(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]
    total: Annotated[int, operator.add]
    summaries: Annotated[list[str], operator.add]
    report: str


class Effects:
    """Where tasks record that they ran; ``None`` runs without side effects or sleeps."""

    def __init__(self, path: str | None, trace: str) -> None:
        self.path = path
        self.trace = trace

    def ran(self, task: str, ctx: NodeContext, *, parallel: bool = False) -> None:
        if self.path is None:
            return
        record_effect(self.path, f"{self.trace} {task} {ctx.idempotency_key}")
        # Deterministic per task, and unrelated to the canonical order; the parallel
        # supersteps take most of the time, so most kills land in them.
        low, high = (0.15, 0.7) if parallel else (0.02, 0.08)
        pause(f"{task}/sleep", low, high)


def build(effects: Effects) -> BuiltGraph[Work]:
    def plan(state: Work, ctx: NodeContext) -> dict[str, Any]:
        effects.ran("plan", ctx)
        return {"log": ["plan"], "total": 1}

    def branch(name: str) -> Any:
        def run(state: Work, ctx: NodeContext) -> dict[str, Any]:  # sync: in a thread
            effects.ran(name, ctx, parallel=True)
            return {"log": [f"{name}:{state['topic']}"], "total": len(name)}

        return run

    def split(state: Work, ctx: NodeContext) -> dict[str, Any]:
        effects.ran("split", ctx)
        return {"log": [f"split after {len(state['log'])}"]}

    def fan(state: Work) -> list[Send]:
        return [Send("summarise", {"item": i, "seen": state["total"]}) for i in range(ITEMS)]

    def summarise(job: dict[str, int], ctx: NodeContext) -> dict[str, Any]:  # in a thread
        effects.ran(f"summarise#{job['item']}", ctx, parallel=True)
        return {"summaries": [f"item {job['item']} of {job['seen']}"], "total": job["item"]}

    def reduce(state: Work, ctx: NodeContext) -> dict[str, Any]:
        effects.ran("reduce", ctx)
        return {"report": f"{len(state['summaries'])} summaries, total {state['total']}"}

    g = Graph("parallel-crash", state=Work)
    g.add_node("plan", plan).add_node("split", split).add_node("summarise", summarise)
    g.add_node("reduce", reduce)
    g.add_edge(START, "plan")
    for name in BRANCHES:
        g.add_node(name, branch(name)).add_edge("plan", name)
    g.add_edge(list(BRANCHES), "split")
    g.add_conditional_edges("split", fan, ["summarise"])
    g.add_edge("summarise", "reduce").add_edge("reduce", END)
    return g.build()


def initial() -> Work:
    return {"topic": "wal", "log": [], "total": 0, "summaries": [], "report": ""}


async def main(url: str, trace: str, side_effects: str) -> None:
    async with open_store(url) as store:
        await run_or_resume(store, build(Effects(side_effects, trace)), trace, initial())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
