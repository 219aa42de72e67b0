"""The workflow layer's view of a checkpoint: a typed state and an execution cursor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, runtime_checkable

from typing_extensions import TypeVar

from flowpoint.blob import (
    Metadata,
    check_header,
    check_write_key,
    utc,
    validate_current_node,
    validate_metadata,
)
from flowpoint.ids import CheckpointId, new_checkpoint_id

__all__ = ["MAX_CHANNEL_LENGTH", "Checkpoint", "S", "State", "TaskWrite", "WorkflowState"]

MAX_CHANNEL_LENGTH = 256
"""Characters in a task write's ``channel`` or ``task_path``, at most."""

State = dict[str, Any]
"""The default state type: a plain dict of JSON-like values, datetimes, UUIDs and bytes."""

S = TypeVar("S", default=State)


@runtime_checkable
class WorkflowState(Protocol):
    """A state that persists a projection of itself rather than all of its fields.

    Any type the codec can encode may be a state (dicts, dataclasses, ``TypedDict``,
    ``msgspec.Struct``, pydantic models). Implement this protocol when part of a
    state must stay out of the checkpoint (runtime handles, caches, clients):
    ``__flowpoint_snapshot__`` returns the encodable data to store, and
    ``__flowpoint_restore__`` builds the state back from it. When the snapshot
    method has a return annotation, stored data is decoded into that type first.
    """

    def __flowpoint_snapshot__(self) -> Any:
        """Return the part of the state to store."""
        ...

    @classmethod
    def __flowpoint_restore__(cls, data: Any) -> Self:
        """Build the state back from what ``__flowpoint_snapshot__`` returned."""
        ...


@dataclass(frozen=True, slots=True)
class Checkpoint(Generic[S]):
    """An immutable snapshot of a run: the state and the node to run next.

    ``current_node`` is ``None`` when the run has finished. Make the first
    checkpoint of a trace with :meth:`first` and each next one with :meth:`child`;
    both stamp a new time-ordered id and the current UTC time.

    ``cursor`` is the runner's own record of what runs next when ``current_node``
    cannot say it all (several tasks, a ``Send``'s argument, joins under way):
    plain data (dicts with str keys, lists, str, numbers, bytes, datetimes,
    ``None``), stored in the checkpoint's body with the state, never in its
    header. It is empty otherwise, and in checkpoints written before it existed;
    ``current_node`` then names the next node, and otherwise summarises the
    next tasks for people (``"docs, web"``, ``"summarise x8"``).

    >>> first = Checkpoint.first("plan", {"question": "why?"})
    >>> nxt = first.child("act", {"question": "why?", "plan": ["look"]})
    >>> (first.step, nxt.step, nxt.parent_id == first.checkpoint_id)
    (0, 1, True)
    """

    checkpoint_id: CheckpointId
    step: int
    parent_id: CheckpointId | None
    current_node: str | None
    state: S
    created_at: datetime
    metadata: Metadata = field(default_factory=dict)
    cursor: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_header(self.step, 0, self.created_at)
        validate_current_node(self.current_node)
        object.__setattr__(self, "created_at", utc(self.created_at))
        object.__setattr__(self, "metadata", validate_metadata(self.metadata))
        if not isinstance(self.cursor, Mapping) or not all(
            isinstance(key, str) for key in self.cursor
        ):
            raise ValueError(
                f"a checkpoint's cursor is a dict of str keys, not {self.cursor!r:.60}"
            )
        object.__setattr__(self, "cursor", dict(self.cursor))

    @classmethod
    def first(
        cls,
        current_node: str | None,
        state: S,
        *,
        metadata: Mapping[str, Any] | None = None,
        cursor: Mapping[str, Any] | None = None,
    ) -> Checkpoint[S]:
        """The first checkpoint of a trace: step 0, no parent."""
        return cls(
            checkpoint_id=new_checkpoint_id(),
            step=0,
            parent_id=None,
            current_node=current_node,
            state=state,
            created_at=datetime.now(UTC),
            metadata=validate_metadata(metadata),
            cursor=cursor or {},
        )

    def child(
        self,
        current_node: str | None,
        state: S,
        *,
        metadata: Mapping[str, Any] | None = None,
        cursor: Mapping[str, Any] | None = None,
    ) -> Checkpoint[S]:
        """The checkpoint after this one: the next step, with this one as parent."""
        return Checkpoint(
            checkpoint_id=new_checkpoint_id(),
            step=self.step + 1,
            parent_id=self.checkpoint_id,
            current_node=current_node,
            state=state,
            created_at=datetime.now(UTC),
            metadata=validate_metadata(metadata),
            cursor=cursor or {},
        )


@dataclass(frozen=True, slots=True)
class TaskWrite:
    """One write of a task of a superstep, saved against the checkpoint the task ran from.

    A task writes ``value`` to ``channel``; ``index`` orders the task's writes
    (0, 1, ... for its outputs; reserved negative indexes for what is not an
    output, such as the error it raised). ``task_path`` is free text for a
    runtime that keeps where a task came from. ``value`` is stored as the codec
    stores state values (encrypted and compressed with them) and reads back as
    plain data: dicts, lists, str, numbers, bytes, datetimes, ``None``.

    >>> TaskWrite("summarise#3", 0, "update", {"summaries": ["..."]}).task_id
    'summarise#3'
    """

    task_id: str
    index: int
    channel: str
    value: Any
    task_path: str = ""

    def __post_init__(self) -> None:
        check_write_key(self.task_id, self.index)
        for name in ("channel", "task_path"):
            text = getattr(self, name)
            if not isinstance(text, str) or len(text) > MAX_CHANNEL_LENGTH:
                raise ValueError(
                    f"a task write's {name} is a str of at most {MAX_CHANNEL_LENGTH} "
                    f"characters, not {text!r:.40}"
                )
        if not self.channel:
            raise ValueError("a task write names its channel")
