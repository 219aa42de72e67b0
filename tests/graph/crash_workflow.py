"""A workflow for the crash tests: runs a trace, or resumes it if it exists.

Run as ``python -m tests.graph.crash_workflow DB SIDE_EFFECTS``. Each node appends
``"<node> <visit> <idempotency key>"`` to SIDE_EFFECTS (flushed and fsynced: a side
effect the outside world has seen), sleeps 50-150 ms, then returns its update. The
run checkpoints after every node into the SQLite file DB. When the run reaches END
the process prints ``done`` and the final state as JSON.

The graph: s0 -> s1 -> s2 -> s3 -> s4 -> s5 -> (back to s3 twice) -> s6 -> s7 -> END,
so s3, s4 and s5 are visited three times: 14 node runs in all.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, NodeContext
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.graph.support_crash import pause, record_effect, run_or_resume

TRACE = "crash/workflow"
NODES = [f"s{i}" for i in range(8)]
LOOPS = 2


def visit_of(state: dict[str, Any], node: str) -> int:
    """The visit of ``node`` that runs next from ``state`` (1 for the first)."""
    return int(state["visits"].get(node, 0)) + 1


def make_node(name: str, side_effects: str | None) -> Any:
    def node(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:  # sync: in a thread
        visit = visit_of(state, name)
        if side_effects is not None:
            record_effect(side_effects, f"{name} {visit} {ctx.idempotency_key}")
            pause(f"{name}/{visit}", 0.05, 0.15)
        update: dict[str, Any] = {
            "visits": {**state["visits"], name: visit},
            "log": [*state["log"], f"{name}#{visit}"],
            "total": (state["total"] * 31 + len(state["log"]) + visit) % 2**61,
        }
        if name == "s5":
            update["loops"] = state["loops"] + 1
        return update

    return node


def again(state: dict[str, Any]) -> str:
    return "s3" if state["loops"] <= LOOPS else "s6"


def build(side_effects: str | None) -> BuiltGraph[Any]:
    """The workflow; without ``side_effects`` its nodes neither write nor sleep."""
    g: Graph[Any] = Graph("crash-workflow")
    for name in NODES:
        g.add_node(name, make_node(name, side_effects))
    g.add_edge(START, "s0")
    for source, target in itertools.pairwise(NODES[:6]):
        g.add_edge(source, target)
    g.add_conditional_edges("s5", again, ["s3", "s6"])
    g.add_edge("s6", "s7").add_edge("s7", END)
    return g.build()


def initial() -> dict[str, Any]:
    return {"visits": {}, "log": [], "total": 1, "loops": 0}


async def main(db: str, side_effects: str) -> None:
    async with SqliteBlobStore(db) as store:
        await run_or_resume(store, build(side_effects), TRACE, initial())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
