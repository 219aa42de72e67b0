"""The runner's cursor: the tasks of the next superstep, and the joins under way.

A checkpoint says what runs next. When that is one node triggered by an edge
and no join is under way, its ``current_node`` says it all and its cursor is
empty (so a graph without parallel branches stores what it always did). Otherwise
the cursor holds it, as plain data, in the checkpoint's body::

    {"tasks": [{"node": "docs"}, {"node": "summarise", "send": 0, "arg": ...}, ...],
     "joins": [{"to": "write", "from": ["docs", "web"], "done": ["web"]}]}

and ``current_node`` holds a summary for people (``"docs, summarise x8, web"``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from flowpoint.blob import MAX_NODE_LENGTH
from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._builder import END, BuiltGraph, JoinEdge, Send

__all__ = ["Cursor", "Task", "summary"]


@dataclass(frozen=True, slots=True)
class Task:
    """One node to run in a superstep, with its input.

    ``send`` is ``None`` for a node triggered by edges (it gets the state), and
    for a :class:`~flowpoint.Send` its index among the superstep's Sends to
    ``node`` (it gets ``arg``, plain data). ``id`` is unique in the superstep and
    the same every time the superstep runs: ``"web"``, ``"summarise#3"``.
    """

    node: str
    send: int | None = None
    arg: Any = None

    @property
    def id(self) -> str:
        """``node``, or ``"node#index"`` for a Send."""
        return self.node if self.send is None else f"{self.node}#{self.send}"

    @property
    def order(self) -> tuple[str, int]:
        """The canonical order of tasks: by node, edge-triggered first, then by Send index."""
        return (self.node, -1 if self.send is None else self.send)


JoinKey = tuple[str, tuple[str, ...]]
"""A join by its target and its sources, sorted: the same whatever the declaration order."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """What the next superstep runs (``tasks``, canonical order) and each join's progress.

    ``joins`` maps a join to the sources that have finished since it last
    triggered; joins with none are left out.
    """

    tasks: tuple[Task, ...] = ()
    joins: Mapping[JoinKey, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def at(cls, node: str | None) -> Cursor:
        """The cursor of a checkpoint whose ``current_node`` says it all."""
        return cls(() if node is None else (Task(node),))

    @property
    def plain(self) -> bool:
        """Whether ``current_node`` alone can hold this cursor (one edge task, no join)."""
        return not self.joins and (
            not self.tasks or (len(self.tasks) == 1 and self.tasks[0].send is None)
        )

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes of the tasks, each once, in canonical order."""
        return tuple(dict.fromkeys(task.node for task in self.tasks))

    def current_node(self) -> str | None:
        """What the checkpoint's ``current_node`` says: the node, a summary, or ``None``."""
        return summary(self.tasks) if self.tasks else None

    def to_stored(self) -> dict[str, Any]:
        """The cursor as the checkpoint stores it: ``{}`` when ``current_node`` says it all."""
        if self.plain:
            return {}
        stored = _StoredCursor(
            tasks=[_StoredTask(task.node, task.send, task.arg) for task in self.tasks],
            joins=[
                _StoredJoin(target, list(sources), sorted(done))
                for (target, sources), done in sorted(self.joins.items())
            ],
        )
        as_dict: dict[str, Any] = msgspec.to_builtins(stored, builtin_types=_AS_IS)
        return as_dict

    @classmethod
    def from_stored(
        cls, current_node: str | None, stored: Mapping[str, Any], graph: BuiltGraph[Any]
    ) -> Cursor:
        """The cursor of a checkpoint of ``graph``: its stored cursor, or its ``current_node``.

        Raises :class:`~flowpoint.errors.GraphDefinitionError` if it names a node
        or join ``graph`` does not have (a fork onto a changed graph), and
        ``ValueError`` for a stored cursor of the wrong shape.
        """
        cursor = cls.parse(current_node, stored)
        cursor.check(graph)
        return cursor

    @classmethod
    def parse(cls, current_node: str | None, stored: Mapping[str, Any]) -> Cursor:
        """The cursor a checkpoint stores, of whatever graph; ``ValueError`` for a wrong shape."""
        if not stored:
            cursor = cls.at(current_node)
        else:
            try:
                record = msgspec.convert(stored, _StoredCursor, builtin_types=_AS_IS)
            except msgspec.ValidationError as exc:
                raise ValueError(f"the checkpoint's cursor is not the runner's: {exc}") from None
            tasks = tuple(Task(task.node, task.send, task.arg) for task in record.tasks)
            joins = {
                (join.to, tuple(sorted(join.sources))): frozenset(join.done)
                for join in record.joins
            }
            cursor = cls(tuple(sorted(tasks, key=lambda task: task.order)), joins)
            if len({task.id for task in tasks}) != len(tasks):
                raise ValueError("the checkpoint's cursor names a task twice")
            if any(task.send is not None and task.send < 0 for task in tasks):
                raise ValueError("the checkpoint's cursor numbers a Send below 0")
            if any(not done or not done <= set(key[1]) for key, done in joins.items()):
                raise ValueError("the checkpoint's cursor counts a join's progress wrong")
        return cursor

    def check(self, graph: BuiltGraph[Any]) -> None:
        """Raise ``GraphDefinitionError`` for a node or a join that ``graph`` does not have."""
        for task in self.tasks:
            if task.node not in graph.nodes:
                raise GraphDefinitionError(
                    f"the checkpoint continues at node {task.node!r}, which graph "
                    f"{graph.name!r} does not have"
                )
        known = {_join_key(join) for node in graph.nodes for join in graph.joins_after(node)}
        for key in self.joins:
            if key not in known:
                raise GraphDefinitionError(
                    f"the checkpoint holds the progress of a join of {list(key[1])} into "
                    f"{key[0]!r}, which graph {graph.name!r} does not have"
                )

    def renamed(self, rename: Callable[[str], str]) -> Cursor:
        """The cursor with each node name ``n`` read as ``rename(n)`` (a migration's ``nodes``).

        Raises ``ValueError`` if two tasks become one (two old nodes renamed to one
        new node, both about to run).
        """
        tasks = tuple(
            sorted(
                (Task(rename(task.node), task.send, task.arg) for task in self.tasks),
                key=lambda task: task.order,
            )
        )
        if len({task.id for task in tasks}) != len(tasks):
            raise ValueError(
                f"two of the tasks {[task.id for task in self.tasks]} become one task once "
                f"renamed ({[task.id for task in tasks]})"
            )
        joins: dict[JoinKey, frozenset[str]] = {}
        for (target, sources), done in self.joins.items():
            key = (rename(target), tuple(sorted({rename(source) for source in sources})))
            joins[key] = joins.get(key, frozenset()) | {rename(node) for node in done}
        return Cursor(tasks, joins)

    def after(
        self,
        graph: BuiltGraph[Any],
        ran: Iterable[str],
        routes: Mapping[str, list[str | Send]],
    ) -> Cursor:
        """The cursor of the next superstep, once the nodes in ``ran`` have finished.

        ``ran`` is in canonical order; ``routes`` holds, for each node that ran,
        the targets and Sends (their arguments plain data) of its static and
        conditional edges, ``END`` left out. A node triggered several times runs
        once; each Send runs on its own, numbered per node in the order given.
        """
        triggered: set[str] = set()
        sends: list[Task] = []
        per_node: dict[str, int] = {}
        for node in ran:
            for route in routes.get(node, ()):
                if isinstance(route, Send):
                    index = per_node.get(route.node, 0)
                    per_node[route.node] = index + 1
                    sends.append(Task(route.node, index, route.arg))
                else:
                    triggered.add(route)
        joins = dict(self.joins)
        for node in ran:
            for join in graph.joins_after(node):
                key = _join_key(join)
                joins[key] = joins.get(key, frozenset()) | {node}
        for key, done in list(joins.items()):
            if done == frozenset(key[1]):
                del joins[key]  # all sources have finished: the target runs, the count restarts
                if key[0] != END:
                    triggered.add(key[0])
        tasks = [Task(node) for node in triggered] + sends
        return Cursor(tuple(sorted(tasks, key=lambda task: task.order)), joins)


def summary(tasks: Iterable[Task]) -> str:
    """Tasks for people: ``"web"``, ``"docs, web"``, ``"summarise x8"``; at most 256 characters."""
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.node] = counts.get(task.node, 0) + 1
    text = ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())
    if len(text) > MAX_NODE_LENGTH:
        text = text[: MAX_NODE_LENGTH - 3] + "..."
    return text


def _join_key(join: JoinEdge) -> JoinKey:
    return (join.target, tuple(sorted(join.sources)))


# Kept as they are: what MessagePack holds besides the JSON types.
_AS_IS = (bytes, bytearray, memoryview, datetime.datetime)


class _StoredTask(msgspec.Struct, omit_defaults=True):
    node: str
    send: int | None = None
    arg: Any = None


class _StoredJoin(msgspec.Struct, rename={"sources": "from"}):
    to: str
    sources: list[str]
    done: list[str]


class _StoredCursor(msgspec.Struct):
    tasks: list[_StoredTask] = []
    joins: list[_StoredJoin] = []
