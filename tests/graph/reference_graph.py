"""The reference graph whose fingerprint is pinned in test_fingerprint.py.

Do not edit: its hash is a golden value, and every stored run of a graph hashes
the same way. Run ``python -m tests.graph.reference_graph`` to print the hash.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from decimal import Decimal
from typing import Literal
from uuid import UUID

from flowpoint import END, START, BuiltGraph, Graph


class Stage(enum.Enum):
    DRAFT = "draft"
    FINAL = "final"


@dataclasses.dataclass
class Source:
    url: str
    fetched_at: datetime | None
    score: float = 0.0


@dataclasses.dataclass
class ResearchState:
    run_id: UUID
    question: str
    stage: Stage
    sources: list[Source]
    budget: Decimal
    notes: dict[str, list[str]]
    mode: Literal["fast", "deep"] = "fast"
    pair: tuple[int, str] | None = None
    tags: frozenset[str] = frozenset()
    answer: bytes | None = None


def plan(state: ResearchState) -> None:
    return None


async def search(state: ResearchState) -> None:
    return None


def write(state: ResearchState) -> None:
    return None


def review(state: ResearchState) -> None:
    return None


def after_search(state: ResearchState) -> str:
    return "write"


def verdict(state: ResearchState) -> bool:
    return True


def reference_graph() -> BuiltGraph[ResearchState]:
    g: Graph[ResearchState] = Graph("research", state=ResearchState)
    g.add_node("plan", plan, version=2)
    g.add_node("search", search)
    g.add_node("write", write, version="2024-06")
    g.add_node("review", review)
    g.add_edge(START, "plan")
    g.add_edge("plan", "search")
    g.add_conditional_edges("search", after_search, ["search", "write", END])
    g.add_edge("write", "review")
    g.add_conditional_edges("review", verdict, {True: END, False: "plan"})
    return g.build()


if __name__ == "__main__":
    print(reference_graph().hash_u64())
