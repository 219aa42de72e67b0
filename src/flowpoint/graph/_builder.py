"""Declaring a graph: nodes, static, conditional and join edges, ``Send``, ``START``, ``END``.

A run goes in supersteps: the tasks of one superstep run concurrently, and the
edges of the nodes that ran say what runs in the next one. Several static edges
from one node fan out; ``add_edge(["web", "docs"], "write")`` is a join (``write``
runs once both have finished); a router may return one target, a list of them,
or :class:`Send` objects that run a node once per argument (a map).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, overload

from flowpoint.blob import MAX_NODE_LENGTH
from flowpoint.checkpoint import S, State
from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._context import takes_context
from flowpoint.graph._fingerprint import (
    canonical_set,
    describe_graph,
    describe_type,
    describe_value,
    hash_description,
)
from flowpoint.graph._migrations import Migration, MigrationFunction, Migrations, declare
from flowpoint.graph._retry import Retry
from flowpoint.graph._state import StateType

__all__ = [
    "END",
    "MAX_SEND_TARGET_LENGTH",
    "START",
    "BuiltGraph",
    "ConditionalEdge",
    "Edge",
    "Graph",
    "JoinEdge",
    "Node",
    "Send",
    "StaticEdge",
    "Subgraph",
    "same_state",
]

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
:class:`~flowpoint.NodeContext`) returning one of its declared targets, a list of
them, :class:`Send` objects, or a list mixing both."""

MAX_SEND_TARGET_LENGTH = MAX_NODE_LENGTH - 16
"""Characters in the name of a router's target, at most: a ``Send`` to it runs as
the task ``"<name>#<index>"``, and a task id has at most 256 characters."""

# A task id "<node>#<index>" for the index-th Send to <node> in a superstep.
_SEND_TASK = re.compile(r"(.+)#[0-9]+")


@dataclass(frozen=True, slots=True)
class Send:
    """Run ``node`` once, with ``arg`` instead of the state: what a router returns to map.

    ::

        def fan_out(state: Docs) -> list[Send]:
            return [Send("summarise", doc) for doc in state.docs]

        g.add_conditional_edges("split", fan_out, ["summarise"])

    Every ``Send`` a superstep's routers return runs in the next superstep, all
    concurrently; ``node`` must be one of the router's declared targets. ``arg``
    is stored with the checkpoint as plain data (as MessagePack holds it: dicts,
    lists, strings, numbers, bytes, datetimes) and given to the node as the type
    its first parameter is annotated with (a dataclass comes back as the
    dataclass); a node whose first parameter is not annotated gets the plain data.
    The node's update is applied to the state like any other.
    """

    node: str
    arg: Any

    def __post_init__(self) -> None:
        if not isinstance(self.node, str) or not self.node:
            raise TypeError(f"a Send names a node, not {self.node!r:.40}")


