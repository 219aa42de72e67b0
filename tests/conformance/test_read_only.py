"""A store opened read-only reads everything and changes nothing, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from flowpoint import PruneRule, StorageError
from flowpoint.blob import PendingWrite
from flowpoint.stores._base import RewritableBlobStore
from tests.blobs import make_blob
from tests.harnesses.base import StoreHarness


async def test_a_read_only_store_reads_and_changes_nothing(harness: StoreHarness) -> None:
    blobs = [make_blob("t", step) for step in range(3)]
    write = PendingWrite("t", blobs[1].checkpoint_id, "task", 0, b"w")
    async with await harness.open() as writer:
        for blob in blobs:
            await writer.save(blob)
        await writer.save_writes([write])
    before = await harness.snapshot()

    reader = await harness.open_read_only()
    assert reader.read_only
    async with reader:
        assert await reader.load(blobs[0].checkpoint_id) == blobs[0]
        assert await reader.load_latest("t") == blobs[2]
        assert await reader.history("t") == [blob.info() for blob in reversed(blobs)]
        assert await reader.history_entries("t", limit=1) == [blobs[2].info()]
        assert [info.step async for info in reader.iter_history("t")] == [2, 1, 0]
        assert await reader.traces() == ["t"] == await reader.trace_entries()
        assert await reader.load_steps("t", 0, 1) == blobs[:2]
        assert await reader.load_writes(blobs[1].checkpoint_id) == [write]
        many = await reader.load_writes_many([blobs[1].checkpoint_id, blobs[0].checkpoint_id])
        assert many == {blobs[1].checkpoint_id: [write], blobs[0].checkpoint_id: []}
        assert await reader.ids_with_prefix(str(blobs[0].checkpoint_id)) == [blobs[0].checkpoint_id]
        assert await reader.load_latest("nobody") is None

        refused: dict[str, Any] = {
            "save": lambda: reader.save(make_blob("t", 3)),
            "save_writes": lambda: reader.save_writes([write]),
            "delete": lambda: reader.delete(blobs[0].checkpoint_id),
            "delete_many": lambda: reader.delete_many([blobs[0].checkpoint_id]),
            "delete_trace": lambda: reader.delete_trace("t"),
            "prune": lambda: reader.prune("t", PruneRule(keep_latest=0, older_than=None)),
        }
        if isinstance(reader, RewritableBlobStore):
            refused["rewrite"] = lambda: reader.rewrite(blobs[0])
        for name, call in refused.items():
            with pytest.raises(StorageError, match="read-only") as caught:
                await call()
            assert f"{name} refused" in str(caught.value)
    assert await harness.snapshot() == before

    # A writable store over the same storage sees it all as it was.
    async with await harness.open() as writer:
        assert await writer.history("t") == [blob.info() for blob in reversed(blobs)]
