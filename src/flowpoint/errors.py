"""The errors flowpoint raises.

Every error a load or a save can raise, for any bytes a store returns, is a
:class:`CheckpointStoreError`; the workflow layer adds :class:`WorkflowError`::

    CheckpointStoreError
     ├── GraphMismatch        the checkpoint was written by another graph
     ├── CheckpointConflict   the trace already has a checkpoint at that step
     ├── CorruptCheckpoint    stored bytes or header columns are damaged
     ├── CodecError           a state cannot be encoded, or decoded into its type
     ├── StorageError         the backend failed (the driver's error is ``__cause__``)
     ├── InvalidTraceId       also a ValueError: the trace id is not acceptable
     └── LeaseLost            a fenced save of a queued run whose lease is no longer held

    WorkflowError
     ├── GraphDefinitionError also a ValueError: the graph cannot be built as declared
     ├── InvalidRoute         a router or a Command chose a target it did not declare
     ├── InvalidUpdate        a node or a resume returned an update that does not fit the state
     ├── RecursionLimitReached a run executed more supersteps than its limit allows
     ├── TraceNotFound        also a LookupError: nothing to resume or fork
     ├── MigrationFailed      a trace's checkpoint could not be moved onto the current graph
     ├── InterruptOutsideNode also a RuntimeError: interrupt() called where no node runs
     ├── InvalidInterrupt     also a TypeError: an interrupt's payload or answer cannot be stored
     ├── NoPendingInterrupt   also a ValueError: resume(value=...) on a trace not paused in a node
     └── RunConflict          the run queue cannot do this to the run as it stands

Errors carry the facts as attributes; their messages are built from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID

__all__ = [
    "CheckpointConflict",
    "CheckpointStoreError",
    "CodecError",
    "CorruptCheckpoint",
    "GraphDefinitionError",
    "GraphMismatch",
    "InterruptOutsideNode",
    "InvalidInterrupt",
    "InvalidRoute",
    "InvalidTraceId",
    "InvalidUpdate",
    "LeaseLost",
    "MigrationFailed",
    "NoPendingInterrupt",
    "RecursionLimitReached",
    "RunConflict",
    "StorageError",
    "TraceNotFound",
    "WorkflowError",
]


class CheckpointStoreError(Exception):
    """Base class of every error flowpoint raises about checkpoints and stores."""


class GraphMismatch(CheckpointStoreError):
    """The stored graph hash is not the one the caller expects.

    Raised before any state is decoded: a checkpoint written by one graph is never
    resumed on another. ``migrations`` lists the graph hashes the expected graph
    declares migrations from (see ``Graph.migration``), when there are some but
    none from ``actual``; the message names them.
    """

    def __init__(
        self,
        expected: int,
        actual: int,
        hint: str | None = None,
        migrations: tuple[int, ...] = (),
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.hint = hint
        self.migrations = tuple(migrations)
        message = (
            f"graph mismatch: the checkpoint was written by graph 0x{actual:016x}, "
            f"but the caller expects graph 0x{expected:016x}"
        )
        if self.migrations:
            listed = ", ".join(f"0x{one:016x}" for one in self.migrations)
            message += f" (it has migrations from {listed} only)"
        super().__init__(f"{message}; {hint}" if hint else message)

    def __reduce__(
        self,
    ) -> tuple[type[GraphMismatch], tuple[int, int, str | None, tuple[int, ...]]]:
        return (type(self), (self.expected, self.actual, self.hint, self.migrations))


class CheckpointConflict(CheckpointStoreError):
    """The trace already holds a checkpoint at this step (or one with this id).

    Of several writers saving the same ``(trace_id, step)`` exactly one succeeds;
    the others get this error and nothing of theirs is stored.
    """

    def __init__(self, trace_id: str, step: int, detail: str | None = None) -> None:
        self.trace_id = trace_id
        self.step = step
        self.detail = detail
        message = f"trace {trace_id!r} already has a checkpoint at step {step}"
        super().__init__(f"{message}: {detail}" if detail else message)

    def __reduce__(self) -> tuple[type[CheckpointConflict], tuple[str, int, str | None]]:
        return (type(self), (self.trace_id, self.step, self.detail))


class CorruptCheckpoint(CheckpointStoreError):
    """Stored data is damaged: bad magic, checksum, truncation, or disagreeing headers."""

    def __init__(self, checkpoint_id: UUID | None, reason: str) -> None:
        self.checkpoint_id = checkpoint_id
        self.reason = reason
        where = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else "checkpoint"
        super().__init__(f"{where} is corrupt: {reason}")

    def __reduce__(self) -> tuple[type[CorruptCheckpoint], tuple[UUID | None, str]]:
        return (type(self), (self.checkpoint_id, self.reason))


class CodecError(CheckpointStoreError):
    """A state cannot be encoded, or intact stored data does not fit the declared type."""


class StorageError(CheckpointStoreError):
    """The backend failed; the driver's own exception is the ``__cause__``."""


