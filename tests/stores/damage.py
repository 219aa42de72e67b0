"""A check the SQL stores share: a trace id damaged in its column is reported, row by row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from flowpoint import BlobCheckpointStore, CorruptCheckpoint
from flowpoint.blob import DamagedRecord
from tests.blobs import make_blob


async def check_a_damaged_trace_id_is_reported(
    store: BlobCheckpointStore, damage: Callable[[str], Awaitable[None]]
) -> None:
    """Save two checkpoints of ``"doomed"``, ``damage("doomed")``'s column, and list."""
    damaged = [make_blob(trace_id="doomed", step=step) for step in range(2)]
    for blob in [*damaged, make_blob(trace_id="fine")]:
        await store.save(blob)
    await damage("doomed")
    with pytest.raises(CorruptCheckpoint, match="trace_id"):
        await store.traces()
    fine, *reports = await store.trace_entries()
    assert fine == "fine"
    assert all(isinstance(report, DamagedRecord) for report in reports)
    assert [(r.checkpoint_id, r.trace_id, r.step, "trace_id" in r.reason) for r in reports] == [  # type: ignore[union-attr]
        (blob.checkpoint_id, None, blob.step, True) for blob in damaged
    ]
    # Deleted by id, the damage is gone.
    assert await store.delete_many(blob.checkpoint_id for blob in damaged) == 2
    assert await store.traces() == ["fine"]
