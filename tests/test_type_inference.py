"""The state type flows from where it is declared to what comes back, for mypy.

``mypy --strict`` checks this file (tests/test_tools.py): each ``assert_type`` states
what mypy must infer. At run time the same calls run as plain tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict, assert_type

from flowpoint import (
    END,
    START,
    BuiltGraph,
    Checkpoint,
    Graph,
    InMemoryBlobStore,
    Runner,
    RunResult,
    State,
)


@dataclasses.dataclass
class Ticket:
    text: str


class Note(TypedDict):
    text: str


def keep(ticket: Ticket) -> None:
    return None


def ticket_graph() -> BuiltGraph[Ticket]:
    g = Graph("support", state=Ticket).add_node("keep", keep)
    return g.add_edge(START, "keep").add_edge("keep", END).build()


def test_a_graph_takes_its_state_type() -> None:
    assert_type(Graph("g", state=Ticket), Graph[Ticket])
    assert_type(Graph("g", state=Note), Graph[Note])
    assert_type(Graph("g", state=dict[str, int]), Graph[dict[str, int]])
    assert_type(Graph("g"), Graph[State])
    assert_type(Graph("g", state=Ticket).add_node("keep", keep), Graph[Ticket])
    assert_type(ticket_graph(), BuiltGraph[Ticket])
    # A type form that is not a class leaves the state type open.
    assert_type(Graph("g", state=int | None), Graph[Any])


async def test_a_runner_takes_its_graphs_state_type() -> None:
    runner = Runner(ticket_graph(), InMemoryBlobStore())
    assert_type(runner, Runner[Ticket])
    result = await runner.run("t", Ticket("hi"))
    assert_type(result, RunResult[Ticket])
    assert_type(result.state, Ticket)
    assert_type(result.checkpoint, Checkpoint[Ticket])
    assert result.state == Ticket("hi")
    unbuilt = Graph("support", state=Ticket).add_node("keep", keep)
    assert_type(
        Runner(unbuilt.add_edge(START, "keep").add_edge("keep", END), InMemoryBlobStore()),
        Runner[Ticket],
    )
