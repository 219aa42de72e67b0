"""The state type flows from where it is declared to what comes back, for mypy.

``mypy --strict`` checks this file (tests/test_tools.py): each ``assert_type`` states
what mypy must infer. At run time the same calls run as plain tests.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
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
    SerdeCheckpointCodec,
    State,
    SyncCheckpointStore,
    TypedCheckpointStore,
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


def test_a_codec_takes_its_state_type() -> None:
    assert_type(SerdeCheckpointCodec(Ticket), SerdeCheckpointCodec[Ticket])
    assert_type(SerdeCheckpointCodec(state_type=Note), SerdeCheckpointCodec[Note])
    assert_type(SerdeCheckpointCodec(Ticket, format="json"), SerdeCheckpointCodec[Ticket])
    assert_type(SerdeCheckpointCodec(), SerdeCheckpointCodec[State])
    assert_type(SerdeCheckpointCodec(compression=None), SerdeCheckpointCodec[State])
    assert_type(SerdeCheckpointCodec(int | None), SerdeCheckpointCodec[Any])
    typed = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(Ticket))
    assert_type(typed, TypedCheckpointStore[Ticket])
    assert_type(TypedCheckpointStore(InMemoryBlobStore()), TypedCheckpointStore[State])
    assert_type(Runner(ticket_graph(), typed), Runner[Ticket])


async def test_stores_open_with_their_state_type() -> None:
    async with TypedCheckpointStore.open("memory://", Ticket) as typed:
        assert_type(typed, TypedCheckpointStore[Ticket])
        assert_type(Runner(ticket_graph(), typed), Runner[Ticket])
    async with TypedCheckpointStore.open("memory://", state_type=Note) as notes:
        assert_type(notes, TypedCheckpointStore[Note])
    async with TypedCheckpointStore.open("memory://", format="json") as plain:
        assert_type(plain, TypedCheckpointStore[State])
    with SyncCheckpointStore.open("memory://", Ticket) as blocking:
        assert_type(blocking, SyncCheckpointStore[Ticket])
        assert_type(blocking.load_latest("t", 1), Checkpoint[Ticket] | None)
    with SyncCheckpointStore.open("memory://") as default:
        assert_type(default, SyncCheckpointStore[State])


def test_the_codecs_typed_signatures_list_every_option() -> None:
    # The overloads that carry the state type to mypy repeat the codec's options: an
    # option added to __init__ alone would be refused by mypy in every user's code.
    implementation = inspect.signature(SerdeCheckpointCodec.__init__).parameters
    overloads = typing.get_overloads(SerdeCheckpointCodec.__init__)
    assert len(overloads) == 2
    for declared in overloads:
        assert list(inspect.signature(declared).parameters) == list(implementation)
