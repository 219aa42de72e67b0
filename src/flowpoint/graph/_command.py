"""Commands: a node's update together with where the run goes next.

A node declares where it may send the run (``add_node("triage", triage,
goto=["refund", "escalate", END])``) and returns a :class:`Command` to choose::

    def triage(ticket: Ticket) -> Command:
        return Command(update={"kind": "refund"}, goto="refund")

A ``goto`` replaces the node's static and conditional edges for that run (those
edges are followed only after tasks of the node that returned no ``goto``); a
join still counts the node as finished. The update is applied as any node's,
reducers included.

In a superstep of several tasks, a task's update is saved as a pending write as
soon as it finishes; its ``goto`` is saved in the same write batch, under
:data:`GOTO_CHANNEL`, so that a resume routes the restored task as the run would
have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowpoint.checkpoint import TaskWrite
from flowpoint.errors import CorruptCheckpoint, InvalidRoute
from flowpoint.graph._builder import END, Node, Send
from flowpoint.ids import CheckpointId

__all__ = [
    "GOTO_CHANNEL",
    "GOTO_INDEX",
    "Command",
    "Routed",
    "check",
    "map_update",
    "returned",
    "updates_and_gotos",
    "with_gotos",
    "writes",
]

GOTO_INDEX = 1
"""The index of a task's ``goto`` among its pending writes (after its update, at 0)."""
GOTO_CHANNEL = "__goto__"
"""The channel of a task's ``goto``: a list of node names and ``{"node":..., "arg":...}`` Sends."""

Goto = str | Send | Sequence[str | Send]


@dataclass(frozen=True, slots=True)
class Command:
    """What a node returns to update the state and choose where the run goes next.

    ``update`` is what a node returns otherwise (a dict of fields, a whole
    state, or ``None``). ``goto`` is one of the node's declared ``goto`` targets
    (a node or ``END``), a :class:`~flowpoint.Send` to one of them, or a list of
    those (all run in the next superstep; an empty list ends this branch).
    ``goto=None`` follows the node's edges as if it had returned ``update``.
    A target the node did not declare fails the node with
    :class:`~flowpoint.errors.InvalidRoute`.
    """

    update: Any = None
    goto: Goto | None = None

    def __post_init__(self) -> None:
        if isinstance(self.update, Command):
            raise TypeError("a Command's update cannot be another Command")
        goto = self.goto
        if goto is None or isinstance(goto, str | Send):
            return
        if not isinstance(goto, list | tuple) or not all(
            isinstance(one, str | Send) for one in goto
        ):
            raise TypeError(
                f"a Command goes to a node name, END, a Send, or a list of those, not {goto!r:.60}"
            )


@dataclass(frozen=True, slots=True)
class Routed:
    """A task's update with the routes its Command chose, as the runner carries it.

    ``goto`` holds node names and Sends (their arguments plain data), ``END``
    left out: what :meth:`~flowpoint.graph._cursor.Cursor.after` takes.
    """

    update: Any
    goto: tuple[str | Send, ...]


def check(node: Node, returned: Any, plain: Callable[[Send], Any]) -> Any:
    """``returned`` as the runner carries it: a :class:`Routed` for a Command with a goto.

    A Command without a goto is its update. ``plain(send)`` is a Send's argument
    as plain data (it raises :class:`~flowpoint.errors.InvalidRoute` for one that
    does not fit its node). Raises :class:`~flowpoint.errors.InvalidRoute` for a
    target ``node`` did not declare.
    """
    if not isinstance(returned, Command):
        return returned
    if returned.goto is None:
        return returned.update
    goto = returned.goto
    chosen: list[str | Send] = [goto] if isinstance(goto, str | Send) else list(goto)
    declared = node.goto or ()
    routes: list[str | Send] = []
    for one in chosen:
        target = one.node if isinstance(one, Send) else one
        if target not in declared or (isinstance(one, Send) and target == END):
            raise InvalidRoute(node.name, one, declared, kind="command")
        if isinstance(one, Send):
            routes.append(Send(one.node, plain(one)))
        elif one != END:
            routes.append(one)
    return Routed(returned.update, tuple(routes))


def map_update(update: Any, change: Callable[[Any], Any]) -> Any:
    """``update`` with ``change`` applied to what it updates (inside a :class:`Routed`).

    ``None``, no change, stays ``None``.
    """
    if isinstance(update, Routed):
        return Routed(None if update.update is None else change(update.update), update.goto)
    return None if update is None else change(update)


def writes(task_id: str, index: int, channel: str, update: Any) -> tuple[TaskWrite, ...]:
    """The pending writes of a task's plain ``update``: the update, then its goto if any."""
    if not isinstance(update, Routed):
        return (TaskWrite(task_id, index, channel, update),)
    goto = [
        one if isinstance(one, str) else {"node": one.node, "arg": one.arg} for one in update.goto
    ]
    return (
        TaskWrite(task_id, index, channel, update.update),
        TaskWrite(task_id, GOTO_INDEX, GOTO_CHANNEL, goto),
    )


def returned(update: Any) -> Any:
    """What the node returned, for people: a :class:`Routed` update as its :class:`Command`."""
    if isinstance(update, Routed):
        return Command(update.update, list(update.goto))
    return update


def with_gotos(
    updates: Mapping[str, Any],
    stored: Iterable[TaskWrite],
    nodes: Mapping[str, Node],
    checkpoint_id: CheckpointId,
) -> dict[str, Any]:
    """The plain ``updates`` of restored tasks (by task id), with their saved gotos.

    ``nodes`` maps each task id to its node. A saved goto that is not a list of
    the node's declared targets (and Sends to them) raises
    :class:`~flowpoint.errors.CorruptCheckpoint`: the runner wrote none such.
    """
    found = dict(updates)
    for write in stored:
        if write.index != GOTO_INDEX or write.channel != GOTO_CHANNEL or write.task_id not in found:
            continue
        declared = set(nodes[write.task_id].goto or ()) - {END}
        goto: list[str | Send] = []
        for one in write.value if isinstance(write.value, list) else [None]:
            if isinstance(one, str) and one in declared:
                goto.append(one)
            elif isinstance(one, dict) and one.get("node") in declared:
                goto.append(Send(one["node"], one.get("arg")))
            else:
                raise CorruptCheckpoint(
                    checkpoint_id,
                    f"the saved goto of task {write.task_id!r} is {write.value!r:.80}, not a "
                    f"list of its node's declared targets",
                )
        found[write.task_id] = Routed(found[write.task_id], tuple(goto))
    return found


def updates_and_gotos(
    outcomes: Iterable[tuple[str, str, Any]],
) -> tuple[list[tuple[str, Any]], dict[str, list[str | Send]], set[str]]:
    """Split a superstep's ``(node, task id, update)`` into what :meth:`StateType.merge` takes.

    Returns the ``(task id, update)`` pairs, the routes the Commands chose by
    node, and the nodes whose edges are still followed: those with a task that
    returned no goto.
    """
    updates: list[tuple[str, Any]] = []
    gotos: dict[str, list[str | Send]] = {}
    follow: set[str] = set()
    for node, task_id, update in outcomes:
        if isinstance(update, Routed):
            updates.append((task_id, update.update))
            gotos.setdefault(node, []).extend(update.goto)
        else:
            updates.append((task_id, update))
            follow.add(node)
    return updates, gotos, follow
