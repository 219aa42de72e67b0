"""The store a worker runs one claimed run on: every save fenced by the claim's lease."""

from __future__ import annotations

from collections.abc import Callable

from typing_extensions import override

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import BlobCheckpointStore, PruneRule
from flowpoint.stores._fenced import Fence, FencedBlobStore

__all__ = ["LeasedStore"]


class LeasedStore(BlobCheckpointStore):
    """``inner`` as one claimed run sees it: saves and pending writes fenced by ``fence``.

    A save whose lease is lost raises :class:`~flowpoint.errors.LeaseLost` and
    stores nothing, so the :class:`~flowpoint.Runner` driving the run stops
    there, before its next node. Reads, deletes and prunes (retention) go to
    ``inner`` unchanged. ``saved`` is called after each checkpoint saved; what it
    raises ends the run there (a worker shutting down). Closing this store
    leaves ``inner`` open.
    """

    def __init__(
        self,
        inner: FencedBlobStore,
        fence: Fence,
        saved: Callable[[CheckpointBlob], None],
    ) -> None:
        self._inner = inner
        self._fence = fence
        self._saved = saved

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, epoch={self._fence.epoch})"

    @override
    async def _save(self, blob: CheckpointBlob) -> None:
        await self._inner.save_fenced(blob, self._fence)
        self._saved(blob)

    @override
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        return await self._inner.save_writes_fenced(writes, self._fence, overwrite=overwrite)

    @override
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        return await self._inner.load(checkpoint_id)

    @override
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        return await self._inner.load_latest(trace_id)

    @override
    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        return await self._inner.load_steps(trace_id, first_step, last_step)

    @override
    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        return await self._inner.history(trace_id, limit, before_step)

    @override
    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        return await self._inner.history_entries(trace_id, limit, before_step)

    @override
    async def _traces(self) -> list[TraceId]:
        return await self._inner.traces()

    @override
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        return await self._inner.load_writes(checkpoint_id)

    @override
    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        return await self._inner.delete(checkpoint_id)

    @override
    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        return await self._inner.delete_many(checkpoint_ids)

    @override
    async def _delete_trace(self, trace_id: TraceId) -> int:
        return await self._inner.delete_trace(trace_id)

    @override
    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        return await self._inner.prune(trace_id, rule)
