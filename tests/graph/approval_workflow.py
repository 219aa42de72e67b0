"""A workflow for the crash test of a human's update: draft -> (pause) -> send -> END.

Run as ``python -m tests.graph.approval_workflow DB COMMAND [STARTED]``:

- ``run`` starts the trace; it pauses before ``send``.
- ``approve`` resumes it with ``update={"approved": True}``; ``send`` then writes its
  idempotency key to the file STARTED and hangs, for the test to SIGKILL the
  process inside it.
- ``resume`` resumes it with no update.

Each command prints the run's status, its next node and its state as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, NodeContext, Runner
from flowpoint.stores.sqlite import SqliteBlobStore

TRACE = "approval/1"


def build(started: str | None) -> BuiltGraph[Any]:
    """The workflow; with ``started``, ``send`` marks that it began, then hangs."""

    def draft(state: dict[str, Any]) -> dict[str, Any]:
        return {"draft": "hello"}

    def send(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        if started is not None:
            written = Path(f"{started}.part")
            written.write_text(ctx.idempotency_key, encoding="ascii")
            written.replace(started)  # the file appears with its whole content
            time.sleep(120)  # killed in here
        return {"sent": state["approved"], "key": ctx.idempotency_key}

    g: Graph[Any] = Graph("approval").add_node("draft", draft).add_node("send", send)
    g.add_edge(START, "draft").add_edge("draft", "send").add_edge("send", END)
    return g.build()


async def main(db: str, command: str, started: str | None) -> None:
    async with SqliteBlobStore(db) as store:
        runner = Runner(build(started), store, interrupt_before=["send"])
        if command == "run":
            result = await runner.run(TRACE, {"approved": False, "sent": False})
        elif command == "approve":
            result = await runner.resume(TRACE, update={"approved": True})
        else:
            result = await runner.resume(TRACE)
    print(result.status, result.next_node, json.dumps(result.state, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
