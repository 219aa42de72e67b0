"""Graphs for ``flowpoint check`` on a store that holds a subgraph's child traces.

``outer`` runs ``inner`` as its node ``research``; ``inner``'s ``read`` fails while
``FLOWPOINT_TEST_FAIL_READ`` is set, which leaves a live child trace behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from flowpoint import END, START, Graph


@dataclass
class Report:
    topic: str
    notes: list[str] = field(default_factory=list)


def search(report: Report) -> dict[str, Any]:
    return {"notes": [*report.notes, f"pages on {report.topic}"]}


def read(report: Report) -> dict[str, Any]:
    if os.environ.get("FLOWPOINT_TEST_FAIL_READ"):
        raise RuntimeError("the reader fails")
    return {"notes": [*report.notes, "read"]}


inner_graph = Graph("research", state=Report)
inner_graph.add_node("search", search).add_node("read", read)
inner_graph.add_edge(START, "search").add_edge("search", "read").add_edge("read", END)
inner = inner_graph.build()

outer_graph = Graph("report", state=Report)
outer_graph.add_node("research", inner)
outer_graph.add_edge(START, "research").add_edge("research", END)
outer = outer_graph.build()
