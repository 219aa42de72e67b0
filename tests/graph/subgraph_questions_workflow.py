"""A workflow whose subgraph asks the human questions, for the crash tests.

Run as ``python -m tests.graph.subgraph_questions_workflow STORE_URL TRACE``. It
runs the trace (or resumes it if it is stored), and answers every question the
run pauses at, ``"q<i>"`` with ``"a<i>"``, until the run reaches END; then it
prints ``done`` and the final state as JSON. The questions are asked by a node of
the subgraph, one after another, so a kill lands between a child trace's pause
and its parent's as often as anywhere::

    plan -> interview (subgraph: prep -> ask, which asks QUESTIONS questions) -> write
"""

from __future__ import annotations

import asyncio
import json
import operator
import sys
from typing import Annotated, Any, TypedDict

from flowpoint import END, START, BuiltGraph, Graph, Runner, interrupt, open_store
from tests.graph.support_crash import pause

QUESTIONS = 4


class Work(TypedDict):
    log: Annotated[list[str], operator.add]


def answer_to(question: str) -> str:
    """The answer this workflow gives to ``question``: ``"q2"`` gets ``"a2"``."""
    return f"a{question.removeprefix('q')}"


def build() -> BuiltGraph[Work]:
    def ask(state: Work) -> dict[str, Any]:
        answers = []
        for number in range(QUESTIONS):
            pause(f"ask/{number}", 0.01, 0.05)
            answers.append(f"q{number}={interrupt(f'q{number}')}")
        return {"log": answers}

    def logging(name: str) -> Any:
        def run(state: Work) -> dict[str, Any]:
            pause(name, 0.02, 0.06)
            return {"log": [name]}

        return run

    child = Graph("interview", state=Work).add_node("prep", logging("prep")).add_node("ask", ask)
    child.add_edge(START, "prep").add_edge("prep", "ask").add_edge("ask", END)
    g = Graph("questions", state=Work).add_node("plan", logging("plan"))
    g.add_node("interview", child).add_node("write", logging("write"))
    g.add_edge(START, "plan").add_edge("plan", "interview").add_edge("interview", "write")
    g.add_edge("write", END)
    return g.build()


EXPECTED: Work = {"log": ["plan", "prep", *(f"q{n}=a{n}" for n in range(QUESTIONS)), "write"]}
"""The final state of every trace, whatever kills came between."""


async def main(url: str, trace: str) -> None:
    async with open_store(url) as store:
        runner = Runner(build(), store)
        if await store.load_latest(trace) is None:
            result = await runner.run(trace, {"log": []})
        else:
            result = await runner.resume(trace)
        while result.status == "interrupted":
            result = await runner.resume(trace, value=answer_to(result.interrupt))
        print(result.status, json.dumps(result.state, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
