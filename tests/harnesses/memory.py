from __future__ import annotations

import dataclasses

from flowpoint.ids import CheckpointId
from flowpoint.stores.memory import InMemoryBlobStore
from tests.harnesses.base import StoreHarness


class MemoryHarness(StoreHarness):
    name = "memory"

    def __init__(self) -> None:
        self.store = InMemoryBlobStore()

    async def open(self) -> InMemoryBlobStore:
        return self._view(InMemoryBlobStore())

    async def open_read_only(self) -> InMemoryBlobStore:
        return self._view(InMemoryBlobStore(read_only=True))

    def _view(self, view: InMemoryBlobStore) -> InMemoryBlobStore:
        # Another store object over the same dictionaries and lock: closing one (as
        # each test's store is closed) leaves the others usable, as with any backend.
        shared = ("_lock", "_by_id", "_by_trace", "_writes", "_writes_by_trace")
        vars(view).update((name, getattr(self.store, name)) for name in shared)
        return view

    async def snapshot(self) -> object:
        store = self.store
        return (
            dict(store._by_id),
            {trace: (list(t.steps), dict(t.by_step)) for trace, t in store._by_trace.items()},
            {checkpoint: dict(writes) for checkpoint, writes in store._writes.items()},
            {trace: set(ids) for trace, ids in store._writes_by_trace.items()},
        )

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        return self.store._by_id[checkpoint_id].data

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        self._replace(checkpoint_id, data=data)

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # Memory holds objects: the damage is a value no header may hold.
        self._replace(checkpoint_id, metadata={"k": {"nested": [1, 2]}})

    def _replace(self, checkpoint_id: CheckpointId, **changes: object) -> None:
        old = self.store._by_id[checkpoint_id]
        new = dataclasses.replace(old, **changes)  # type: ignore[arg-type]
        self.store._by_id[checkpoint_id] = new
        self.store._by_trace[old.trace_id].by_step[old.step] = new


async def make() -> MemoryHarness:
    return MemoryHarness()
