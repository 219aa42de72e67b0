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
        # Another store object over the same dictionaries and lock: closing one (as
        # each test's store is closed) leaves the others usable, as with any backend.
        view = InMemoryBlobStore()
        vars(view).update((k, v) for k, v in vars(self.store).items() if k != "_closed")
        return view

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
