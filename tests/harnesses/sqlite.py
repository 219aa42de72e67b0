from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from flowpoint.ids import CheckpointId
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.harnesses.base import StoreHarness
from tests.harnesses.file import tree_snapshot


class SqliteHarness(StoreHarness):
    name = "sqlite"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="flowpoint-sqlite-"))
        self.path = self.dir / "checkpoints.db"
        self._stores: list[SqliteBlobStore] = []

    async def open(self) -> SqliteBlobStore:
        store = SqliteBlobStore(self.path)
        self._stores.append(store)
        return store

    def store_url(self) -> str:
        return f"sqlite:///{self.path}"

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT data FROM flowpoint_checkpoints WHERE checkpoint_id = ?",
                (checkpoint_id.bytes,),
            ).fetchone()
        if row is None:
            raise KeyError(checkpoint_id)
        data: bytes = row[0]
        return data

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        self._update(checkpoint_id, "data = ?, size = ?", (data, len(data)))

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # SQLite columns are dynamically typed: TEXT fits where an INTEGER belongs.
        self._update(checkpoint_id, "created_at = ?", ("yesterday",))

    async def snapshot(self) -> object:
        return tree_snapshot(str(self.dir))

    async def cleanup(self) -> None:
        for store in self._stores:
            await store.close()
        shutil.rmtree(self.dir)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10.0)

    def _update(
        self, checkpoint_id: CheckpointId, assignments: str, params: tuple[object, ...]
    ) -> None:
        with closing(self._connect()) as conn, conn:
            cursor = conn.execute(
                f"UPDATE flowpoint_checkpoints SET {assignments} WHERE checkpoint_id = ?",
                (*params, checkpoint_id.bytes),
            )
            if cursor.rowcount != 1:
                raise KeyError(checkpoint_id)


async def make() -> SqliteHarness:
    return SqliteHarness()
