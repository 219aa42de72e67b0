"""Declaring a graph: nodes, static and conditional edges, ``START`` and ``END``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, overload

from flowpoint.checkpoint import S, State
from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._context import takes_context
from flowpoint.graph.fingerprint import canonical_set, describe_type, describe_value, fingerprint

__all__ = ["END", "START", "BuiltGraph", "ConditionalEdge", "Edge", "Graph", "Node", "StaticEdge"]

START: Final = "__start__"
"""Where a run enters the graph: ``add_edge(START, "first_node")``."""

END: Final = "__end__"
"""Where a run finishes: ``add_edge("last_node", END)`` or a router's target."""

NodeFunction = Callable[..., Any | Awaitable[Any]]
"""A node: a sync or async function of the state (and, if it declares a second
parameter, a :class:`~flowpoint.NodeContext`) returning a new state, a partial
update (a dict), or ``None`` for no change."""

Router = Callable[..., Any | Awaitable[Any]]
"""A router: a sync or async function of the state (and optionally a
:class:`~flowpoint.NodeContext`) returning one of its declared targets."""


@dataclass(frozen=True, slots=True)
class Node:
    """A node of a graph. ``version`` is how a user declares that its behaviour changed.

    ``takes_context`` says the function declares a second parameter, for a
    :class:`~flowpoint.NodeContext`.
    """

    name: str
    function: NodeFunction
    version: int | str | None
    takes_context: bool = False


