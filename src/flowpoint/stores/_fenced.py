"""Fenced saves: a store that writes a queued run's checkpoints only while its lease holds.

The run queue (:mod:`flowpoint.queue`) keeps its runs in the same database as the
checkpoints. A worker that claims a run gets a lease at a new ``epoch``; every
save of that run then goes through :meth:`FencedBlobStore.save_fenced` (and
:meth:`~FencedBlobStore.save_writes_fenced`), which checks, in the same
transaction as the write, that the run is still ``running`` under that epoch and
its lease has not expired by the database's clock. A worker that lost its lease
(paused, partitioned, slow) therefore cannot write one checkpoint after another
worker took the run over: the write and the takeover are ordered by the
database, and the later one sees the other.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass

from flowpoint.blob import CheckpointBlob, PendingWrite
from flowpoint.ids import TraceId, validate_trace_id
from flowpoint.stores._base import BlobCheckpointStore, check_blob, check_write_batch

__all__ = ["Fence", "FencedBlobStore"]


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a save must still hold: run ``trace_id``, claimed at ``epoch``."""

    trace_id: TraceId
    epoch: int

    def __post_init__(self) -> None:
        validate_trace_id(self.trace_id)
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 1:
            raise ValueError(f"a fence's epoch is an int >= 1, not {self.epoch!r}")


class FencedBlobStore(BlobCheckpointStore):
    """A store that can make a save depend on a run's lease: an optional ability.

    The SQLite and PostgreSQL stores have it: the run queue's tables live beside
    their checkpoints.
    """

    async def save_fenced(self, blob: CheckpointBlob, fence: Fence) -> None:
        """:meth:`save` ``blob``, only if ``fence`` still holds, in one transaction.

        Raises :class:`~flowpoint.errors.LeaseLost`, saving nothing, when the run
        ``fence.trace_id`` is not ``running`` at ``fence.epoch`` with an unexpired
        lease (by the database's clock) when the save commits. A blob of another
        trace than the fence's raises ``ValueError``.
        """
        with self._calling("save", blob=blob, writes=True):
            check_blob("save", blob)
            _check_fence(fence, blob.trace_id)
            await self._save_fenced(blob, fence)

    async def save_writes_fenced(
        self, writes: Iterable[PendingWrite], fence: Fence, *, overwrite: bool = False
    ) -> int:
        """:meth:`save_writes`, only if ``fence`` still holds, as :meth:`save_fenced` does."""
        with self._calling("save_writes", writes=True):
            batch = check_write_batch(writes)
            if not batch:
                return 0
            _check_fence(fence, batch[0].trace_id)
            return await self._save_writes_fenced(batch, fence, overwrite=bool(overwrite))

    @abc.abstractmethod
    async def _save_fenced(self, blob: CheckpointBlob, fence: Fence) -> None: ...

    @abc.abstractmethod
    async def _save_writes_fenced(
        self, writes: list[PendingWrite], fence: Fence, *, overwrite: bool
    ) -> int: ...


def _check_fence(fence: Fence, trace_id: str) -> None:
    if not isinstance(fence, Fence):
        raise TypeError(f"a fenced save takes a Fence, not {type(fence).__name__}")
    if trace_id != fence.trace_id:
        raise ValueError(
            f"a save of trace {trace_id!r:.80} cannot be fenced by the lease of run "
            f"{fence.trace_id!r:.80}"
        )
