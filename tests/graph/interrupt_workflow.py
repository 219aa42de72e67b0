"""A workflow for the crash tests of interrupt(): gather -> review (asks twice) -> finish.

Run as ``python -m tests.graph.interrupt_workflow DB MARKS COMMAND [VALUE]``:

- ``run`` starts the trace; ``review`` pauses it at its first ``interrupt()``. The
  process prints its result, then waits for a human, as a server would: the test
  SIGKILLs it there.
- ``answer VALUE`` resumes it with ``value=VALUE`` (JSON).
- ``answer-slow VALUE`` does the same, but ``review``, past its first question,
  marks that it got there and hangs before its second: the test SIGKILLs it there.
- ``resume`` resumes it with no value.

``review`` appends ``"<event> <idempotency key>"`` lines to the file MARKS. Each
command prints the run's status, the pending interrupt and the state, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, NodeContext, Runner, RunResult, interrupt
from flowpoint.stores.sqlite import SqliteBlobStore

TRACE = "interrupt/1"
FIRST, SECOND = True, "On write-ahead logs"


def build(marks: str | None, *, hang: bool = False) -> BuiltGraph[Any]:
    """The workflow; with ``marks`` its review node records what it does."""

    def mark(event: str, ctx: NodeContext) -> None:
        if marks is not None:
            with open(marks, "a", encoding="ascii") as out:
                out.write(f"{event} {ctx.idempotency_key}\n")
                out.flush()
                os.fsync(out.fileno())

    def gather(state: dict[str, Any]) -> dict[str, Any]:
        return {"items": ["wal", "fsync"]}

    def review(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        mark("started", ctx)
        approved = interrupt({"ask": "approve?", "items": state["items"]})
        mark("answered", ctx)
        if hang:
            time.sleep(120)  # killed in here
        title = interrupt({"ask": "title?"})
        return {"approved": approved, "title": title}

    def finish(state: dict[str, Any]) -> dict[str, Any]:
        return {"summary": f"{state['title']}: {', '.join(state['items'])}"}

    g: Graph[Any] = Graph("interrupt-crash")
    g.add_node("gather", gather).add_node("review", review).add_node("finish", finish)
    g.add_edge(START, "gather").add_edge("gather", "review")
    return g.add_edge("review", "finish").add_edge("finish", END).build()


def describe(result: RunResult[Any]) -> str:
    return json.dumps(
        {"status": result.status, "interrupt": result.interrupt, "state": result.state},
        sort_keys=True,
    )


async def main(db: str, marks: str, command: str, value: str | None) -> None:
    async with SqliteBlobStore(db) as store:
        runner = Runner(build(marks, hang=command == "answer-slow"), store)
        if command == "run":
            result = await runner.run(TRACE, {"items": []})
        elif command in ("answer", "answer-slow"):
            assert value is not None
            result = await runner.resume(TRACE, value=json.loads(value))
        else:
            result = await runner.resume(TRACE)
    print(describe(result), flush=True)
    if command == "run":
        await asyncio.sleep(120)  # waiting for a human's answer: killed in here


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4], sys.argv[4] if len(sys.argv) > 4 else None))
