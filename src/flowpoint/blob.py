"""What stores see: a checkpoint's header and its encoded bytes, never the state type."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

import msgspec

from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = [
    "HEADER_FIELDS",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_SIZE",
    "MAX_METADATA_STRING_LENGTH",
    "MAX_NODE_LENGTH",
    "MAX_TASK_ID_LENGTH",
    "CheckpointBlob",
    "CheckpointHeader",
    "CheckpointInfo",
    "DamagedRecord",
    "Metadata",
    "MetadataValue",
    "PendingWrite",
    "check_write_key",
    "metadata_has_room",
    "validate_current_node",
    "validate_metadata",
]

MetadataValue = str | int | float | bool | None
Metadata = Mapping[str, MetadataValue]

# Bounds on what a header may hold: headers are indexed, listed and repeated in every
# payload, so they stay small; a stored header past them reads as damage.
MAX_NODE_LENGTH = 256
"""Characters in ``current_node``, at most."""
MAX_METADATA_KEYS = 64
"""Keys in a checkpoint's metadata, at most."""
MAX_METADATA_KEY_LENGTH = 128
"""Characters in a metadata key, at most."""
MAX_METADATA_STRING_LENGTH = 4096
"""Characters in a metadata string value, at most."""
MAX_METADATA_SIZE = 16 * 1024
"""Bytes of the whole metadata encoded as compact JSON (UTF-8), at most."""
MAX_TASK_ID_LENGTH = 256
"""Characters in a pending write's ``task_id``, at most."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def validate_metadata(metadata: Mapping[str, object] | None) -> dict[str, MetadataValue]:
    """Return a copy of ``metadata`` after checking it is flat and JSON-scalar.

    Keys are strings; values are ``str``, ``int`` (64-bit signed), finite ``float``,
    ``bool`` or ``None``. At most :data:`MAX_METADATA_KEYS` keys of at most
    :data:`MAX_METADATA_KEY_LENGTH` characters, string values of at most
    :data:`MAX_METADATA_STRING_LENGTH` characters, and :data:`MAX_METADATA_SIZE`
    bytes in all as compact JSON. Anything else raises ``ValueError`` naming the key.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, not {type(metadata).__name__}")
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS}")
    checked: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise ValueError(
                    f"metadata keys must be str, not {type(key).__name__}: {key!r:.40}"
                )
            key = str.__str__(key)
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise ValueError(
                f"metadata key {key!r:.40} is {len(key)} characters; "
                f"at most {MAX_METADATA_KEY_LENGTH}"
            )
        # The plain types first, as nearly all metadata is: every save checks it.
        if type(value) is str:
            if len(value) > MAX_METADATA_STRING_LENGTH:
                raise _long_string(key, value)
        elif value is None or type(value) is bool:
            pass
        elif type(value) is int:
            _check_int64(key, value)
        else:
            value = _metadata_value(key, value)
        checked[key] = value
    if checked:
        size = len(msgspec.json.encode(checked))
        if size > MAX_METADATA_SIZE:
            raise ValueError(
                f"metadata is {size} bytes as JSON; at most {MAX_METADATA_SIZE} in all"
            )
    return checked


def metadata_has_room(checked: Mapping[str, MetadataValue]) -> bool:
    """Whether metadata of valid keys and values is within the bounds on the whole.

    :func:`validate_metadata`'s count and size checks alone, for metadata made of
    checked metadata and keys of flowpoint's own.
    """
    if len(checked) > MAX_METADATA_KEYS:
        return False
    try:
        return len(msgspec.json.encode(checked)) <= MAX_METADATA_SIZE
    except (msgspec.EncodeError, TypeError):  # changed since it was checked: refused later
        return False


def _metadata_value(key: str, value: object) -> MetadataValue:
    """A float, or a subclass of str or int, as its plain value; anything else ``ValueError``.

    A subclass (an enum of str, say) is kept as its plain value: what is stored.
    """
    if isinstance(value, str):
        if len(value) > MAX_METADATA_STRING_LENGTH:
            raise _long_string(key, value)
        return str.__str__(value)  # str() of a (str, Enum) member is its name
    if isinstance(value, int):
        _check_int64(key, value)
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metadata {key!r}: float must be finite, got {value!r}")
        return float(value)
    raise ValueError(
        f"metadata {key!r}: values must be str, int, float, bool or None, "
        f"not {type(value).__name__}"
    )