class InvalidTraceId(CheckpointStoreError, ValueError):
    """A trace id that is empty, too long, or holds non-printable characters."""


class LeaseLost(CheckpointStoreError):
    """A fenced save found that the run's lease is not held at ``epoch`` any more.

    The run queue gives each claim of a run a lease with a new ``epoch``; the
    worker's saves of that run check, in the same transaction as the write, that
    the run is still running under that epoch with its lease unexpired. When it is
    not (the lease expired, another worker claimed the run, or it was cancelled),
    nothing is saved and this is raised: the worker stops the run.
    """

    def __init__(self, trace_id: str, epoch: int) -> None:
        self.trace_id = trace_id
        self.epoch = epoch
        super().__init__(
            f"the lease of run {trace_id!r} at epoch {epoch} is lost (it expired, another "
            f"worker claimed the run, or it was cancelled): nothing was saved"
        )

    def __reduce__(self) -> tuple[type[LeaseLost], tuple[str, int]]:
        return (type(self), (self.trace_id, self.epoch))


class WorkflowError(Exception):
    """Base class of the errors the workflow layer (graphs and runners) raises."""


class GraphDefinitionError(WorkflowError, ValueError):
    """The graph cannot be built as declared: an unknown target, an unreachable node..."""


class InvalidRoute(WorkflowError):
    """A router or a node's ``Command`` chose a target it did not declare, or a bad ``Send``.

    ``kind`` says who chose: ``"router"`` (the router after ``node``) or
    ``"command"`` (``node`` returned a ``Command``; ``route`` is the target it
    chose and ``targets`` the node's declared ``goto`` targets). ``reason`` says
    what is wrong with a route that names a declared target (a ``Send`` whose
    argument cannot be stored or does not fit the node); it is ``None`` for an
    undeclared target.
    """

    def __init__(
        self,
        node: str,
        route: object,
        targets: tuple[str, ...],
        reason: str | None = None,
        *,
        kind: Literal["router", "command"] = "router",
    ) -> None:
        self.node = node
        self.route = route
        self.targets = targets
        self.reason = reason
        self.kind = kind
        who = f"the router after node {node!r}" if kind == "router" else f"node {node!r}"
        chose = (
            f"returned {route!r:.80}"
            if kind == "router"
            else f"returned a Command to {route!r:.80}"
        )
        if reason is not None:
            message = f"{who} {chose}: {reason}"
        elif kind == "router":
            message = f"{who} {chose}, which is not one of its declared targets {list(targets)}"
        elif not targets:
            message = (
                f"{who} {chose}, but declares no goto targets "
                f"(declare them: add_node({node!r}, ..., goto=[...]))"
            )
        else:
            message = (
                f"{who} {chose}, which is not one of its declared goto targets {list(targets)}"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Callable[..., InvalidRoute], tuple[Any, ...]]:
        return (_invalid_route, (self.node, self.route, self.targets, self.reason, self.kind))


def _invalid_route(
    node: str,
    route: object,
    targets: tuple[str, ...],
    reason: str | None,
    kind: Literal["router", "command"],
) -> InvalidRoute:
    return InvalidRoute(node, route, targets, reason, kind=kind)


class InvalidUpdate(WorkflowError, TypeError):
    """A node's return value or a resume's update does not fit the state type.

    When two tasks of one superstep write the same field and the field has no
    reducer, ``field`` names it and ``tasks`` the two tasks (``"web"``, or
    ``"summarise#3"`` for a ``Send``); otherwise they are ``None`` and ``()``.
    """

    def __init__(
        self, message: str, *, field: str | None = None, tasks: tuple[str, ...] = ()
    ) -> None:
        self.field = field
        self.tasks = tasks
        super().__init__(message)

    def __reduce__(
        self,
    ) -> tuple[Callable[..., InvalidUpdate], tuple[str, str | None, tuple[str, ...]]]:
        return (_invalid_update, (str(self), self.field, self.tasks))


def _invalid_update(message: str, field: str | None, tasks: tuple[str, ...]) -> InvalidUpdate:
    return InvalidUpdate(message, field=field, tasks=tasks)


