"""Three versions of a support graph, and the migrations between them.

- v1: ``classify -> draft -> send`` on :class:`TicketV1` (``reply``).
- v2: ``classify -> compose -> send`` on :class:`TicketV2`: ``reply`` renamed
  ``answer``, ``language`` added, ``draft`` renamed ``compose``.
- v3: v2 on :class:`TicketV3`, which adds ``priority``.

Runs pause before ``draft`` (v1) or ``compose`` (v2, v3) with the runners of
:func:`runner`. The module is also what the command-line tests name
(``tests.graph.support_versions:graph_v2``), and ``python -m`` of it seeds a store
(see :func:`main`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, Runner, open_store


@dataclass
class TicketV1:
    text: str
    category: str = ""
    reply: str = ""


@dataclass
class TicketV2:
    text: str
    category: str = ""
    answer: str = ""
    language: str = "en"


@dataclass
class TicketV3:
    text: str
    category: str = ""
    answer: str = ""
    language: str = "en"
    priority: int = 0


def classify(ticket: Any) -> dict[str, str]:
    return {"category": "billing" if "invoice" in ticket.text else "other"}


def draft(ticket: TicketV1) -> dict[str, str]:
    return {"reply": f"About your {ticket.category} question"}


def compose(ticket: TicketV2) -> dict[str, str]:
    return {"answer": f"[{ticket.language}] About your {ticket.category} question"}


def send_v1(ticket: TicketV1) -> dict[str, str]:
    return {"reply": ticket.reply + " (sent)"}


def send(ticket: TicketV2) -> dict[str, str]:
    return {"answer": ticket.answer + " (sent)"}


def graph(state: Any, writer: str) -> Graph[Any]:
    """A version of the graph, its migrations not declared yet."""
    g: Graph[Any] = Graph("support", state=state)
    g.add_node("classify", classify)
    g.add_node(writer, draft if writer == "draft" else compose)
    g.add_node("send", send_v1 if writer == "draft" else send)
    g.add_edge(START, "classify").add_edge("classify", writer)
    g.add_edge(writer, "send").add_edge("send", END)
    return g


def v1_to_v2(old: TicketV1) -> TicketV2:
    return TicketV2(text=old.text, category=old.category, answer=old.reply, language="en")


def v2_to_v3(old: TicketV2) -> TicketV3:
    return TicketV3(
        text=old.text,
        category=old.category,
        answer=old.answer,
        language=old.language,
        priority=2 if old.category == "billing" else 1,
    )


def v1_to_v3(old: TicketV1) -> TicketV3:
    return v2_to_v3(v1_to_v2(old))


graph_v1 = graph(TicketV1, "draft").build()
V1 = graph_v1.hash_u64()
V2 = graph(TicketV2, "compose").hash_u64()
V3 = graph(TicketV3, "compose").hash_u64()

_v2 = graph(TicketV2, "compose")
_v2.migration(from_hash=V1, state=TicketV1, nodes={"draft": "compose"})(v1_to_v2)
graph_v2 = _v2.build()
"""v2, with the migration from v1."""

_v3 = graph(TicketV3, "compose")
_v3.migration(from_hash=V1, state=TicketV1, nodes={"draft": "compose"}, to_hash=V2)(v1_to_v2)
_v3.migration(from_hash=V2, state=TicketV2)(v2_to_v3)
graph_v3 = _v3.build()
"""v3, with migrations from v2 and (through v2) from v1."""

_v3_from_v1 = graph(TicketV3, "compose")
_v3_from_v1.migration(from_hash=V1, state=TicketV1, nodes={"draft": "compose"})(v1_to_v3)
graph_v3_from_v1 = _v3_from_v1.build()
"""v3 with a migration from v1 only: it refuses traces of v2."""


def picky_v1_to_v2(old: TicketV1) -> TicketV2:
    if old.category != "billing":
        raise ValueError(f"no answer for a {old.category!r} ticket")
    return v1_to_v2(old)


def slow_v1_to_v2(old: TicketV1) -> TicketV2:
    time.sleep(0.05)  # for a test to kill `flowpoint migrate --apply` in the middle
    return v1_to_v2(old)


def _v2_with(function: Any) -> BuiltGraph[Any]:
    g = graph(TicketV2, "compose")
    g.migration(from_hash=V1, state=TicketV1, nodes={"draft": "compose"})(function)
    return g.build()


graph_v2_picky = _v2_with(picky_v1_to_v2)
"""v2 whose migration fails for tickets that are not about billing."""
graph_v2_slow = _v2_with(slow_v1_to_v2)
"""v2 whose migration takes 50 ms a trace."""


def runner(graph: BuiltGraph[Any], store: Any) -> Runner[Any]:
    """The runner of a version: it pauses before the node that writes the answer."""
    writer = "draft" if "draft" in graph.nodes else "compose"
    return Runner(graph, store, interrupt_before=[writer])


TEXTS = ("Where is my invoice?", "Hello", "My invoice is wrong", "Thanks", "Refund?")


async def seed(url: str, paused: int, finished: int) -> None:
    """Traces of v1 in ``url``: ``paused-N`` paused before ``draft``, ``done-N`` finished."""
    async with open_store(url) as store:
        pausing = runner(graph_v1, store)
        finishing = Runner(graph_v1, store)
        for n in range(paused):
            await pausing.run(f"paused-{n}", TicketV1(TEXTS[n % len(TEXTS)]))
        for n in range(finished):
            await finishing.run(f"done-{n}", TicketV1(TEXTS[n % len(TEXTS)]))


def main(url: str, paused: int, finished: int) -> None:
    """``python -m tests.graph.support_versions URL PAUSED FINISHED``: seed a store."""
    asyncio.run(seed(url, paused, finished))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