@dataclass(frozen=True, slots=True)
class StaticEdge:
    """After ``source``, always go to ``target``."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class ConditionalEdge:
    """After ``source``, go where ``router`` says: one of ``targets`` (in declared order).

    With a ``path_map``, the router returns one of its keys and the run goes to the
    node it maps to; ``targets`` are then the map's values, in order.
    ``takes_context`` says the router declares a second parameter, for a
    :class:`~flowpoint.NodeContext`.
    """

    source: str
    router: Router
    targets: tuple[str, ...]
    path_map: Mapping[Any, str] | None
    takes_context: bool = False


Edge = StaticEdge | ConditionalEdge


class Graph(Generic[S]):
    """A graph under construction; :meth:`build` checks it and freezes it.

    ::

        g = Graph("research", state=ResearchState)
        g.add_node("plan", plan, version=2)
        g.add_node("act", act)
        g.add_edge(START, "plan")
        g.add_edge("plan", "act")
        g.add_conditional_edges("act", route, ["plan", END])
        graph = g.build()
        graph.hash_u64()

    The fingerprint (:meth:`hash_u64`) covers the graph's name, its nodes and
    their ``version`` tags, its edges with their targets (all as sets: the order
    of declarations does not count), and the state type's schema as stored; it
    does not cover the code of nodes and routers. Bump a node's ``version`` when
    its behaviour changes in a way a stored run must not resume across. See
    :mod:`flowpoint.graph.fingerprint` for exactly what counts.
    """

    @overload
    def __init__(self, name: str, *, state: type[S] = ...) -> None: ...
    @overload
    def __init__(self: Graph[Any], name: str, *, state: Any) -> None: ...
    def __init__(self, name: str, *, state: Any = State) -> None:
        """``state`` is the state type (``dict``, the default, or a dataclass...).

        For mypy, ``Graph("g", state=Ticket)`` is a ``Graph[Ticket]``; a type form
        that is not a class (``int | None``) makes a ``Graph[Any]``.
        """
        if not isinstance(name, str) or not name:
            raise GraphDefinitionError(f"a graph's name must be a non-empty str, not {name!r}")
        self.name = name
        self.state_type = state
        self._nodes: dict[str, Node] = {}
        self._edges: list[Edge] = []

    def add_node(
        self, name: str, function: NodeFunction, *, version: int | str | None = None
    ) -> Graph[S]:
        """Add a node; ``function(state)`` may be sync or async. Returns the graph.

        A function that declares a second parameter, annotated
        :class:`~flowpoint.NodeContext` (or required and unannotated), is called as
        ``function(state, ctx)``. A signature that cannot be called so raises
        :class:`~flowpoint.errors.GraphDefinitionError`.
        """
        if not isinstance(name, str) or not name:
            raise GraphDefinitionError(f"a node's name must be a non-empty str, not {name!r}")
        if name in (START, END):
            raise GraphDefinitionError(f"{name!r} is reserved and cannot name a node")
        if name in self._nodes:
            raise GraphDefinitionError(f"the graph has a node named {name!r} already")
        if not callable(function):
            raise GraphDefinitionError(f"node {name!r} needs a callable, not {function!r:.60}")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int | str)
        ):
            raise GraphDefinitionError(
                f"node {name!r}: version must be an int or a str, not {version!r:.40}"
            )
        self._nodes[name] = Node(name, function, version, takes_context(function, f"node {name!r}"))
        return self

    def add_edge(self, source: str, target: str) -> Graph[S]:
        """After ``source`` (or ``START``), go to ``target`` (or ``END``). Returns the graph."""
        self._edges.append(StaticEdge(_name(source, "source"), _name(target, "target")))
        return self

    def add_conditional_edges(
        self,
        source: str,
        router: Router,
        targets: Iterable[str] | Mapping[Any, str],
    ) -> Graph[S]:
        """After ``source``, go where ``router(state)`` says. Returns the graph.

        ``targets`` lists every place the router may send the run (nodes or
        ``END``), in any order. A mapping instead maps the router's return values
        to those places. A router declares a :class:`~flowpoint.NodeContext` as a
        node does, and gets the context of the node it routes after.
        """
        if not callable(router):
            raise GraphDefinitionError(f"the router after {source!r} must be callable")
        wants_context = takes_context(router, f"the router after {source!r}")
        path_map: Mapping[Any, str] | None = None
        if isinstance(targets, Mapping):
            path_map = dict(targets)
            declared = tuple(_name(t, "target") for t in path_map.values())
        elif isinstance(targets, str):
            raise GraphDefinitionError(
                f"the targets after {source!r} must be a list of names, not the str {targets!r}"
            )
        else:
            declared = tuple(_name(t, "target") for t in targets)
        if not declared:
            raise GraphDefinitionError(f"the router after {source!r} declares no targets")
        if len(set(declared)) != len(declared) and path_map is None:
            raise GraphDefinitionError(f"the router after {source!r} lists a target twice")
        self._edges.append(
            ConditionalEdge(_name(source, "source"), router, declared, path_map, wants_context)
        )
        return self

    def build(self) -> BuiltGraph[S]:
        """Check the graph and return its frozen, runnable form.

        Raises :class:`~flowpoint.errors.GraphDefinitionError` for an edge to or from
        an unknown node, a node without (or with two) outgoing edges, no edge from
        ``START``, a node no run can reach, or a node from which ``END`` cannot be reached.
        """
        outgoing: dict[str, Edge] = {}
        for edge in self._edges:
            if edge.source == END:
                raise GraphDefinitionError("END has no outgoing edges")
            if edge.source != START and edge.source not in self._nodes:
                raise GraphDefinitionError(f"an edge leaves {edge.source!r}, which is not a node")
            for target in _targets(edge):
                if target == START:
                    raise GraphDefinitionError(f"an edge from {edge.source!r} goes to START")
                if target != END and target not in self._nodes:
                    raise GraphDefinitionError(
                        f"an edge from {edge.source!r} goes to {target!r}, which is not a node"
                    )
            if edge.source in outgoing:
                raise GraphDefinitionError(
                    f"{edge.source!r} has two outgoing edges; a run follows one path, so use "
                    f"add_conditional_edges to choose between targets"
                )
            outgoing[edge.source] = edge
        start_edge = outgoing.get(START)
        if start_edge is None:
            raise GraphDefinitionError("the graph has no edge from START")
        if not isinstance(start_edge, StaticEdge) or start_edge.target == END:
            raise GraphDefinitionError("START needs one static edge to the first node")
        for name in self._nodes:
            if name not in outgoing:
                raise GraphDefinitionError(
                    f"node {name!r} has no outgoing edge (add an edge to the next node or END)"
                )
        reachable = _reachable(START, outgoing)
        unreachable = [name for name in self._nodes if name not in reachable]
        if unreachable:
            raise GraphDefinitionError(f"no run can reach node(s) {unreachable}")
        stuck = [name for name in self._nodes if END not in _reachable(name, outgoing)]
        if stuck:
            raise GraphDefinitionError(f"no path leads from node(s) {stuck} to END")
        return BuiltGraph(
            name=self.name,
            state_type=self.state_type,
            nodes=dict(self._nodes),
            edges=tuple(self._edges),
            start=start_edge.target,
        )

    def hash_u64(self) -> int:
        """The fingerprint of the graph as declared so far (it is checked first)."""
        return self.build().hash_u64()


class BuiltGraph(Generic[S]):
    """A checked, frozen graph: what a :class:`~flowpoint.Runner` runs."""

    __slots__ = ("_hash", "_outgoing", "edges", "name", "nodes", "start", "state_type")

    def __init__(
        self,
        *,
        name: str,
        state_type: Any,
        nodes: Mapping[str, Node],
        edges: tuple[Edge, ...],
        start: str,
    ) -> None:
        self.name = name
        self.state_type = state_type
        self.nodes: Mapping[str, Node] = MappingProxyType(dict(nodes))
        self.edges = edges
        self.start = start
        self._outgoing = {edge.source: edge for edge in edges}
        state = describe_type(state_type)
        if state == "any":
            raise GraphDefinitionError(
                f"graph {name!r} declares its state as {state_type!r}, which flowpoint cannot "
                f"load back; declare its type (state=dict for a free-form dict of values)"
            )
        self._hash = fingerprint(
            name=name,
            nodes={node.name: _describe_node(node) for node in nodes.values()},
            edges=[_describe_edge(edge) for edge in edges],
            state=state,
        )

    def __repr__(self) -> str:
        return f"<BuiltGraph {self.name!r} 0x{self._hash:016x}: {len(self.nodes)} nodes>"

    def hash_u64(self) -> int:
        """The graph's stable fingerprint: the same in every process, Python and machine."""
        return self._hash

    def edge_after(self, node: str) -> Edge:
        """The edge a run follows after ``node``."""
        return self._outgoing[node]


