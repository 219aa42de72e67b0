"""Checkpoints that a database written by flowpoint 0.1.0 (schema version 1) holds.

``tests/stores/data/sqlite-v1.db`` and ``tests/stores/data/postgres-v1.sql`` were
written by flowpoint 0.1.0's own ``SqliteBlobStore`` and ``PostgresBlobStore``
saving :func:`release_blobs` (the PostgreSQL file is that database as
``pg_dump --inserts --no-owner --no-privileges`` printed it). The upgrade tests
open them with this flowpoint and check that every checkpoint reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from flowpoint.blob import CheckpointBlob, PendingWrite
from flowpoint.ids import CheckpointId
from flowpoint.stores._base import BlobCheckpointStore, PruneRule
from tests.blobs import make_blob

TRACES = ("release/one", "release two ✓")


def release_blobs() -> list[CheckpointBlob]:
    """Three checkpoints in each of two traces, every header field exactly fixed."""
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    blobs = []
    for t, trace in enumerate(TRACES):
        parent = None
        for step in range(3):
            checkpoint_id = CheckpointId(UUID(int=(0x01A2 << 112) | (t << 8) | step))
            blobs.append(
                CheckpointBlob(
                    checkpoint_id=checkpoint_id,
                    trace_id=trace,
                    step=step,
                    parent_id=parent,
                    graph_hash=0xFEDC_BA98_7654_3210,
                    created_at=start + timedelta(minutes=10 * step + t),
                    current_node=None if step == 2 else f"node-{step}",
                    metadata={"source": "release", "step": step, "ratio": 0.5},
                    data=bytes([t, step]) * (100 + step),
                )
            )
            parent = checkpoint_id
    return blobs


async def check_upgraded(store: BlobCheckpointStore) -> None:
    """The release's checkpoints read back, and what the upgrade adds works on them."""
    blobs = release_blobs()
    assert await store.traces() == sorted(TRACES)
    for blob in blobs:
        assert await store.load(blob.checkpoint_id) == blob
    assert await store.history(TRACES[0]) == [blob.info() for blob in reversed(blobs[:3])]
    write = PendingWrite(TRACES[0], blobs[2].checkpoint_id, "task", 0, b"w")
    assert await store.save_writes([write]) == 1
    assert await store.load_writes(blobs[2].checkpoint_id) == [write]
    every = sorted(blob.checkpoint_id for blob in blobs)
    assert await store.ids_with_prefix("01a2", limit=10) == every
    assert await store.prune(TRACES[0], PruneRule(keep_latest=0, older_than=None)) == 3
    assert await store.load_writes(blobs[2].checkpoint_id) == []
    await store.save(make_blob(TRACES[0], 2))
