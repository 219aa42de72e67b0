"""A built graph laid out for drawing: boxes and arrows, in an order of their own.

The layout is decided here, once; :mod:`._mermaid` and :mod:`._dot` only spell it
in their languages. Nothing depends on the order of declarations: nodes come in
breadth-first order from ``START`` (siblings by name), arrows by source, then
target, so two graphs with the same fingerprint look the same, and the text
changes only when the graph does.

A join draws as a box of its own: its sources lead into it, and one arrow leads
out, to the node that waits for all of them. A node's declared ``goto`` targets
(where a :class:`~flowpoint.Command` may send the run) are dashed arrows
labelled ``goto``; a subgraph node is a box of its own kind, noting the graph it
runs.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._builder import END, START, BuiltGraph, ConditionalEdge, Send, StaticEdge

__all__ = ["GOTO_LABEL", "Arrow", "Box", "Picture", "picture"]

BoxKind = Literal["start", "end", "node", "subgraph", "join"]
ArrowKind = Literal["static", "conditional", "goto", "into_join", "out_of_join"]

GOTO_LABEL = "goto"
"""The label of an arrow to a target a node's ``Command`` may choose."""

SEND_LABEL = "Send (map)"
"""The mark of an arrow a router may take once per ``Send`` it returns."""


@dataclass(frozen=True, slots=True)
class Box:
    """Something drawn: ``START``, ``END``, a node, a subgraph node or a join.

    ``key`` is an identifier safe in every diagram language (``__start__``,
    ``n1``, ``j1``, ``__end__``); the node's name is only ever shown, as ``text``.
    ``notes`` are lines shown under it (``version=2``, ``subgraph: research``,
    ``up to 3 tries``,
    ``interrupt before``).
    Texts hold only printable characters (see :func:`shown`).
    """

    key: str
    kind: BoxKind
    text: str
    notes: tuple[str, ...] = ()
    interrupt: bool = False


@dataclass(frozen=True, slots=True)
class Arrow:
    """A way from one box to another; ``label`` is empty or what selects it."""

    source: str
    target: str
    kind: ArrowKind
    label: str = ""


@dataclass(frozen=True, slots=True)
class Picture:
    """The boxes and arrows of graph ``name``, in drawing order."""

    name: str
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]


def picture(
    graph: BuiltGraph[Any],
    *,
    interrupt_before: Iterable[str] = (),
    interrupt_after: Iterable[str] = (),
) -> Picture:
    """Lay ``graph`` out; the nodes named in ``interrupt_before``/``interrupt_after`` are marked.

    Raises :class:`TypeError` for a str instead of a list of names and
    :class:`~flowpoint.errors.GraphDefinitionError` for a name that is not a node,
    as :class:`~flowpoint.Runner` does.
    """
    before = _node_names(graph, interrupt_before, "interrupt_before")
    after = _node_names(graph, interrupt_after, "interrupt_after")
    order = _node_order(graph)
    keys = {START: START, END: END} | {name: f"n{i}" for i, name in enumerate(order, 1)}
    rank = {name: i for i, name in enumerate(order)} | {END: len(order)}
    boxes = [Box(START, "start", "START")]
    for name in order:
        boxes.append(_node_box(graph, name, keys[name], before, after))
    arrows: list[Arrow] = []
    for source in (START, *order):
        for edge in _ordered_edges(graph, source, rank):
            if isinstance(edge, ConditionalEdge):
                arrows.extend(_router_arrows(edge, keys, rank))
            else:
                arrows.append(Arrow(keys[source], keys[edge.target], "static"))
        if source != START:
            for target in sorted(graph.nodes[source].goto or (), key=rank.__getitem__):
                arrows.append(Arrow(keys[source], keys[target], "goto", GOTO_LABEL))
    joins = sorted(
        {join for name in order for join in graph.joins_after(name)},
        key=lambda join: (rank[join.target], sorted(rank[one] for one in join.sources)),
    )
    for i, join in enumerate(joins, 1):
        key = f"j{i}"
        boxes.append(Box(key, "join", "join"))
        for source in sorted(join.sources, key=rank.__getitem__):
            arrows.append(Arrow(keys[source], key, "into_join"))
        arrows.append(Arrow(key, keys[join.target], "out_of_join"))
    boxes.append(Box(END, "end", "END"))
    return Picture(shown(graph.name), tuple(boxes), tuple(arrows))


