"""The errors flowpoint raises.

Every error a load or a save can raise, for any bytes a store returns, is a
:class:`CheckpointStoreError`; the workflow layer adds :class:`WorkflowError`::

    CheckpointStoreError
     ├── GraphMismatch        the checkpoint was written by another graph
     ├── CheckpointConflict   the trace already has a checkpoint at that step
     ├── CorruptCheckpoint    stored bytes or header columns are damaged
     ├── CodecError           a state cannot be encoded, or decoded into its type
     ├── StorageError         the backend failed (the driver's error is ``__cause__``)
     └── InvalidTraceId       also a ValueError: the trace id is not acceptable

    WorkflowError
     ├── GraphDefinitionError also a ValueError: the graph cannot be built as declared
     ├── InvalidRoute         a router returned a target it did not declare
     ├── InvalidUpdate        a node or a resume returned an update that does not fit the state
     ├── RecursionLimitReached a run executed more nodes than its limit allows
     └── TraceNotFound        also a LookupError: nothing to resume or fork

Errors carry the facts as attributes; their messages are built from them.
"""

from __future__ import annotations

from uuid import UUID

__all__ = [
    "CheckpointConflict",
    "CheckpointStoreError",
    "CodecError",
    "CorruptCheckpoint",
    "GraphDefinitionError",
    "GraphMismatch",
    "InvalidRoute",
    "InvalidTraceId",
    "InvalidUpdate",
    "RecursionLimitReached",
    "StorageError",
    "TraceNotFound",
    "WorkflowError",
]


class CheckpointStoreError(Exception):
    """Base class of every error flowpoint raises about checkpoints and stores."""


class GraphMismatch(CheckpointStoreError):
    """The stored graph hash is not the one the caller expects.

    Raised before any state is decoded: a checkpoint written by one graph is never
    resumed on another.
    """

    def __init__(self, expected: int, actual: int, hint: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.hint = hint
        message = (
            f"graph mismatch: the checkpoint was written by graph 0x{actual:016x}, "
            f"but the caller expects graph 0x{expected:016x}"
        )
        super().__init__(f"{message}; {hint}" if hint else message)

    def __reduce__(self) -> tuple[type[GraphMismatch], tuple[int, int, str | None]]:
        return (type(self), (self.expected, self.actual, self.hint))


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


class WorkflowError(Exception):
    """Base class of the errors the workflow layer (graphs and runners) raises."""


class GraphDefinitionError(WorkflowError, ValueError):
    """The graph cannot be built as declared: an unknown target, an unreachable node..."""


class InvalidRoute(WorkflowError):
    """A router returned a target that is not among those it declared."""

    def __init__(self, node: str, route: object, targets: tuple[str, ...]) -> None:
        self.node = node
        self.route = route
        self.targets = targets
        super().__init__(
            f"the router after node {node!r} returned {route!r:.80}, which is not one of its "
            f"declared targets {list(targets)}"
        )

    def __reduce__(self) -> tuple[type[InvalidRoute], tuple[str, object, tuple[str, ...]]]:
        return (type(self), (self.node, self.route, self.targets))


class InvalidUpdate(WorkflowError, TypeError):
    """A node's return value or a resume's update does not fit the state type."""


class RecursionLimitReached(WorkflowError):
    """A run executed as many nodes as its limit allows without reaching the end.

    The position is saved before this is raised (unless the store failed under
    ``on_save_error="warn"``): resume the trace to continue with a new budget.
    """

    def __init__(self, trace_id: str, limit: int, node: str) -> None:
        self.trace_id = trace_id
        self.limit = limit
        self.node = node
        super().__init__(
            f"trace {trace_id!r} ran {limit} nodes without reaching END (next: {node!r}); "
            f"a loop may not terminate. Fix the graph or raise recursion_limit, then resume "
            f"the trace: it continues from its latest checkpoint"
        )

    def __reduce__(self) -> tuple[type[RecursionLimitReached], tuple[str, int, str]]:
        return (type(self), (self.trace_id, self.limit, self.node))


class TraceNotFound(WorkflowError, LookupError):
    """There is no checkpoint to resume or fork from."""