def _check_int64(key: str, value: int) -> None:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"metadata {key!r}: int does not fit in 64 bits")


def _long_string(key: str, value: str) -> ValueError:
    return ValueError(
        f"metadata {key!r}: the string is {len(value)} characters; "
        f"at most {MAX_METADATA_STRING_LENGTH}"
    )


def validate_current_node(current_node: object) -> str | None:
    """Return ``current_node`` if it is ``None`` or a str of at most 256 characters.

    Anything else raises ``ValueError``.
    """
    if current_node is None:
        return None
    if not isinstance(current_node, str):
        raise ValueError(f"current_node must be a str or None, not {current_node!r:.40}")
    if len(current_node) > MAX_NODE_LENGTH:
        raise ValueError(
            f"current_node is {len(current_node)} characters ({current_node!r:.40}...); "
            f"at most {MAX_NODE_LENGTH}"
        )
    return current_node


def check_header(step: int, graph_hash: int, created_at: datetime) -> None:
    """Raise ``ValueError`` unless step, graph hash and creation time are in range."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= _INT64_MAX:
        raise ValueError(f"step must be an int from 0 to 2**63-1, not {step!r:.40}")
    if (
        isinstance(graph_hash, bool)
        or not isinstance(graph_hash, int)
        or not 0 <= graph_hash <= _UINT64_MAX
    ):
        raise ValueError(f"graph_hash must be an unsigned 64-bit int, not {graph_hash!r:.40}")
    if not isinstance(created_at, datetime) or created_at.tzinfo is None:
        raise ValueError("created_at must be a timezone-aware datetime")


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """A checkpoint's header: what a store indexes and lists, and what its data repeats.

    The one value object every layer passes a header in: :class:`CheckpointBlob`
    is a header with its data, :class:`CheckpointInfo` one with its data's size,
    and the stores' own records hold one. The fields are spelled out here only;
    code that needs them all iterates :data:`HEADER_FIELDS`.
    """

    checkpoint_id: CheckpointId
    trace_id: TraceId
    step: int
    parent_id: CheckpointId | None
    graph_hash: int
    created_at: datetime
    current_node: str | None
    metadata: Metadata

    @property
    def header(self) -> CheckpointHeader:
        """The header alone: of a blob, without its data; of an info, without its size."""
        if type(self) is CheckpointHeader:
            return self
        return CheckpointHeader(**self._values())

    def with_data(self, data: bytes) -> CheckpointBlob:
        """The blob with this header and ``data`` (a size this has is not checked against it)."""
        return CheckpointBlob(*self._fields(), data=data)

    def with_size(self, size: int) -> CheckpointInfo:
        """The listing entry with this header, for data of ``size`` bytes."""
        return CheckpointInfo(*self._fields(), size=size)

    def _values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEADER_FIELDS}

    def _fields(
        self,
    ) -> tuple[
        CheckpointId, TraceId, int, CheckpointId | None, int, datetime, str | None, Metadata
    ]:
        # In the order of HEADER_FIELDS, which subclasses' own fields follow: every read
        # of a stored checkpoint makes one of these, so no dict in between.
        return (
            self.checkpoint_id,
            self.trace_id,
            self.step,
            self.parent_id,
            self.graph_hash,
            self.created_at,
            self.current_node,
            self.metadata,
        )

    def check(self) -> None:
        """Raise ``ValueError`` unless every field holds what a stored header may hold.

        The ids are UUIDs, the trace id a valid one, the step, graph hash and
        creation time in range (:func:`check_header`), the node and the metadata
        within their bounds.
        """
        for name in ("checkpoint_id", "parent_id"):
            value = getattr(self, name)
            if not isinstance(value, UUID) and (value is not None or name == "checkpoint_id"):
                raise ValueError(f"{name} must be a UUID, not {value!r:.40}")
        validate_trace_id(self.trace_id)
        check_header(self.step, self.graph_hash, self.created_at)
        validate_current_node(self.current_node)
        validate_metadata(self.metadata)

    def first_difference(self, other: object) -> str | None:
        """The first field whose value differs in ``other``, or ``None`` if none does.

        ``other`` is a header, or any record with a header's fields (such as the
        one a codec writes into the data); metadata values must have the same
        types too (``1`` is not ``1.0`` or ``True``).
        """
        # Read in C, compared as tuples first: loads check every checkpoint (and
        # every link of a delta chain) this way, and nearly always all is the same.
        mine, theirs = _field_values(self), _field_values(other)
        if mine == theirs and _same_metadata(mine[-1], theirs[-1]):
            return None
        for name, a, b in zip(HEADER_FIELDS, mine, theirs, strict=True):
            if not (_same_metadata(a, b) if name == "metadata" else a == b):
                return name
        return None


HEADER_FIELDS: tuple[str, ...] = tuple(field.name for field in fields(CheckpointHeader))
"""The names of a header's fields, in their order."""
_field_values = attrgetter(*HEADER_FIELDS)