def _describe_node(node: Node) -> dict[str, Any]:
    """A node's attributes as the fingerprint sees them; those at their default left out."""
    return {} if node.version is None else {"version": node.version}


def _describe_edge(edge: Edge) -> dict[str, Any]:
    """An edge as the fingerprint sees it: its kind, source and declared targets (a set)."""
    if isinstance(edge, StaticEdge):
        return {"kind": "static", "from": edge.source, "to": edge.target}
    if edge.path_map is None:
        return {"kind": "conditional", "from": edge.source, "to": canonical_set(edge.targets)}
    routes = [[describe_value(key), target] for key, target in edge.path_map.items()]
    return {"kind": "conditional", "from": edge.source, "map": canonical_set(routes)}


def _name(value: object, role: Literal["source", "target"]) -> str:
    if not isinstance(value, str) or not value:
        raise GraphDefinitionError(f"an edge's {role} must be a node name, not {value!r:.40}")
    return value


def _targets(edge: Edge) -> tuple[str, ...]:
    return (edge.target,) if isinstance(edge, StaticEdge) else edge.targets


def _reachable(origin: str, outgoing: Mapping[str, Edge]) -> set[str]:
    seen: set[str] = set()
    pending = [origin]
    while pending:
        name = pending.pop()
        edge = outgoing.get(name)
        if edge is None:
            continue
        for target in _targets(edge):
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen
