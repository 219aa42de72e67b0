"""Test doubles for the workflow layer: a store that counts its saves and fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from flowpoint import InMemoryBlobStore, StorageError
from flowpoint.blob import CheckpointBlob, CheckpointInfo, PendingWrite
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import BlockingBlobStore, PruneRule


class FailingBlobStore(BlockingBlobStore):
    """An :class:`InMemoryBlobStore` that counts saves and fails some with StorageError.

    ``fail_saves`` holds the 1-based numbers of the save attempts to fail;
    ``fail_all`` fails every save; ``fail_prune`` fails every prune,
    ``fail_prunes`` the prunes of those 1-based numbers; ``fail_writes`` fails
    every ``save_writes``. A failed save stores nothing. ``saved`` lists the blobs
    stored, in order, and ``written`` the pending writes (with ``overwrite``) of
    every ``save_writes`` call that succeeded (``write_calls`` counts the calls).
    ``save_delay`` makes each save and each ``save_writes`` wait
    on the event loop (so this double is for async callers only).
    """

    def __init__(
        self,
        *,
        fail_saves: Iterable[int] = (),
        fail_all: bool = False,
        fail_prune: bool = False,
        fail_prunes: Iterable[int] = (),
        fail_writes: bool = False,
        save_delay: float = 0.0,
    ) -> None:
        self.inner = InMemoryBlobStore()
        self.fail_saves = set(fail_saves)
        self.fail_all = fail_all
        self.fail_prune = fail_prune
        self.fail_prunes = set(fail_prunes)
        self.attempts = 0
        self.failures = 0
        self.saved: list[CheckpointBlob] = []
        self.prunes = 0
        self.fail_writes = fail_writes
        self.written: list[tuple[PendingWrite, bool]] = []
        self.write_calls = 0
        self.save_delay = save_delay

    @property
    def saves(self) -> int:
        """How many saves succeeded."""
        return len(self.saved)

    def saves_of(self, trace_id: str) -> list[CheckpointBlob]:
        return [blob for blob in self.saved if blob.trace_id == trace_id]

    async def _save(self, blob: CheckpointBlob) -> None:
        self.attempts += 1
        if self.fail_all or self.attempts in self.fail_saves:
            self.failures += 1
            raise StorageError(f"injected failure of save #{self.attempts}")
        if self.save_delay:
            await asyncio.sleep(self.save_delay)  # a slow store: the runner must wait for it
        await self.inner.save(blob)
        self.saved.append(blob)

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        if self.fail_writes:
            raise StorageError("injected failure of save_writes")
        if self.save_delay:
            await asyncio.sleep(self.save_delay)
        stored = await self.inner.save_writes(writes, overwrite=overwrite)
        self.written.extend((write, overwrite) for write in writes)
        self.write_calls += 1
        return stored

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        return await self.inner.load_writes(checkpoint_id)

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        return await self.inner.load(checkpoint_id)

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        return await self.inner.load_latest(trace_id)

    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        return await self.inner.history(trace_id, limit, before_step)

    async def _traces(self) -> list[TraceId]:
        return await self.inner.traces()

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        return await self.inner.delete(checkpoint_id)

    async def _delete_trace(self, trace_id: TraceId) -> int:
        return await self.inner.delete_trace(trace_id)

    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        self._count_prune()
        return await self.inner.prune(trace_id, rule)

    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        # What a prune through the typed facade comes down to.
        self._count_prune()
        return await self.inner.delete_many(checkpoint_ids)

    def _count_prune(self) -> None:
        self.prunes += 1
        if self.fail_prune or self.prunes in self.fail_prunes:
            raise StorageError("injected failure of a prune")

    async def count(self, trace_id: str) -> int:
        """How many checkpoints the trace holds now."""
        return len(await self.inner.history(trace_id, limit=10_000))

    async def steps(self, trace_id: str) -> list[int]:
        """The steps the trace holds now, oldest first."""
        return sorted(info.step for info in await self.inner.history(trace_id, limit=10_000))