@dataclass(frozen=True, slots=True)
class CheckpointInfo(CheckpointHeader):
    """A checkpoint's header without its data: what listings return.

    ``size`` is the length of the encoded data in bytes.
    """

    size: int


@dataclass(frozen=True, slots=True)
class CheckpointBlob(CheckpointHeader):
    """An encoded checkpoint: the header a store indexes, and opaque ``data``.

    ``data`` is self-describing (see :mod:`flowpoint.codec._envelope`); it repeats
    the header so a decoder can tell when bytes are stored under the wrong header.
    """

    data: bytes

    def info(self) -> CheckpointInfo:
        """The header of this blob, with ``size`` set to ``len(data)``."""
        return self.with_size(len(self.data))


@dataclass(frozen=True, slots=True)
class DamagedRecord:
    """A stored record a listing could not read: what is known of it, and what is wrong.

    Listings that report damage (:meth:`~flowpoint.stores.BlobCheckpointStore.history_entries`,
    :meth:`~flowpoint.stores.BlobCheckpointStore.trace_entries`) return one in
    place of the header or trace id they could not read, and go on. A field is
    ``None`` where the damage hides it. The record can still be deleted by id.
    """

    checkpoint_id: CheckpointId | None
    trace_id: TraceId | None
    step: int | None
    reason: str

    def error(self) -> CorruptCheckpoint:
        """The error a strict listing raises for this record."""
        return CorruptCheckpoint(self.checkpoint_id, self.reason)


def _same_metadata(a: Metadata, b: Metadata) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        if key not in b:
            return False
        other = b[key]
        if type(value) is not type(other) or value != other:
            return False
    return True


def utc(moment: datetime) -> datetime:
    """``moment`` converted to UTC; a naive datetime raises ``ValueError``."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """What one task of a superstep wrote, saved against the checkpoint it ran from.

    Parallel tasks save their outputs as they finish, before the superstep's own
    checkpoint exists; after a crash, the tasks whose writes are saved need not
    run again. A store keys each write by ``(checkpoint_id, task_id, index)`` and
    never decodes ``data``, which is self-describing like a checkpoint's.
    ``index`` orders a task's writes; it may be negative (kinds of writes that
    are not outputs, such as an error, use reserved negative indexes).
    """

    trace_id: TraceId
    checkpoint_id: CheckpointId
    task_id: str
    index: int
    data: bytes


def check_write_key(task_id: object, index: object) -> None:
    """Raise ``ValueError`` unless ``task_id`` and ``index`` can key a pending write.

    A task id is printable text of 1 to :data:`MAX_TASK_ID_LENGTH` characters; an
    index is a signed 64-bit int.
    """
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"a task id must be a non-empty str, not {task_id!r:.40}")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise ValueError(
            f"a task id has at most {MAX_TASK_ID_LENGTH} characters, this one has {len(task_id)}"
        )
    if not task_id.isprintable():
        raise ValueError(f"a task id must be printable text, not {task_id[:40]!r}")
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or not _INT64_MIN <= index <= _INT64_MAX
    ):
        raise ValueError(f"a write's index must be a signed 64-bit int, not {index!r:.40}")