@dataclass(frozen=True, slots=True)
class Subgraph:
    """What a subgraph node runs: ``graph``, entered through ``input`` and left through ``output``.

    ``input(parent_state)`` is the subgraph's initial state and
    ``output(parent_state, subgraph_final_state)`` the parent node's update (a
    dict of fields, a whole state, ``None``, or a :class:`~flowpoint.Command`);
    either may be sync or async. Left out (``None``), the subgraph starts from
    the parent's state and its final state replaces the parent's.
    """

    graph: BuiltGraph[Any]
    input: Callable[[Any], Any] | None = None
    output: Callable[[Any, Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """A node of a graph. ``version`` is how a user declares that its behaviour changed.

    ``takes_context`` says the function declares a second parameter, for a
    :class:`~flowpoint.NodeContext`. ``goto`` holds the targets a
    :class:`~flowpoint.Command` it returns may choose (``None``: it declares none).
    A subgraph node has its ``subgraph``; its ``function`` only refuses to be
    called, as the runner runs the subgraph instead.
    """

    name: str
    function: NodeFunction
    version: int | str | None
    takes_context: bool = False
    goto: tuple[str, ...] | None = None
    subgraph: Subgraph | None = None
    # Not part of the fingerprint: a retry policy changes how often a node is tried,
    # never what a checkpoint stores, so tuning it must not strand the runs under way.
    retry: Retry | None = None


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


@dataclass(frozen=True, slots=True)
class JoinEdge:
    """After every one of ``sources`` has finished, go to ``target`` once (a fan-in).

    ``sources`` are in declared order. The join counts a source as finished when
    it runs in a superstep; once all have, ``target`` runs in the next superstep,
    and the count starts over.
    """

    sources: tuple[str, ...]
    target: str


Edge = StaticEdge | ConditionalEdge | JoinEdge


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
    :mod:`flowpoint.graph._fingerprint` for exactly what counts.
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
        self._migrations: list[Migration] = []
        # Subgraph nodes: their graph (built with this one) and mapping functions.
        self._subgraphs: dict[str, tuple[Graph[Any] | BuiltGraph[Any], Any, Any]] = {}
        self._building = False

    def add_node(
        self,
        name: str,
        function: NodeFunction | Graph[Any] | BuiltGraph[Any],
        *,
        version: int | str | None = None,
        goto: str | Iterable[str] | None = None,
        input: Callable[[Any], Any] | None = None,
        output: Callable[[Any, Any], Any] | None = None,
        retry: Retry | None = None,
    ) -> Graph[S]:
        """Add a node; ``function(state)`` may be sync or async. Returns the graph.

        A function that declares a second parameter, annotated
        :class:`~flowpoint.NodeContext` (or required and unannotated), is called as
        ``function(state, ctx)``. A signature that cannot be called so raises
        :class:`~flowpoint.errors.GraphDefinitionError`. ``retry`` (a
        :class:`~flowpoint.Retry`) retries the node's transient failures.

        ``goto`` declares where a :class:`~flowpoint.Command` the node returns may
        send the run (nodes, ``END``); they count as its edges when the graph is
        checked, so a node with ``goto`` needs no other edge.

        A :class:`Graph` or :class:`BuiltGraph` instead of a function makes a
        subgraph node: the runner runs that graph as a trace of its own (see
        :class:`~flowpoint.Runner`). With the parent's state type it needs no
        mapping; otherwise ``input(parent_state)`` returns the subgraph's initial
        state and ``output(parent_state, final_state)`` the node's update (see
        :class:`Subgraph`). A :class:`Graph` is built when this graph is.
        """
        if not isinstance(name, str) or not name:
            raise GraphDefinitionError(f"a node's name must be a non-empty str, not {name!r}")
        if name in (START, END):
            raise GraphDefinitionError(f"{name!r} is reserved and cannot name a node")
        if len(name) > MAX_NODE_LENGTH:
            raise GraphDefinitionError(
                f"a node's name has at most {MAX_NODE_LENGTH} characters, not {len(name)} "
                f"({name!r:.40}...)"
            )
        if name in self._nodes:
            raise GraphDefinitionError(f"the graph has a node named {name!r} already")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int | str)
        ):
            raise GraphDefinitionError(
                f"node {name!r}: version must be an int or a str, not {version!r:.40}"
            )
        if retry is not None and not isinstance(retry, Retry):
            raise GraphDefinitionError(f"node {name!r}: retry must be a Retry, not {retry!r:.40}")
        targets = _goto_targets(name, goto)
        if isinstance(function, Graph | BuiltGraph):
            for role, mapping in (("input", input), ("output", output)):
                if mapping is not None and not callable(mapping):
                    raise GraphDefinitionError(
                        f"subgraph node {name!r}: {role} must be callable, not {mapping!r:.60}"
                    )
            self._subgraphs[name] = (function, input, output)
            self._nodes[name] = Node(name, _run_by_runner, version, goto=targets, retry=retry)
            return self
        if not callable(function):
            raise GraphDefinitionError(f"node {name!r} needs a callable, not {function!r:.60}")
        if input is not None or output is not None:
            raise GraphDefinitionError(
                f"node {name!r}: input= and output= map the state of a subgraph node; "
                f"pass a Graph or BuiltGraph to use them"
            )
        context = takes_context(function, f"node {name!r}")
        self._nodes[name] = Node(name, function, version, context, goto=targets, retry=retry)
        return self

    def add_edge(self, source: str | list[str] | tuple[str, ...], target: str) -> Graph[S]:
        """After ``source`` (or ``START``), go to ``target`` (or ``END``). Returns the graph.

        Several edges from one node fan out: their targets run in the same
        superstep, concurrently. A list of sources is a join:
        ``add_edge(["web", "docs"], "write")`` runs ``write`` once, after both
        ``web`` and ``docs`` have finished (in the same superstep or not).
        """
        end = _name(target, "target")
        if isinstance(source, list | tuple):
            sources = tuple(_name(one, "source") for one in source)
            if not sources:
                raise GraphDefinitionError(f"the join into {end!r} lists no source")
            if len(set(sources)) != len(sources):
                raise GraphDefinitionError(f"the join into {end!r} lists a source twice")
            if len(sources) > 1:
                self._edges.append(JoinEdge(sources, end))
                return self
            source = sources[0]
        self._edges.append(StaticEdge(_name(source, "source"), end))
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
        to those places. The router returns one of them, a list of them (all run
        in the next superstep; an empty list stops this branch), :class:`Send`
        objects to targets it declares, or a list mixing both. It sees the state
        after the whole superstep its node ran in. A router declares a
        :class:`~flowpoint.NodeContext` as a node does, and gets the context of the
        node it routes after.
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

    # -- migrations (graph/_migrations.py) ----------------------------------------------

    def migration(
        self,
        *,
        from_hash: int,
        state: Any,
        nodes: Mapping[str, str] | None = None,
        to_hash: int | None = None,
    ) -> Callable[[MigrationFunction], MigrationFunction]:
        """Declare how a trace saved by an older version of this graph continues on this one.

        ::

            @g.migration(from_hash=0x0C45767E508038ED, state=TicketV1, nodes={"draft": "compose"})
            def v1_to_v2(old: TicketV1) -> TicketV2:
                return TicketV2(text=old.text, answer=old.reply, language="en")

        ``from_hash`` is the old graph's fingerprint (as :class:`~flowpoint.GraphMismatch`
        and ``flowpoint traces`` print it); ``state`` is the old state type, which the
        stored state is decoded as; ``nodes`` maps old node names to new ones (a name
        it leaves out stays as it is). The function (sync or async) takes the old
        state and returns a state of this graph, or, with ``to_hash``, of the older
        graph ``to_hash``, which needs a migration of its own: v1 → v2 → v3 is a
        migration from v1 with ``to_hash`` v2 and one from v2. ``Runner.resume``
        applies them. They do not change the graph's fingerprint.

        Raises :class:`~flowpoint.errors.GraphDefinitionError` for a ``from_hash``
        that is not an unsigned 64-bit int or that a migration of the graph already
        starts from, and a function that does not take one argument; :meth:`build`
        checks that every chain ends at the graph.
        """

        def register(function: MigrationFunction) -> MigrationFunction:
            migration = declare(
                function,
                from_hash=from_hash,
                state=state,
                nodes=nodes,
                to_hash=to_hash,
                graph=self.name,
            )
            for other in self._migrations:
                if other.from_hash == migration.from_hash:
                    raise GraphDefinitionError(
                        f"graph {self.name!r} has a migration from "
                        f"0x{migration.from_hash:016x} already: {other.name}"
                    )
            self._migrations.append(migration)
            return function

        return register

    def build(self) -> BuiltGraph[S]:
        """Check the graph and return its frozen, runnable form.

        Raises :class:`~flowpoint.errors.GraphDefinitionError` for an edge to or from
        an unknown node, an edge declared twice, a join from ``START`` or ``END``, a
        node without outgoing edges, not exactly one static edge from ``START`` to
        a node, a node no run can reach, a node from which ``END`` cannot be
        reached, or a router target whose ``Send`` tasks could not be told apart
        from another node (see :data:`MAX_SEND_TARGET_LENGTH`); and for a state
        type flowpoint cannot store or a reducer it cannot call; and for migrations
        (:meth:`migration`) from the graph's own hash, or whose chains do not end at
        the graph or map nodes to nodes it lacks.
        """
        if self._building:
            raise GraphDefinitionError(f"graph {self.name!r} is a subgraph of itself")
        self._building = True
        try:
            nodes = {name: self._built_node(node) for name, node in self._nodes.items()}
        finally:
            self._building = False
        seen: set[tuple[Any, ...]] = set()
        for edge in self._edges:
            self._check_edge(edge)
            key = _edge_key(edge)
            if key is not None:
                if key in seen:
                    raise GraphDefinitionError(f"{_edge_name(edge)} is declared twice")
                seen.add(key)
        self._check_goto()
        after: dict[str, list[Edge]] = {}
        for edge in self._edges:
            for source in edge.sources if isinstance(edge, JoinEdge) else (edge.source,):
                after.setdefault(source, []).append(edge)
        for node in self._nodes.values():
            # A Command may go to any declared target: for the checks, they are edges.
            for target in node.goto or ():
                after.setdefault(node.name, []).append(StaticEdge(node.name, target))
        start_edges = after.get(START, [])
        if not start_edges:
            raise GraphDefinitionError("the graph has no edge from START")
        if len(start_edges) > 1:
            raise GraphDefinitionError(
                f"{START!r} has two outgoing edges; a run enters the graph at one node "
                f"(fan out from that node instead)"
            )
        start_edge = start_edges[0]
        if not isinstance(start_edge, StaticEdge) or start_edge.target == END:
            raise GraphDefinitionError("START needs one static edge to the first node")
        for name in self._nodes:
            if name not in after:
                raise GraphDefinitionError(
                    f"node {name!r} has no outgoing edge (add an edge to the next node or END)"
                )
        self._check_send_targets()
        reachable = _reachable(START, after, whole_joins=True)
        unreachable = [name for name in self._nodes if name not in reachable]
        if unreachable:
            raise GraphDefinitionError(f"no run can reach node(s) {unreachable}")
        stuck = [
            name for name in self._nodes if END not in _reachable(name, after, whole_joins=False)
        ]
        if stuck:
            raise GraphDefinitionError(f"no path leads from node(s) {stuck} to END")
        return BuiltGraph(
            name=self.name,
            state_type=self.state_type,
            nodes=nodes,
            edges=tuple(self._edges),
            start=start_edge.target,
            migrations=tuple(self._migrations),
        )

    def _check_edge(self, edge: Edge) -> None:
        sources = edge.sources if isinstance(edge, JoinEdge) else (edge.source,)
        for source in sources:
            if source == END:
                raise GraphDefinitionError("END has no outgoing edges")
            if isinstance(edge, JoinEdge) and source == START:
                raise GraphDefinitionError(
                    f"the join into {edge.target!r} lists START; a join's sources are nodes"
                )
            if source != START and source not in self._nodes:
                raise GraphDefinitionError(f"an edge leaves {source!r}, which is not a node")
        where = "/".join(sources)
        for target in _targets(edge):
            if target == START:
                raise GraphDefinitionError(f"an edge from {where!r} goes to START")
            if target != END and target not in self._nodes:
                raise GraphDefinitionError(
                    f"an edge from {where!r} goes to {target!r}, which is not a node"
                )

    def _built_node(self, node: Node) -> Node:
        """``node``, with its subgraph built and checked against this graph's state."""
        found = self._subgraphs.get(node.name)
        if found is None:
            return node
        graph, input_map, output_map = found
        if isinstance(graph, Graph):
            if graph is self:
                raise GraphDefinitionError(f"graph {self.name!r} is a subgraph of itself")
            try:
                graph = graph.build()
            except GraphDefinitionError as exc:
                raise GraphDefinitionError(f"subgraph node {node.name!r}: {exc}") from None
        shared = same_state(graph.state_type, self.state_type)
        if not shared and (input_map is None or output_map is None):
            raise GraphDefinitionError(
                f"subgraph node {node.name!r} runs graph {graph.name!r} on "
                f"{_type_name(graph.state_type)}, not this graph's "
                f"{_type_name(self.state_type)}; map the states with "
                f"input=(parent state -> subgraph state) and "
                f"output=(parent state, subgraph final state -> update)"
            )
        return replace(node, subgraph=Subgraph(graph, input_map, output_map))

    def _check_goto(self) -> None:
        for node in self._nodes.values():
            for target in node.goto or ():
                if target != END and target not in self._nodes:
                    raise GraphDefinitionError(
                        f"node {node.name!r} declares goto target {target!r}, which is not a node"
                    )

    def _check_send_targets(self) -> None:
        """Refuse router and goto targets whose Send task ids would be too long or shared."""
        targets = {
            target
            for edge in self._edges
            if isinstance(edge, ConditionalEdge)
            for target in edge.targets
            if target != END
        } | {target for node in self._nodes.values() for target in node.goto or () if target != END}
        for target in sorted(targets):
            if len(target) > MAX_SEND_TARGET_LENGTH:
                raise GraphDefinitionError(
                    f"router target {target!r:.40}... has {len(target)} characters; a node a "
                    f"router may send to has at most {MAX_SEND_TARGET_LENGTH}"
                )
        for name in self._nodes:
            match = _SEND_TASK.fullmatch(name)
            if match is not None and match.group(1) in targets:
                raise GraphDefinitionError(
                    f"node {name!r} has the name of a Send task of router target "
                    f"{match.group(1)!r}; rename it"
                )

    def hash_u64(self) -> int:
        """The fingerprint of the graph as declared so far (it is checked first)."""
        return self.build().hash_u64()

    def to_mermaid(
        self, *, interrupt_before: Iterable[str] = (), interrupt_after: Iterable[str] = ()
    ) -> str:
        """The graph as declared so far (it is checked first): see :meth:`BuiltGraph.to_mermaid`."""
        return self.build().to_mermaid(
            interrupt_before=interrupt_before, interrupt_after=interrupt_after
        )


