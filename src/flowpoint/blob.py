"""What stores see: a checkpoint's header and its encoded bytes, never the state type."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from flowpoint.ids import CheckpointId, TraceId

__all__ = [
    "CheckpointBlob",
    "CheckpointInfo",
    "Metadata",
    "MetadataValue",
    "validate_metadata",
]

MetadataValue = str | int | float | bool | None
Metadata = Mapping[str, MetadataValue]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def validate_metadata(metadata: Mapping[str, object] | None) -> dict[str, MetadataValue]:
    """Return a copy of ``metadata`` after checking it is flat and JSON-scalar.

    Keys are strings; values are ``str``, ``int`` (64-bit signed), finite ``float``,
    ``bool`` or ``None``. Anything else raises ``ValueError`` naming the key.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, not {type(metadata).__name__}")
    checked: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"metadata keys must be str, not {type(key).__name__}: {key!r:.40}")
        if value is None or isinstance(value, (str, bool)):
            pass
        elif isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"metadata {key!r}: int does not fit in 64 bits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"metadata {key!r}: float must be finite, got {value!r}")
        else:
            raise ValueError(
                f"metadata {key!r}: values must be str, int, float, bool or None, "
                f"not {type(value).__name__}"
            )
        checked[key] = value
    return checked


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
class CheckpointInfo:
    """A checkpoint's header without its data: what listings return.

    ``size`` is the length of the encoded data in bytes.
    """

    checkpoint_id: CheckpointId
    trace_id: TraceId
    step: int
    parent_id: CheckpointId | None
    graph_hash: int
    created_at: datetime
    current_node: str | None
    metadata: Metadata
    size: int

    def with_data(self, data: bytes) -> CheckpointBlob:
        """The blob with this header and ``data`` (``size`` is not checked against it)."""
        return CheckpointBlob(
            checkpoint_id=self.checkpoint_id,
            trace_id=self.trace_id,
            step=self.step,
            parent_id=self.parent_id,
            graph_hash=self.graph_hash,
            created_at=self.created_at,
            current_node=self.current_node,
            metadata=self.metadata,
            data=data,
        )


@dataclass(frozen=True, slots=True)
class CheckpointBlob:
    """An encoded checkpoint: the header a store indexes, and opaque ``data``.

    ``data`` is self-describing (see :mod:`flowpoint.codec.envelope`); it repeats
    the header so a decoder can tell when bytes are stored under the wrong header.
    """

    checkpoint_id: CheckpointId
    trace_id: TraceId
    step: int
    parent_id: CheckpointId | None
    graph_hash: int
    created_at: datetime
    current_node: str | None
    metadata: Metadata
    data: bytes

    def info(self) -> CheckpointInfo:
        """The header of this blob, with ``size`` set to ``len(data)``."""
        return CheckpointInfo(
            checkpoint_id=self.checkpoint_id,
            trace_id=self.trace_id,
            step=self.step,
            parent_id=self.parent_id,
            graph_hash=self.graph_hash,
            created_at=self.created_at,
            current_node=self.current_node,
            metadata=self.metadata,
            size=len(self.data),
        )


def utc(moment: datetime) -> datetime:
    """``moment`` converted to UTC; a naive datetime raises ``ValueError``."""
    if moment.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return moment.astimezone(UTC)