def shown(text: str) -> str:
    r"""``text`` with each character that is not printable written as Python writes it.

    A line break or a bidirectional override in a node's name must not break or
    reorder the line it is drawn on.

    >>> shown("new\nline\u202e")
    'new\\nline\\u202e'
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _node_box(
    graph: BuiltGraph[Any], name: str, key: str, before: frozenset[str], after: frozenset[str]
) -> Box:
    node = graph.nodes[name]
    notes: list[str] = []
    if node.version is not None:
        notes.append(f"version={node.version!r}")
    if node.subgraph is not None:
        notes.append(f"subgraph: {shown(node.subgraph.graph.name)}")
    if node.retry is not None and node.retry.max_attempts > 1:
        notes.append(f"up to {node.retry.max_attempts} tries")
    if name in before:
        notes.append("interrupt before")
    if name in after:
        notes.append("interrupt after")
    paused = name in before or name in after
    kind: BoxKind = "node" if node.subgraph is None else "subgraph"
    return Box(key, kind, shown(name), tuple(notes), interrupt=paused)


def _node_names(graph: BuiltGraph[Any], names: Iterable[str], option: str) -> frozenset[str]:
    if isinstance(names, str):
        raise TypeError(f"{option} takes a list of node names, not the str {names!r}")
    chosen = frozenset(names)
    unknown = sorted(chosen - set(graph.nodes), key=repr)
    if unknown:
        raise GraphDefinitionError(f"{option} names unknown node(s) {unknown}")
    return chosen


def _node_order(graph: BuiltGraph[Any]) -> list[str]:
    """The nodes breadth-first from the first one, the successors of each by name."""
    order = [graph.start]
    seen = {graph.start, END}
    for name in order:  # grows as it goes
        following: set[str] = set()
        for edge in graph.edges_after(name):
            following.update(edge.targets if isinstance(edge, ConditionalEdge) else [edge.target])
        following.update(join.target for join in graph.joins_after(name))
        following.update(graph.nodes[name].goto or ())
        for target in sorted(following - seen):
            seen.add(target)
            order.append(target)
    return order


def _ordered_edges(
    graph: BuiltGraph[Any], source: str, rank: Mapping[str, int]
) -> list[StaticEdge | ConditionalEdge]:
    """The static edges leaving ``source`` by target, then its routers by their targets."""
    static = [edge for edge in graph.edges_after(source) if isinstance(edge, StaticEdge)]
    routers = [edge for edge in graph.edges_after(source) if isinstance(edge, ConditionalEdge)]
    static.sort(key=lambda edge: rank[edge.target])
    routers.sort(
        key=lambda edge: (
            sorted(rank[target] for target in set(edge.targets)),
            sorted(_route_labels(edge).items()),
        )
    )
    return [*static, *routers]


def _router_arrows(
    edge: ConditionalEdge, keys: Mapping[str, str], rank: Mapping[str, int]
) -> list[Arrow]:
    """A dashed arrow to each target, labelled with its path map keys and ``Send (map)``."""
    sends = _may_send(edge.router)
    labels = _route_labels(edge)
    arrows = []
    for target in sorted(set(edge.targets), key=rank.__getitem__):
        marks = [*labels.get(target, ()), *([SEND_LABEL] if sends and target != END else ())]
        arrows.append(Arrow(keys[edge.source], keys[target], "conditional", ", ".join(marks)))
    return arrows


def _route_labels(edge: ConditionalEdge) -> dict[str, list[str]]:
    """For a router with a path map, the keys that lead to each target, as text, sorted."""
    labels: dict[str, list[str]] = {}
    for key, target in (edge.path_map or {}).items():
        text = shown(key if isinstance(key, str) and key else repr(key))
        labels.setdefault(target, []).append(text)
    return {target: sorted(keys) for target, keys in labels.items()}


_SEND_WORD = re.compile(r"\bSend\b")


def _may_send(router: Any) -> bool:
    """Whether ``router``'s return annotation names :class:`Send` (``-> list[Send]``).

    A router without one may still return ``Send`` objects; its arrows are then
    drawn as any router's are.
    """
    try:
        annotation = inspect.signature(router, eval_str=True).return_annotation
    except Exception:  # a forward reference that does not resolve: read the text
        try:
            annotation = inspect.signature(router).return_annotation
        except (TypeError, ValueError):  # a builtin without a signature
            return False
    return _names_send(annotation)


def _names_send(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return _SEND_WORD.search(annotation) is not None
    if isinstance(annotation, type) and issubclass(annotation, Send):
        return True
    return any(_names_send(argument) for argument in typing.get_args(annotation))
