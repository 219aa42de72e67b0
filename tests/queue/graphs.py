"""Graphs the queue's tests submit and their workers serve."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, InMemoryBlobStore, NodeContext, Runner

NODES = ("n1", "n2", "n3", "n4", "n5")


def chain(log: Path | None = None, delay: float = 0.0) -> BuiltGraph[dict[str, Any]]:
    """Five nodes in a row; each waits ``delay`` seconds, logs ``trace node pid``, counts."""

    def node(name: str) -> Any:
        async def run(state: dict[str, Any], context: NodeContext) -> dict[str, Any]:
            if delay:
                await asyncio.sleep(delay)
            if log is not None:
                with open(log, "a", encoding="utf-8") as file:  # noqa: ASYNC230 - a short append
                    file.write(f"{context.trace_id} {name} {os.getpid()}\n")
            return {"visited": [*state["visited"], name]}

        return run

    g = Graph("chain", state=dict)
    for name in NODES:
        g.add_node(name, node(name))
    g.add_edge(START, NODES[0])
    for before, after in itertools.pairwise(NODES):
        g.add_edge(before, after)
    g.add_edge(NODES[-1], END)
    return g.build()


def approval() -> BuiltGraph[dict[str, Any]]:
    """draft -> send; a worker told ``interrupt_before=["send"]`` pauses before sending."""
    g = Graph("approval", state=dict)
    g.add_node("draft", lambda state: {"text": f"reply to {state['ticket']}", "drafts": 1})
    g.add_node("send", lambda state: {"sent": state["text"], "approved_by": state.get("by")})
    g.add_edge(START, "draft")
    g.add_edge("draft", "send")
    g.add_edge("send", END)
    return g.build()


def failing() -> BuiltGraph[dict[str, Any]]:
    """One node that raises."""

    def explode(state: dict[str, Any]) -> None:
        raise RuntimeError(f"no luck with {state['n']}")

    g = Graph("failing", state=dict)
    g.add_node("explode", explode)
    g.add_edge(START, "explode")
    g.add_edge("explode", END)
    return g.build()


def start(n: int = 0) -> dict[str, Any]:
    return {"visited": [], "n": n}


SERVED = chain()
"""What ``flowpoint worker tests.queue.graphs:SERVED`` serves."""
APPROVAL_RUNNER = Runner(approval(), InMemoryBlobStore(), interrupt_before=["send"])
"""A runner whose interrupts ``flowpoint worker tests.queue.graphs:APPROVAL_RUNNER`` applies."""
