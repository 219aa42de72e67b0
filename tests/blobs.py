"""Blobs for store-level tests: a valid header around arbitrary data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowpoint.blob import CheckpointBlob
from flowpoint.ids import new_checkpoint_id


def make_blob(
    trace_id: str = "trace", step: int = 0, data: bytes = b"payload", **changes: Any
) -> CheckpointBlob:
    """A blob of ``trace_id`` at ``step`` holding ``data``; ``changes`` replace header fields."""
    fields: dict[str, Any] = {
        "checkpoint_id": new_checkpoint_id(),
        "trace_id": trace_id,
        "step": step,
        "parent_id": None,
        "graph_hash": 0x0123_4567_89AB_CDEF,
        "created_at": datetime.now(UTC),
        "current_node": "plan",
        "metadata": {"source": "test", "attempt": 1},
        "data": data,
    }
    fields.update(changes)
    return CheckpointBlob(**fields)
