"""One damaged record does not hide the rest: listings report it and go on, on every backend."""

from __future__ import annotations

import pytest

from flowpoint import BlobCheckpointStore, CorruptCheckpoint
from flowpoint.blob import CheckpointBlob, DamagedRecord
from tests.blobs import make_blob
from tests.harnesses.base import StoreHarness


async def saved(store: BlobCheckpointStore, trace: str, steps: int) -> list[CheckpointBlob]:
    blobs = [make_blob(trace, step) for step in range(steps)]
    for blob in blobs:
        await store.save(blob)
    return blobs


async def test_a_damaged_header_is_listed_in_its_place(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    blobs = await saved(blob_store, "t", 4)
    [other] = await saved(blob_store, "u", 1)
    damaged = blobs[2]
    await harness.mangle_header(damaged.checkpoint_id)

    entries = await blob_store.history_entries("t")
    assert [type(entry) for entry in entries] == [
        type(blobs[3].info()),
        DamagedRecord,
        type(blobs[1].info()),
        type(blobs[0].info()),
    ]
    assert entries[0] == blobs[3].info()
    assert entries[2:] == [blobs[1].info(), blobs[0].info()]
    report = entries[1]
    assert isinstance(report, DamagedRecord)
    assert (report.checkpoint_id, report.trace_id, report.step) == (damaged.checkpoint_id, "t", 2)
    assert report.reason
    assert isinstance(report.error(), CorruptCheckpoint)

    # Pages go on past it, with the step of the last entry.
    first = await blob_store.history_entries("t", limit=2)
    assert first == entries[:2]
    assert await blob_store.history_entries("t", limit=2, before_step=2) == entries[2:]
    walked = [entry async for entry in blob_store.iter_history_entries("t")]
    assert walked == entries

    # The strict listings name it.
    with pytest.raises(CorruptCheckpoint) as caught:
        await blob_store.history("t")
    assert caught.value.checkpoint_id == damaged.checkpoint_id
    assert await blob_store.history("t", before_step=2) == [blobs[1].info(), blobs[0].info()]
    with pytest.raises(CorruptCheckpoint):
        [info async for info in blob_store.iter_history("t")]

    # Other traces are untouched; the trace itself is still listed.
    assert await blob_store.trace_entries() == ["t", "u"]
    assert await blob_store.traces() == ["t", "u"]
    assert await blob_store.history_entries("u") == [other.info()]

    # The damaged record can be deleted by its id, and the trace reads clean again.
    assert await blob_store.delete(damaged.checkpoint_id)
    assert await blob_store.history("t") == [b.info() for b in reversed(blobs) if b != damaged]


async def test_a_trace_of_damaged_records_only_is_still_listed(
    harness: StoreHarness, blob_store: BlobCheckpointStore
) -> None:
    [blob] = await saved(blob_store, "only", 1)
    await saved(blob_store, "fine", 1)
    await harness.mangle_header(blob.checkpoint_id)
    # Every backend keeps a trace's id apart from its records' headers.
    assert await blob_store.trace_entries() == ["fine", "only"]
    [report] = await blob_store.history_entries("only")
    assert isinstance(report, DamagedRecord)
    assert report.checkpoint_id == blob.checkpoint_id
