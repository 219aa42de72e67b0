"""``memory://``: checkpoints in dictionaries, for tests and short-lived processes."""

from __future__ import annotations

import bisect
import threading
from dataclasses import replace

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import (
    BlockingBlobStore,
    DamageReportingBlobStore,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    rewrite_conflict,
)

__all__ = ["InMemoryBlobStore"]


class _Trace:
    """One trace: its steps kept sorted, so the latest is the last one."""

    __slots__ = ("by_step", "steps")

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.by_step: dict[int, CheckpointBlob] = {}


class InMemoryBlobStore(RewritableBlobStore, DamageReportingBlobStore, BlockingBlobStore):
    """Keeps checkpoints in this process's memory; nothing survives the process.

    Latest is O(1), a page of history O(log n + page). One ``threading.Lock``
    guards everything (no operation waits while holding it), so the store may be
    shared between event loops and threads.
    """

    def __init__(self, *, read_only: bool = False) -> None:
        self._read_only = check_read_only(read_only)
        self._lock = threading.Lock()
        self._by_id: dict[CheckpointId, CheckpointBlob] = {}
        self._by_trace: dict[TraceId, _Trace] = {}
        # Writes by checkpoint, then by (task_id, index); and which checkpoints of a
        # trace have writes, so that deleting a trace finds them all.
        self._writes: dict[CheckpointId, dict[tuple[str, int], PendingWrite]] = {}
        self._writes_by_trace: dict[TraceId, set[CheckpointId]] = {}

    async def _save(self, blob: CheckpointBlob) -> None:
        # A private copy of the metadata: the caller's mapping may change afterwards.
        blob = replace(blob, metadata=dict(blob.metadata))
        with self._lock:
            trace = self._by_trace.get(blob.trace_id)
            if trace is not None and blob.step in trace.by_step:
                raise CheckpointConflict(blob.trace_id, blob.step)
            if blob.checkpoint_id in self._by_id:
                raise CheckpointConflict(
                    blob.trace_id, blob.step, f"checkpoint id {blob.checkpoint_id} exists"
                )
            if trace is None:
                trace = self._by_trace[blob.trace_id] = _Trace()
            bisect.insort(trace.steps, blob.step)
            trace.by_step[blob.step] = blob
            self._by_id[blob.checkpoint_id] = blob

    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        with self._lock:
            stored = self._by_id.get(blob.checkpoint_id)
            if stored is None:
                return False
            field = different_header(stored, blob)
            if field is not None:
                raise rewrite_conflict(blob, field)
            # Only the data changes: the stored header (and its metadata copy) stays.
            new = replace(stored, data=blob.data)
            self._by_id[blob.checkpoint_id] = new
            self._by_trace[stored.trace_id].by_step[stored.step] = new
            return True

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        return self._by_id.get(checkpoint_id)

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        first = writes[0]
        with self._lock:
            stored = self._writes.setdefault(first.checkpoint_id, {})
            if stored:
                check_writes_trace(first, next(iter(stored.values())).trace_id)
            self._writes_by_trace.setdefault(first.trace_id, set()).add(first.checkpoint_id)
            saved = 0
            for write in writes:
                key = (write.task_id, write.index)
                if overwrite or key not in stored:
                    stored[key] = write
                    saved += 1
            return saved

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        with self._lock:
            stored = self._writes.get(checkpoint_id, {})
            return [stored[key] for key in sorted(stored)]

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        with self._lock:
            trace = self._by_trace.get(trace_id)
            return trace.by_step[trace.steps[-1]] if trace else None

    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        with self._lock:
            trace = self._by_trace.get(trace_id)
            if trace is None:
                return []
            end = (
                len(trace.steps)
                if before_step is None
                else bisect.bisect_left(trace.steps, before_step)
            )
            steps = trace.steps[max(0, end - limit) : end]
            blobs = [trace.by_step[step] for step in reversed(steps)]
        return [_entry(blob) for blob in blobs]

    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        with self._lock:
            return list(sorted(self._by_trace))

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        with self._lock:
            trace = self._by_trace.get(trace_id)
            if trace is None:
                return []
            start = bisect.bisect_left(trace.steps, first_step)
            end = bisect.bisect_right(trace.steps, last_step)
            return [trace.by_step[step] for step in trace.steps[start:end]]

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        with self._lock:
            return self._forget(checkpoint_id)

    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        with self._lock:
            return sum(self._forget(checkpoint_id) for checkpoint_id in checkpoint_ids)

    async def _delete_trace(self, trace_id: TraceId) -> int:
        with self._lock:
            for checkpoint_id in self._writes_by_trace.pop(trace_id, set()):
                self._writes.pop(checkpoint_id, None)
            trace = self._by_trace.pop(trace_id, None)
            if trace is None:
                return 0
            for blob in trace.by_step.values():
                del self._by_id[blob.checkpoint_id]
            return len(trace.steps)

    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        with self._lock:
            found = [each for each in self._by_id if str(each).startswith(prefix)]
        return sorted(found)[:limit]

    def _forget(self, checkpoint_id: CheckpointId) -> bool:
        """Drop one checkpoint and its writes, holding the lock; ``False`` if it was not there."""
        writes = self._writes.pop(checkpoint_id, None)
        if writes:
            trace_id = next(iter(writes.values())).trace_id
            with_writes = self._writes_by_trace[trace_id]
            with_writes.discard(checkpoint_id)
            if not with_writes:
                del self._writes_by_trace[trace_id]
        blob = self._by_id.pop(checkpoint_id, None)
        if blob is None:
            return False
        self._forget_step(blob.trace_id, blob.step)
        return True

    def _forget_step(self, trace_id: TraceId, step: int) -> None:
        trace = self._by_trace[trace_id]
        del trace.by_step[step]
        del trace.steps[bisect.bisect_left(trace.steps, step)]
        if not trace.steps:
            del self._by_trace[trace_id]


def _entry(blob: CheckpointBlob) -> CheckpointInfo | DamagedRecord:
    """The listing entry of a blob held; a header changed underneath the store is damage."""
    try:
        blob.check()
    except ValueError as exc:
        return DamagedRecord(blob.checkpoint_id, blob.trace_id, blob.step, f"its header: {exc}")
    return blob.info()
