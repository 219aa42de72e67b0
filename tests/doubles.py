"""Blob stores that stand for third-party backends: the abstract methods and nothing more.

Each call goes to an inner store (in memory by default) after :meth:`before`, which
subclasses use to suspend, record or pause a call.
"""

from __future__ import annotations

from flowpoint import BlobCheckpointStore, CheckpointBlob, CheckpointInfo, InMemoryBlobStore
from flowpoint.blob import PendingWrite
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import RewritableBlobStore


class DelegatingBlobStore(BlobCheckpointStore):
    """A minimal third-party store: no optional ability (it cannot rewrite data)."""

    def __init__(self, inner: BlobCheckpointStore | None = None) -> None:
        self.inner = InMemoryBlobStore() if inner is None else inner

    async def before(self, call: str) -> None:
        """Runs before each call to the inner store; ``call`` names the method."""

    async def _save(self, blob: CheckpointBlob) -> None:
        await self.before("save")
        await self.inner.save(blob)

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        await self.before("load")
        return await self.inner.load(checkpoint_id)

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        await self.before("load_latest")
        return await self.inner.load_latest(trace_id)

    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        await self.before("history")
        return await self.inner.history(trace_id, limit, before_step)

    async def _traces(self) -> list[TraceId]:
        await self.before("traces")
        return await self.inner.traces()

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        await self.before("delete")
        return await self.inner.delete(checkpoint_id)

    async def _delete_trace(self, trace_id: TraceId) -> int:
        await self.before("delete_trace")
        return await self.inner.delete_trace(trace_id)

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        await self.before("save_writes")
        return await self.inner.save_writes(writes, overwrite=overwrite)

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        await self.before("load_writes")
        return await self.inner.load_writes(checkpoint_id)

    async def close(self) -> None:
        await self.inner.close()


class RewritableDelegatingStore(DelegatingBlobStore, RewritableBlobStore):
    """The same, with the rewrite ability of an inner store that has it, and its range reads."""

    def __init__(self, inner: RewritableBlobStore | None = None) -> None:
        super().__init__(inner)
        self.rewritable: RewritableBlobStore = inner if inner is not None else InMemoryBlobStore()
        self.inner = self.rewritable

    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        await self.before("rewrite")
        return await self.rewritable.rewrite(blob)

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        await self.before("load_steps")
        return await self.inner.load_steps(trace_id, first_step, last_step)