class BuiltGraph(Generic[S]):
    """A checked, frozen graph: what a :class:`~flowpoint.Runner` runs."""

    __slots__ = (
        "_hash",
        "_joins",
        "_outgoing",
        "description",
        "edges",
        "migrations",
        "name",
        "nodes",
        "start",
        "state",
        "state_type",
    )

    def __init__(
        self,
        *,
        name: str,
        state_type: Any,
        nodes: Mapping[str, Node],
        edges: tuple[Edge, ...],
        start: str,
        migrations: Iterable[Migration] = (),
    ) -> None:
        self.name = name
        self.state_type = state_type
        self.nodes: Mapping[str, Node] = MappingProxyType(dict(nodes))
        self.edges = edges
        self.start = start
        outgoing: dict[str, list[StaticEdge | ConditionalEdge]] = {}
        joins: dict[str, list[JoinEdge]] = {}
        for edge in edges:
            if isinstance(edge, JoinEdge):
                for source in edge.sources:
                    joins.setdefault(source, []).append(edge)
            else:
                outgoing.setdefault(edge.source, []).append(edge)
        self._outgoing = {node: tuple(found) for node, found in outgoing.items()}
        self._joins = {node: tuple(found) for node, found in joins.items()}
        state = describe_type(state_type)
        if state == "any":
            raise GraphDefinitionError(
                f"graph {name!r} declares its state as {state_type!r}, which flowpoint cannot "
                f"load back; declare its type (state=dict for a free-form dict of values)"
            )
        self.description = describe_graph(
            name=name,
            nodes={node.name: _describe_node(node) for node in nodes.values()},
            edges=[_describe_edge(edge) for edge in edges],
            state=state,
        )
        """What the fingerprint hashes (see :mod:`flowpoint.graph._fingerprint`)."""
        self._hash = hash_description(self.description)
        self.state = StateType(state_type)
        # Not part of the fingerprint: migrations are about old data, not this graph.
        self.migrations = Migrations(
            migrations, graph_hash=self._hash, nodes=self.nodes, graph=name
        )

    def __repr__(self) -> str:
        return f"<BuiltGraph {self.name!r} 0x{self._hash:016x}: {len(self.nodes)} nodes>"

    def hash_u64(self) -> int:
        """The graph's stable fingerprint: the same in every process, Python and machine."""
        return self._hash

    def to_mermaid(
        self, *, interrupt_before: Iterable[str] = (), interrupt_after: Iterable[str] = ()
    ) -> str:
        """The graph as a Mermaid flowchart (``flowchart TD``), the same text for the same graph.

        It shows ``START`` and ``END``, the nodes with their ``version=`` tags,
        static edges (``-->``), routers' targets (dashed, labelled with the keys
        of a path map, and ``Send (map)`` when the router's return annotation
        names :class:`Send`), and joins (a ``join`` circle that the sources lead
        into). Nodes named in ``interrupt_before``/``interrupt_after`` (a
        :class:`~flowpoint.Runner`'s) are marked. Node names are shown, escaped,
        never used as Mermaid identifiers. The order of declarations does not
        change the text.
        """
        # Imported here: the drawing modules read this module's edge classes.
        from flowpoint.graph._mermaid import mermaid
        from flowpoint.graph._picture import picture

        return mermaid(
            picture(self, interrupt_before=interrupt_before, interrupt_after=interrupt_after)
        )

    def edges_after(self, node: str) -> tuple[StaticEdge | ConditionalEdge, ...]:
        """The static and conditional edges leaving ``node``, in declared order."""
        return self._outgoing.get(node, ())

    def joins_after(self, node: str) -> tuple[JoinEdge, ...]:
        """The joins that count ``node`` among their sources, in declared order."""
        return self._joins.get(node, ())


