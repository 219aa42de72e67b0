"""Identifiers: checkpoint ids (time-ordered UUIDv7) and validated trace ids."""

from __future__ import annotations

from typing import NewType
from uuid import UUID, SafeUUID

import uuid6

from flowpoint.errors import InvalidTraceId

__all__ = [
    "MAX_TRACE_ID_LENGTH",
    "CheckpointId",
    "TraceId",
    "new_checkpoint_id",
    "uuid_from_bytes",
    "validate_trace_id",
]

CheckpointId = NewType("CheckpointId", UUID)
"""A checkpoint's id: a UUID, time-ordered (version 7) when flowpoint makes it."""

TraceId = NewType("TraceId", str)
"""One run (thread) of a workflow: 1 to 256 printable characters, e.g. ``"user-42/session-7"``."""

MAX_TRACE_ID_LENGTH = 256


def new_checkpoint_id() -> CheckpointId:
    """Make a new time-ordered checkpoint id (UUIDv7)."""
    # uuid6 returns its own UUID subclass; a plain UUID keeps equality, hashing and
    # encoders free of surprises.
    return CheckpointId(UUID(int=uuid6.uuid7().int))


_new_object = object.__new__
_set_attribute = object.__setattr__


def uuid_from_bytes(value: bytes) -> UUID:
    """``UUID(bytes=value)`` for exactly 16 bytes, which the caller has checked.

    Made as ``UUID.__init__`` makes it, without parsing its arguments: reads of
    stored headers make two for every row they return.
    """
    made: UUID = _new_object(UUID)
    _set_attribute(made, "int", int.from_bytes(value, "big"))
    _set_attribute(made, "is_safe", SafeUUID.unknown)
    return made


def validate_trace_id(value: object) -> TraceId:
    """Return ``value`` as a :data:`TraceId`, or raise :class:`InvalidTraceId`.

    Any printable text of 1 to 256 characters is valid, including ``/``, ``..``,
    spaces and non-ASCII letters; every backend stores such ids safely. Control
    characters, lone surrogates and other non-printable characters are refused.

    >>> validate_trace_id("user-42/session-7")
    'user-42/session-7'
    """
    if not isinstance(value, str):
        raise InvalidTraceId(f"a trace id must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidTraceId("a trace id must not be empty")
    if len(value) > MAX_TRACE_ID_LENGTH:
        raise InvalidTraceId(
            f"a trace id has at most {MAX_TRACE_ID_LENGTH} characters, this one has {len(value)}"
        )
    if not value.isprintable():
        bad = next(ch for ch in value if not ch.isprintable())
        raise InvalidTraceId(
            f"a trace id must be printable text; {value[:40]!r} holds U+{ord(bad):04X}"
        )
    return TraceId(value)


def coerce_checkpoint_id(value: object) -> CheckpointId:
    """Accept a checkpoint id as a UUID or its string form; raise ``ValueError`` otherwise."""
    if isinstance(value, UUID):
        return CheckpointId(value)
    if isinstance(value, str):
        try:
            return CheckpointId(UUID(value))
        except ValueError:
            pass
    raise ValueError(f"not a checkpoint id: {value!r:.60}")