class RecursionLimitReached(WorkflowError):
    """A run executed as many supersteps as its limit allows without reaching the end.

    A superstep runs the tasks that are ready together (one node, in a graph
    without parallel branches); ``node`` names what would have run next (the
    node, or a summary such as ``"docs, web"`` when several would).

    The position is saved before this is raised (unless the store failed under
    ``on_save_error="warn"``): resume the trace to continue with a new budget.
    """

    def __init__(self, trace_id: str, limit: int, node: str) -> None:
        self.trace_id = trace_id
        self.limit = limit
        self.node = node
        super().__init__(
            f"trace {trace_id!r} ran {limit} steps without reaching END (next: {node!r}); "
            f"a loop may not terminate. Fix the graph or raise recursion_limit, then resume "
            f"the trace: it continues from its latest checkpoint"
        )

    def __reduce__(self) -> tuple[type[RecursionLimitReached], tuple[str, int, str]]:
        return (type(self), (self.trace_id, self.limit, self.node))


class TraceNotFound(WorkflowError, LookupError):
    """There is no checkpoint to resume or fork from."""


class RunConflict(WorkflowError):
    """The run queue cannot do what was asked to the run as it stands.

    Submitting a trace the queue holds already (without the same ``dedup_key``),
    or resuming a run that is not ``interrupted``. ``status`` is the run's status
    when it was refused.
    """

    def __init__(self, trace_id: str, status: str, reason: str) -> None:
        self.trace_id = trace_id
        self.status = status
        self.reason = reason
        super().__init__(f"run {trace_id!r} is {status}: {reason}")

    def __reduce__(self) -> tuple[type[RunConflict], tuple[str, str, str]]:
        return (type(self), (self.trace_id, self.status, self.reason))


class MigrationFailed(WorkflowError):
    """A trace's latest checkpoint could not be moved onto the current graph by its migrations.

    ``reason`` says why: the migration function raised (its exception is the
    ``__cause__``) or returned a state that does not fit the next state type, the
    stored state does not decode as the migration's ``state``, or the stored
    position names a node the current graph does not have and ``nodes=`` does not
    map. ``from_hash`` is the graph hash the checkpoint was written with,
    ``migration`` the qualified name of the migration function at fault (``None``
    when no function is). Nothing of the trace is written when this is raised.
    """

    def __init__(self, trace_id: str, from_hash: int, migration: str | None, reason: str) -> None:
        self.trace_id = trace_id
        self.from_hash = from_hash
        self.migration = migration
        self.reason = reason
        by = f" by {migration}" if migration else ""
        super().__init__(
            f"trace {trace_id!r} (graph 0x{from_hash:016x}) cannot be migrated{by}: {reason}"
        )

    def __reduce__(self) -> tuple[type[MigrationFailed], tuple[str, int, str | None, str]]:
        return (type(self), (self.trace_id, self.from_hash, self.migration, self.reason))


class InterruptOutsideNode(WorkflowError, RuntimeError):
    """:func:`~flowpoint.interrupt` was called where no node of a run is running.

    It pauses the node that calls it, so it works only in a node's own code (sync
    or async, in the node's task or worker thread), not in a router, nor in a
    task or thread the node starts itself.
    """

    def __init__(self) -> None:
        super().__init__(
            "interrupt() was called outside a running node; call it in the code of a node "
            "that a Runner runs"
        )

    def __reduce__(self) -> tuple[type[InterruptOutsideNode], tuple[()]]:
        return (type(self), ())


class InvalidInterrupt(WorkflowError, TypeError):
    """An interrupt's payload, or the answer given to it, cannot be stored.

    Both are kept in the checkpoint as plain data (what MessagePack holds); ``task``
    names the task whose interrupt it is, ``reason`` what is wrong.
    """

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"the interrupt of task {task!r} cannot be stored: {reason}")

    def __reduce__(self) -> tuple[type[InvalidInterrupt], tuple[str, str]]:
        return (type(self), (self.task, self.reason))


class NoPendingInterrupt(WorkflowError, ValueError):
    """``resume(trace, value=...)`` on a trace whose latest checkpoint awaits no answer."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id
        super().__init__(
            f"trace {trace_id!r} is not paused by interrupt(): there is nothing to answer "
            f"with value=; resume it without one (or with update=)"
        )

    def __reduce__(self) -> tuple[type[NoPendingInterrupt], tuple[str]]:
        return (type(self), (self.trace_id,))