def _describe_node(node: Node) -> dict[str, Any]:
    """A node's attributes as the fingerprint sees them; those at their default left out."""
    described: dict[str, Any] = {} if node.version is None else {"version": node.version}
    if node.goto is not None:
        described["goto"] = canonical_set(node.goto)
    if node.subgraph is not None:
        described["subgraph"] = node.subgraph.graph.description
    return described


def _goto_targets(node: str, goto: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """A node's declared goto targets, each once; ``None`` when it declares none."""
    if goto is None:
        return None
    listed = [goto] if isinstance(goto, str) else list(goto)
    if not listed:
        raise GraphDefinitionError(f"node {node!r} declares goto=[]; leave it out instead")
    for target in listed:
        if not isinstance(target, str) or not target:
            raise GraphDefinitionError(
                f"node {node!r}: a goto target must be a node name or END, not {target!r:.40}"
            )
        if target == START:
            raise GraphDefinitionError(f"node {node!r} declares goto START")
    return tuple(dict.fromkeys(listed))


def _run_by_runner(state: Any) -> Any:
    """The function of a subgraph node: a runner runs its graph instead."""
    raise GraphDefinitionError("a subgraph node is run by a Runner, which runs its graph")


def same_state(child: Any, parent: Any) -> bool:
    """Whether a subgraph can run on the parent's states as they are: the same type."""
    if child == parent:
        return True
    origin = getattr(child, "__origin__", child), getattr(parent, "__origin__", parent)
    return origin[0] is origin[1] and describe_type(child) == describe_type(parent)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _describe_edge(edge: Edge) -> dict[str, Any]:
    """An edge as the fingerprint sees it: its kind, source and declared targets (a set)."""
    if isinstance(edge, StaticEdge):
        return {"kind": "static", "from": edge.source, "to": edge.target}
    if isinstance(edge, JoinEdge):
        return {"kind": "join", "from": canonical_set(edge.sources), "to": edge.target}
    if edge.path_map is None:
        return {"kind": "conditional", "from": edge.source, "to": canonical_set(edge.targets)}
    routes = [[describe_value(key), target] for key, target in edge.path_map.items()]
    return {"kind": "conditional", "from": edge.source, "map": canonical_set(routes)}


def _name(value: object, role: Literal["source", "target"]) -> str:
    if not isinstance(value, str) or not value:
        raise GraphDefinitionError(f"an edge's {role} must be a node name, not {value!r:.40}")
    return value


def _targets(edge: Edge) -> tuple[str, ...]:
    return edge.targets if isinstance(edge, ConditionalEdge) else (edge.target,)


def _edge_key(edge: Edge) -> tuple[Any, ...] | None:
    """What makes a static edge or a join the same as another; ``None`` for routers."""
    if isinstance(edge, StaticEdge):
        return ("static", edge.source, edge.target)
    if isinstance(edge, JoinEdge):
        return ("join", frozenset(edge.sources), edge.target)
    return None


def _edge_name(edge: Edge) -> str:
    if isinstance(edge, JoinEdge):
        return f"the join from {list(edge.sources)} into {edge.target!r}"
    return f"the edge from {edge.source!r} to {_targets(edge)[0]!r}"


def _reachable(origin: str, after: Mapping[str, list[Edge]], *, whole_joins: bool) -> set[str]:
    """Where a run from ``origin`` may go.

    With ``whole_joins``, a join's target only once all its sources may run (what
    a run from START can reach); without, after any source (a branch that joins
    others goes on where the join does).
    """
    seen: set[str] = set()
    pending = [origin]
    while pending:
        for edge in after.get(pending.pop(), ()):
            if (
                whole_joins
                and isinstance(edge, JoinEdge)
                and not all(source in seen for source in edge.sources)
            ):
                continue  # looked at again when its last source is reached
            for target in _targets(edge):
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
    return seen
