"""``interrupt()``: a node pauses its run, and the answers a checkpoint carries for it.

A node calls ``answer = interrupt(payload)``. The first time, the call stops the
node (with :class:`NodePaused`, a ``BaseException`` so that a node's own
``except Exception`` does not swallow it) and the run pauses: the superstep is
saved as not run yet, with the payload waiting for an answer. ``resume(trace,
value=...)`` records the answer and runs the node again from the top; its first
``interrupt()`` now returns that answer at once, and a second one pauses again.
The answers of a task are replayed in order, as LangGraph does.

The checkpoint's cursor holds this, as plain data, beside the tasks::

    {"tasks": [...], "joins": [...],
     "interrupts": [{"task": "publish", "node": "publish", "answers": [true],
                     "waiting": true, "payload": {"draft": "..."}}]}

``answers`` are those given so far, in order; ``waiting`` says the last call is
still waiting, with its ``payload``. Nothing in it differs from run to run, so
the same run stores the same bytes.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from flowpoint.errors import InterruptOutsideNode, InvalidInterrupt
from flowpoint.graph._cursor import Cursor, Task
from flowpoint.graph._state import to_plain

__all__ = [
    "NodePaused",
    "Paused",
    "Waiting",
    "answered",
    "given_answers",
    "interrupt",
    "pausing",
    "plain_answer",
    "read",
    "run_answering",
    "waiting",
]


class Waiting(msgspec.Struct, omit_defaults=True):
    """The interrupt state of one task, as the cursor stores it.

    ``child_step`` is, for a subgraph node whose child trace asked (a question of
    one of its nodes), the step that trace is named after: the node's runs after
    each answer, at later steps, go on in it.
    """

    task: str
    node: str
    answers: list[Any] = []
    waiting: bool = False
    payload: Any = None
    child_step: int | None = None


class _Stored(msgspec.Struct):
    interrupts: list[Waiting] = []


class NodePaused(BaseException):
    """Raised by :func:`interrupt` to stop its node; the runner catches it.

    A ``BaseException``, like ``asyncio.CancelledError``: a node's ``except
    Exception`` lets it through, and so does a retry policy. ``child_step`` is
    the step a subgraph node's child trace that asked is named after.
    """

    def __init__(self, payload: Any, child_step: int | None = None) -> None:
        super().__init__("the node paused: interrupt() waits for an answer")
        self.payload = payload
        self.child_step = child_step


@dataclass(frozen=True, slots=True)
class Paused:
    """What a task that called :func:`interrupt` gives instead of an update."""

    payload: Any
    child_step: int | None = None


@dataclass(slots=True)
class _Scope:
    task: str
    answers: tuple[Any, ...]
    used: int = 0


# Kept as they are, as in the cursor: what MessagePack holds besides the JSON types.
_AS_IS = (bytes, bytearray, memoryview, datetime.datetime)

_SCOPE: ContextVar[_Scope | None] = ContextVar("flowpoint_interrupt_scope", default=None)


def interrupt(payload: Any = None) -> Any:
    """Pause the run at this node until ``runner.resume(trace, value=...)`` answers.

    Returns the answer once there is one: the node runs again from the top on
    resume, and each ``interrupt()`` call returns the answer given to it, in
    order; the first call without an answer pauses the run again. ``payload``
    (what the human is asked) is stored with the checkpoint as plain data, and
    comes back as ``RunResult.interrupt`` and in ``flowpoint show``.

    Raises :class:`~flowpoint.errors.InterruptOutsideNode` when no node is
    running (a router, a script), and :class:`~flowpoint.errors.InvalidInterrupt`
    (a ``TypeError``) for a payload that cannot be stored.
    """
    scope = _SCOPE.get()
    if scope is None:
        raise InterruptOutsideNode
    if scope.used < len(scope.answers):
        answer = scope.answers[scope.used]
        scope.used += 1
        return answer
    raise NodePaused(_plain(scope.task, payload, "payload"))


def given_answers() -> tuple[Any, ...]:
    """The answers given so far to the running task's ``interrupt()`` calls, in order.

    Empty outside a task. A subgraph node passes them on to its child trace.
    """
    scope = _SCOPE.get()
    return () if scope is None else scope.answers


async def run_answering(
    task: str, answers: Iterable[Any], node: Callable[[], Awaitable[Any]]
) -> Any:
    """Run ``node()`` with ``answers`` for its ``interrupt()`` calls; :class:`Paused` if it paused.

    The scope lives in a context variable: the runner gives each task its own
    context (and a sync node's worker thread a copy of it), so tasks of a
    superstep never see each other's answers.
    """
    token = _SCOPE.set(_Scope(task, tuple(answers)))
    try:
        return await node()
    except NodePaused as pause:
        return Paused(pause.payload, pause.child_step)
    finally:
        _SCOPE.reset(token)


def plain_answer(task: str, value: Any) -> Any:
    """An answer as it is stored, or :class:`~flowpoint.errors.InvalidInterrupt`."""
    return _plain(task, value, "answer")


def _plain(task: str, value: Any, what: str) -> Any:
    try:
        return to_plain(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise InvalidInterrupt(task, f"its {what} {value!r:.60} is not plain data: {exc}") from None


def read(cursor: Mapping[str, Any]) -> dict[str, Waiting]:
    """The interrupt state a stored cursor holds, by task id; ``ValueError`` if malformed."""
    if "interrupts" not in cursor:
        return {}
    try:
        stored = msgspec.convert(cursor, _Stored, builtin_types=_AS_IS)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the checkpoint's interrupts are not the runner's: {exc}") from None
    for record in stored.interrupts:
        if record.child_step is not None and record.child_step < 0:
            raise ValueError(
                f"the interrupt of task {record.task!r} names step {record.child_step}"
            )
    return {record.task: record for record in stored.interrupts}


def waiting(records: Mapping[str, Waiting]) -> Waiting | None:
    """Of :func:`read`'s records, the one the next resume answers: the first waiting."""
    return next((record for record in records.values() if record.waiting), None)


def pausing(
    cursor: Cursor, before: Mapping[str, Waiting], paused: Mapping[Task, Paused]
) -> dict[str, Any]:
    """The stored cursor of a superstep paused by ``paused`` tasks, to run again.

    Answers given before (``before``) are kept for every task, the finished ones
    included: without pending writes, they run again too.
    """
    records = dict(before)
    for task, pause in paused.items():
        earlier = before.get(task.id)
        records[task.id] = Waiting(
            task.id,
            task.node,
            answers=list(earlier.answers) if earlier else [],
            waiting=True,
            payload=pause.payload,
            child_step=pause.child_step,
        )
    return _with(cursor, records.values())


def answered(cursor: Cursor, stored: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """``stored`` (a paused superstep's cursor) with ``value`` answering its waiting interrupt."""
    records = read(stored)
    record = waiting(records)
    assert record is not None, "answered() is called on a paused superstep only"
    records[record.task] = Waiting(
        record.task,
        record.node,
        answers=[*record.answers, plain_answer(record.task, value)],
        child_step=record.child_step,
    )
    return _with(cursor, records.values())


def carried(old: Mapping[str, Any], cursor: Cursor, rename: Callable[[str], str]) -> dict[str, Any]:
    """``cursor`` stored with the interrupts of ``old`` (a stored cursor), nodes renamed.

    A migration moves a trace paused inside a node onto a graph whose nodes may
    have other names: the questions asked and the answers given go with the task.
    Raises ``ValueError`` if ``old`` holds malformed interrupts.
    """
    records = read(old)
    if not records:
        return cursor.to_stored()
    moved = []
    for record in records.values():
        node = rename(record.node)
        task = node + record.task[len(record.node) :]  # a Send keeps its "#index"
        moved.append(
            Waiting(
                task,
                node,
                list(record.answers),
                waiting=record.waiting,
                payload=record.payload,
                child_step=record.child_step,
            )
        )
    return _with(cursor, moved)


def _with(cursor: Cursor, records: Iterable[Waiting]) -> dict[str, Any]:
    order = {task.id: task.order for task in cursor.tasks}
    stored = cursor.to_stored() or {
        # A lone task triggered by an edge: spelled out, since a stored cursor is
        # read for its tasks whenever it is not empty.
        "tasks": [{"node": task.node} for task in cursor.tasks],
        "joins": [],
    }
    ordered = sorted(records, key=lambda record: order.get(record.task, ("", 0)))
    stored["interrupts"] = msgspec.to_builtins(ordered, builtin_types=_AS_IS)
    return stored
