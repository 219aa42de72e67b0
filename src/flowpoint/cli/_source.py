"""What ``copy`` and ``export`` read: a store's checkpoints, their pending writes, and damage.

Nothing read is decoded: a checkpoint's or a write's data is only checked
(framing, checksum, the key it is filed under), so that nothing damaged is passed on
and no key is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.cli._damage import list_trace
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore

__all__ = ["Loaded", "Source", "Vanished", "envelope_damage", "write_key"]

# Checks framing, checksum and header agreement without decrypting or decoding.
_ENVELOPE_CHECK: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()


def envelope_damage(item: CheckpointBlob | PendingWrite) -> str | None:
    """Why a checkpoint's or a write's data is not intact, or ``None``.

    Nothing damaged is passed on. A write's data must also be filed under the key
    it names.
    """
    try:
        if isinstance(item, PendingWrite):
            _ENVELOPE_CHECK.key_id_of_write(item)
        else:
            _ENVELOPE_CHECK.key_id_of(item)
    except CorruptCheckpoint as exc:
        return exc.reason
    return None


def write_key(write: PendingWrite) -> tuple[str, int]:
    return (write.task_id, write.index)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checkpoint read from the source, its intact pending writes, and its damaged ones."""

    blob: CheckpointBlob
    writes: list[PendingWrite]
    damaged_writes: list[DamagedRecord]


@dataclass(frozen=True, slots=True)
class Vanished:
    """A listed checkpoint that was deleted from the source before it was read."""

    info: CheckpointInfo


@dataclass(slots=True)
class Source:
    """What a copy or an export reads: the checkpoints of some traces, and what is damaged.

    Traces come sorted by code point, each oldest step first. This is the one
    place where reading the source meets damage: a record the listing found
    damaged, a trace that cannot be listed, and a checkpoint whose data is not
    intact come out of :meth:`items` as a :class:`~flowpoint.blob.DamagedRecord`.
    """

    store: BlobCheckpointStore
    listings: dict[TraceId, list[CheckpointInfo]]
    unlisted: list[DamagedRecord]

    @classmethod
    async def of(
        cls, store: BlobCheckpointStore, traces: list[TraceId], unnamed: list[DamagedRecord]
    ) -> Source:
        """List ``traces`` of ``store`` (their headers only), after the ``unnamed`` damage."""
        listings: dict[TraceId, list[CheckpointInfo]] = {}
        unlisted = list(unnamed)
        for trace in sorted(traces):
            infos, damaged = await list_trace(store, trace)
            unlisted += damaged
            if infos:  # none: deleted meanwhile, or every record damaged
                listings[trace] = infos[::-1]
        return cls(store, listings, unlisted)

    @property
    def checkpoints(self) -> int:
        """How many checkpoints were listed, damaged ones included."""
        listed = sum(len(infos) for infos in self.listings.values())
        return listed + sum(1 for record in self.unlisted if record.checkpoint_id is not None)

    async def items(self) -> AsyncIterator[Loaded | DamagedRecord | Vanished]:
        """What the listing found damaged, then each listed checkpoint, loaded and checked."""
        for damaged in self.unlisted:
            yield damaged
        for infos in self.listings.values():
            for info in infos:
                try:
                    blob = await self.store.load(info.checkpoint_id)
                except CorruptCheckpoint as exc:  # a header damaged since the listing
                    yield DamagedRecord(info.checkpoint_id, info.trace_id, info.step, exc.reason)
                    continue
                if blob is None:
                    yield Vanished(info)
                elif (reason := envelope_damage(blob)) is not None:
                    yield DamagedRecord(blob.checkpoint_id, blob.trace_id, blob.step, reason)
                else:
                    yield await self._with_writes(blob)

    async def _with_writes(self, blob: CheckpointBlob) -> Loaded:
        """``blob`` and its pending writes, each checked as its data is."""

        def damaged(reason: str) -> DamagedRecord:
            return DamagedRecord(blob.checkpoint_id, blob.trace_id, blob.step, reason)

        try:
            writes = await self.store.load_writes(blob.checkpoint_id)
        except CorruptCheckpoint as exc:  # a damaged write record
            return Loaded(blob, [], [damaged(exc.reason)])
        intact: list[PendingWrite] = []
        broken: list[DamagedRecord] = []
        for write in writes:
            if write.trace_id != blob.trace_id or write.checkpoint_id != blob.checkpoint_id:
                broken.append(
                    damaged(
                        f"pending write {write.task_id!r:.80} is filed under checkpoint "
                        f"{write.checkpoint_id} of trace {write.trace_id!r:.80}"
                    )
                )
            elif (reason := envelope_damage(write)) is not None:
                broken.append(damaged(reason))
            else:
                intact.append(write)
        return Loaded(blob, intact, broken)
