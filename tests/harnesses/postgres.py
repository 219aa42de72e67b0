"""PostgreSQL: one database per harness, created through the ``test`` database and dropped after."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from flowpoint.ids import CheckpointId
from flowpoint.stores.postgres import PostgresBlobStore
from tests.harnesses.base import StoreHarness, unavailable

ADMIN_URL = os.environ.get("FLOWPOINT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "flowpoint_checkpoints"


def url_for(database: str, admin_url: str = ADMIN_URL) -> str:
    """``admin_url`` with its database replaced."""
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))


async def admin_execute(statement: sql.Composed) -> None:
    async with await psycopg.AsyncConnection.connect(
        ADMIN_URL, autocommit=True, connect_timeout=5
    ) as conn:
        await conn.execute(statement)


async def create_database() -> str:
    """A new, empty database; its name. Skips (fails in CI) if the server is not there."""
    name = f"flowpoint_test_{secrets.token_hex(6)}"
    try:
        await admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}")
    return name


async def drop_database(name: str) -> None:
    # FORCE: terminate connections a failed test may have left open.
    await admin_execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


class PostgresHarness(StoreHarness):
    name = "postgres"

    def __init__(self, database: str) -> None:
        self.database = database
        self.url = url_for(database)
        self._stores: list[PostgresBlobStore] = []

    async def open(self) -> PostgresBlobStore:
        store = PostgresBlobStore.from_url(self.url, max_size=4)
        self._stores.append(store)
        return store

    def store_url(self) -> str:
        return self.url

    async def execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a plain connection of the harness's own."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        rows = await self.execute(
            f"SELECT data FROM {TABLE} WHERE checkpoint_id = %s", (checkpoint_id,)
        )
        if not rows:
            raise KeyError(checkpoint_id)
        data: bytes = rows[0][0]
        return data

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        await self.update(checkpoint_id, "data = %s, size = %s", (data, len(data)))

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # jsonb takes any JSON, but the store's metadata is a flat object of scalars.
        await self.update(checkpoint_id, "metadata = %s::jsonb", ('{"k": {"nested": [1, 2]}}',))

    async def update(
        self, checkpoint_id: CheckpointId, assignments: str, params: tuple[Any, ...]
    ) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cursor = await conn.execute(
                f"UPDATE {TABLE} SET {assignments} WHERE checkpoint_id = %s",
                (*params, checkpoint_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(checkpoint_id)

    async def snapshot(self) -> object:
        tables = await self.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        rows = {}
        for schema, table in tables:
            name = sql.Identifier(schema, table).as_string(None)
            rows[table] = await self.execute(f"SELECT * FROM {name} ORDER BY 1, 2")
        return tables, rows

    async def cleanup(self) -> None:
        try:
            for store in self._stores:
                await store.close()
        finally:
            await drop_database(self.database)


async def make() -> PostgresHarness:
    return PostgresHarness(await create_database())
