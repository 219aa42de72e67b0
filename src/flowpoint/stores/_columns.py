"""Reading a backend's own header values back, trusting nothing.

A database column or a hash field can hold whatever someone wrote into it; these
functions turn such values into header fields, or raise
:class:`~flowpoint.errors.CorruptCheckpoint` saying what was found.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    DamagedRecord,
    MetadataValue,
    PendingWrite,
    check_write_key,
    validate_metadata,
)
from flowpoint.errors import CorruptCheckpoint, InvalidTraceId
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = [
    "blob_with_data",
    "damaged_id",
    "info_with_size",
    "listed_entry",
    "metadata_from_json",
    "split_traces",
    "trace_from_text",
    "value_kind",
    "write_from_columns",
]


def value_kind(value: object) -> str:
    """A stored value for an error message, e.g. ``str 'yesterday'`` or ``16 bytes``."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return f"{type(value).__name__} {value!r:.40}"


def metadata_from_json(
    checkpoint_id: CheckpointId,
    value: object,
    where: str = "column metadata",
    stored_as: type[str] | type[bytes] = str,
) -> dict[str, MetadataValue]:
    """Metadata stored as a JSON object of scalars, as text or (``stored_as=bytes``) UTF-8."""
    if type(value) is not stored_as:
        raise CorruptCheckpoint(checkpoint_id, f"{where} holds {value_kind(value)}, not JSON text")
    if value in ("{}", b"{}"):
        return {}
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise CorruptCheckpoint(checkpoint_id, f"{where} is not JSON: {exc}") from exc
    if type(decoded) is not dict:
        raise CorruptCheckpoint(checkpoint_id, f"{where} is not a JSON object")
    try:
        return validate_metadata(decoded)
    except ValueError as exc:
        raise CorruptCheckpoint(checkpoint_id, f"{where}: {exc}") from exc


def trace_from_text(
    value: object, checkpoint_id: CheckpointId | None = None, where: str = "column trace_id"
) -> TraceId:
    """A trace id stored as text, checked as a trace id must be."""
    if type(value) is not str:
        raise CorruptCheckpoint(checkpoint_id, f"{where} holds {value_kind(value)}, not text")
    try:
        return validate_trace_id(value)
    except InvalidTraceId as exc:
        raise CorruptCheckpoint(checkpoint_id, f"{where}: {exc}") from exc


def blob_with_data(header: CheckpointHeader, data: object) -> CheckpointBlob:
    """The blob of a header read back, with the stored ``data``, which must be bytes."""
    if type(data) is not bytes:
        raise CorruptCheckpoint(
            header.checkpoint_id, f"column data holds {value_kind(data)}, not bytes"
        )
    return header.with_data(data)


def info_with_size(header: CheckpointHeader, size: object) -> CheckpointInfo:
    """The listing entry of a header read back, with the stored ``size``."""
    if type(size) is not int or size < 0:
        raise CorruptCheckpoint(
            header.checkpoint_id, f"column size holds {value_kind(size)}, not an int >= 0"
        )
    return header.with_size(size)


def write_from_columns(
    checkpoint_id: CheckpointId, task_id: object, index: object, trace_id: object, data: object
) -> PendingWrite:
    """A pending write read back from its columns; damage is the checkpoint's corruption."""
    try:
        check_write_key(task_id, index)
    except ValueError as exc:
        raise CorruptCheckpoint(checkpoint_id, f"a stored write's key: {exc}") from None
    if type(data) is not bytes:
        raise CorruptCheckpoint(
            checkpoint_id, f"a stored write's data holds {value_kind(data)}, not bytes"
        )
    trace = trace_from_text(trace_id, checkpoint_id, "a stored write's trace_id")
    return PendingWrite(trace, checkpoint_id, task_id, index, data)  # type: ignore[arg-type]


def listed_entry(
    read: Callable[[], CheckpointInfo], trace_id: TraceId, step: object
) -> CheckpointInfo | DamagedRecord:
    """A listing's entry for a stored header: ``read()``, or what is known of it if damaged.

    ``step`` is the raw step the listing found the record at (kept if it is one).
    """
    try:
        info: CheckpointInfo = read()
    except CorruptCheckpoint as exc:
        known_step = step if type(step) is int and step >= 0 else None
        return DamagedRecord(damaged_id(exc), trace_id, known_step, exc.reason)
    return info


def damaged_id(error: CorruptCheckpoint) -> CheckpointId | None:
    """The checkpoint id a corruption error names, as a checkpoint id."""
    return None if error.checkpoint_id is None else CheckpointId(error.checkpoint_id)


def split_traces(values: list[object]) -> tuple[list[TraceId], list[tuple[object, str]]]:
    """Stored trace ids: those that read back, and the others with what is wrong with each."""
    traces: list[TraceId] = []
    damaged: list[tuple[object, str]] = []
    for value in values:
        try:
            traces.append(trace_from_text(value))
        except CorruptCheckpoint as exc:
            damaged.append((value, exc.reason))
    return traces, damaged
