"""The one history-paging helper (iter_history) and ids by prefix, on every backend."""

from __future__ import annotations

import pytest

from flowpoint import BlobCheckpointStore
from tests.blobs import make_blob

# -- the one paging helper, and ids by prefix ---------------------------------------------


async def test_iter_history_walks_a_long_trace_newest_first(
    blob_store: BlobCheckpointStore,
) -> None:
    for step in range(1203):
        await blob_store.save(make_blob("long", step))
    steps = [info.step async for info in blob_store.iter_history("long")]
    assert steps == list(range(1202, -1, -1))
    below = [info.step async for info in blob_store.iter_history("long", before_step=3)]
    assert below == [2, 1, 0]
    assert [info async for info in blob_store.iter_history("nobody")] == []


async def test_ids_with_prefix_finds_checkpoints_by_the_start_of_their_id(
    blob_store: BlobCheckpointStore,
) -> None:
    blobs = [make_blob("t", step) for step in range(5)] + [make_blob("u", 0)]
    for blob in blobs:
        await blob_store.save(blob)
    target = blobs[3].checkpoint_id
    text = str(target)
    assert await blob_store.ids_with_prefix(text) == [target]
    assert await blob_store.ids_with_prefix(text[:30].upper()) == [target]
    every = sorted(blob.checkpoint_id for blob in blobs)
    # UUIDv7s made in one burst share their leading (time) digits.
    assert await blob_store.ids_with_prefix(text[:4], limit=100) == every
    assert await blob_store.ids_with_prefix(text[:4], limit=2) == every[:2]
    assert await blob_store.ids_with_prefix("ffffffff") == []


@pytest.mark.parametrize("prefix", ["", "xyz", "0" * 37, "01a2 19cb", 42])
async def test_ids_with_prefix_refuses_what_cannot_start_an_id(
    blob_store: BlobCheckpointStore, prefix: object
) -> None:
    with pytest.raises(ValueError, match="checkpoint id"):
        await blob_store.ids_with_prefix(prefix)  # type: ignore[arg-type]
