"""``postgresql://user@host:port/dbname``: checkpoints in a PostgreSQL table (psycopg 3).

Where it differs from the :class:`~flowpoint.stores._base.BlobCheckpointStore`
contract:

- **Needs** PostgreSQL 14 or newer, a database in the UTF8 encoding, and (for
  ``migrate=True``) the right to create tables in ``schema``. Install the driver
  with ``pip install 'flowpoint[postgres]'``.
- **The schema is versioned** (:mod:`._postgres_sql`): table
  ``<prefix>schema_migrations`` records the migrations applied (version 2 adds
  the pending writes' table, ``<prefix>writes``). :meth:`PostgresBlobStore.setup`
  applies the missing ones in one transaction under a transaction-level advisory
  lock, so that processes starting at once are safe, and a database of an older
  release is upgraded in place; it runs on first use unless ``migrate=False``. A
  database migrated by a newer flowpoint is refused with
  :class:`~flowpoint.errors.StorageError` rather than misread.
- **Pending writes** are saved in one transaction that holds a transaction-level
  advisory lock on their checkpoint (so that the check of their trace holds),
  with one ``INSERT ... ON CONFLICT`` of the whole call. Each delete takes the
  writes of what it deletes along in the same statement.
- **Fenced saves** (:class:`~flowpoint.stores._fenced.FencedBlobStore`): the
  run queue's tables (version 3) live beside the checkpoints; a fenced save is
  one INSERT whose lease check locks the run's row ``FOR SHARE``.
- **A URL that cannot work** fails on the first call with the server's reason:
  a store made from a URL connects once on its own before it opens its pool.
- **Read-only** (``read_only=True``): nothing is created or migrated; the first
  call checks that the migrations table is there (else the database is not a
  flowpoint store), and a pool made from a URL sets
  ``default_transaction_read_only`` on its sessions, so the server refuses
  writes too.
- **Concurrency**: every call borrows a connection of an
  ``AsyncConnectionPool`` for one statement (or one transaction), so calls run
  in parallel up to the pool's ``max_size`` and queue beyond it; a save is one
  autocommit INSERT (one round trip), and the ``UNIQUE (trace_id, step)``
  constraint picks the one winner of a race, across processes and hosts.
  **Group commit**: saves made on one event loop while another save's INSERT is
  in flight wait, and go in together as one INSERT of up to 64 rows
  (:mod:`._group_commit`); each still returns only once its row is committed,
  and a row that conflicts (or that the server refuses) is saved again alone,
  so its caller meets its own :class:`~flowpoint.errors.CheckpointConflict` or
  error as a single save does. A batch waiting on a lock (another transaction's
  uncommitted row of the same step) holds up the saves in it, but not the ones
  queued after it: after 50 ms they go as another batch beside it. A call
  waits up to the pool's ``timeout`` for a connection before it fails with
  :class:`~flowpoint.errors.StorageError`. A pool the store made from a URL
  belongs to the event loop that first used it, drops connections an outage
  broke, and reconnects in the background, so the same store works again once
  the server is back.
- **Durability** is the server's: a save returns once its commit returns, so with
  ``synchronous_commit = on`` (PostgreSQL's default) an acknowledged save survives
  a crash or a power loss of the server; with ``off`` the last commits may be
  lost; with synchronous replication it waits for the standbys the server names.
- **Storage**: ``data`` is a ``bytea`` column left to TOAST's defaults (values
  above about 2 KB are compressed with the server's default method and moved out
  of line), which shrinks uncompressed codec output and gives up quickly on
  compressed or encrypted bytes. Listings read header columns only, never ``data``.
- **Rewrites** (:meth:`~flowpoint.stores._base.RewritableBlobStore.rewrite`) are
  one UPDATE of ``data`` and ``size`` (one round trip) guarded by the whole
  header, metadata compared as ``jsonb``'s canonical text (which tells ``1``
  from ``1.0``). When it matches no row, a transaction on the same connection
  locks the row (``SELECT ... FOR UPDATE``), compares the decoded header in
  Python and updates by id: metadata stored in another textual form (``0.50``)
  is still accepted. A rewrite racing a delete lands before it or finds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import msgspec
from typing_extensions import TypeIs, override

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    DamagedRecord,
    PendingWrite,
    validate_metadata,
)
from flowpoint.errors import (
    CorruptCheckpoint,
    LeaseLost,
    StorageError,
)
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import (
    DamageReportingBlobStore,
    DriverErrors,
    PruneRule,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    id_range,
    missing_driver,
    rewrite_conflict,
)
from flowpoint.stores._columns import (
    blob_with_data,
    info_with_size,
    listed_entry,
    metadata_from_json,
    split_traces,
    trace_from_text,
    value_kind,
    write_from_columns,
)
from flowpoint.stores._fenced import Fence, FencedBlobStore
from flowpoint.stores._group_commit import BatchedInserts
from flowpoint.stores._postgres_sql import MIGRATIONS, Statements

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresBlobStore", "insert_params"]

_Pool: TypeAlias = "AsyncConnectionPool[Any]"
_Connection: TypeAlias = "AsyncConnection[Any]"
_Row: TypeAlias = tuple[Any, ...]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MAX: Final = 2**63 - 1
_UINT64: Final = 2**64
# A group commit's batch: at most this many saves, and about this many bytes of data.
_BATCH_ROWS: Final = 64
_BATCH_BYTES: Final = 8 * 2**20
# A batch's commit that takes longer (a lock wait) lets the next batch start beside it.
_BATCH_STALL: Final = 0.05
_MIN_SERVER_VERSION: Final = 140000  # extract(epoch ...) is an exact numeric from 14 on
# pg_advisory_xact_lock key of every flowpoint setup: b"flowpoin" as a big-endian int64.
_SETUP_LOCK_KEY: Final = int.from_bytes(b"flowpoin", "big")
# pg_advisory_xact_lock(int4, int4) class of a checkpoint's writes: b"fpwr".
_WRITES_LOCK_CLASS: Final = int.from_bytes(b"fpwr", "big", signed=True)

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")
_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)?\Z")
_BOOLEANS: Final[Mapping[str, bool]] = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}
# Options of from_url that a URL query may carry too; every other query parameter
# must be a libpq connection parameter.
_FROM_URL_DEFAULTS: Final[Mapping[str, Any]] = {
    "min_size": 1,
    "max_size": 10,
    "migrate": True,
    "schema": "public",
    "table_prefix": "flowpoint_",
    "timeout": 30.0,
}
_URL_OPTIONS: Final = frozenset(_FROM_URL_DEFAULTS)


class PostgresBlobStore(RewritableBlobStore, DamageReportingBlobStore, FencedBlobStore):
    """Checkpoints in a PostgreSQL table, through a psycopg ``AsyncConnectionPool``.

    ``pool`` belongs to the application: it must be open, :meth:`close` leaves it
    open, and its connections may be in autocommit mode or not (outside it, each
    statement gets its own transaction). ``schema`` and ``table_prefix`` name the
    tables (``public.flowpoint_checkpoints`` by default). With ``migrate=True``
    the first call runs :meth:`setup`. With ``read_only=True`` nothing is created
    or migrated, and the first call checks that the tables are a flowpoint store's.
    The constructor does no I/O.
    """

    def __init__(
        self,
        pool: _Pool,
        *,
        schema: str = "public",
        table_prefix: str = "flowpoint_",
        migrate: bool = True,
        read_only: bool = False,
    ) -> None:
        _require_driver()
        if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a plain SQL name, not {schema!r}")
        if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
            raise ValueError(
                f"table_prefix must be letters, digits and '_' (not first a digit), "
                f"not {table_prefix!r}"
            )
        if not isinstance(migrate, bool):
            raise ValueError(f"migrate must be a bool, not {migrate!r}")
        self._read_only = check_read_only(read_only)
        self._sql = Statements(schema, table_prefix)
        self._pool = pool
        self._table_prefix = table_prefix
        self._migrate = migrate and not read_only
        self._migrated = False
        # The schema version found by a read-only store's first call (None: not yet).
        self._schema_found: int | None = None
        self._setup_lock = asyncio.Lock()  # binds to no loop until contended
        self._owns_pool = False
        self._conninfo = ""  # of a pool the store made itself
        self._label = f"pool {getattr(pool, 'name', '?')!r}"
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(pool.max_size)  # see _take_slot
        self._group_commit: BatchedInserts[_Row] = BatchedInserts(
            self._insert_batch,
            size=_data_size,
            max_rows=_BATCH_ROWS,
            max_bytes=_BATCH_BYTES,
            stall=_BATCH_STALL,
            max_batches=pool.max_size,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        migrate: bool | None = None,
        schema: str | None = None,
        table_prefix: str | None = None,
        timeout: float | None = None,
        read_only: bool = False,
    ) -> PostgresBlobStore:
        """A store over a pool of its own, opened on first use and closed by :meth:`close`.

        ``url`` is a libpq URI (``postgresql://`` or ``postgres://``). Its query may
        carry libpq connection parameters (``sslmode``, ``connect_timeout``...) and
        the options of this method (``?max_size=20&migrate=false``); a keyword
        argument that is not ``None`` overrides the URL. Anything else in the query
        raises ``ValueError``. Defaults: ``min_size=1``, ``max_size=10``
        connections; ``migrate=True``; ``schema="public"``;
        ``table_prefix="flowpoint_"``; ``timeout=30.0``, the seconds a call waits
        for a connection. With ``read_only=True`` the pool's sessions are read-only
        too (``default_transaction_read_only``), so the server refuses any write.

        The first call connects once on its own before it opens the pool: a wrong
        port, role or database (anything the server refuses) fails at once with the
        server's own reason, not after ``timeout``.
        """
        _require_driver()
        from psycopg_pool import AsyncConnectionPool

        conninfo, from_query = _split_url(url)
        given = {
            "min_size": min_size,
            "max_size": max_size,
            "migrate": migrate,
            "schema": schema,
            "table_prefix": table_prefix,
            "timeout": timeout,
        }
        options = {**_FROM_URL_DEFAULTS, **_url_options(url, from_query)}
        options.update((key, value) for key, value in given.items() if value is not None)
        _check_pool_size(options["min_size"], options["max_size"], options["timeout"])
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=options["min_size"],
            max_size=options["max_size"],
            timeout=options["timeout"],
            kwargs={"autocommit": True},
            configure=_read_only_session if read_only else None,
            check=_check_idle_connection,
            open=False,
            name="flowpoint",
        )
        store = cls(
            pool,
            schema=options["schema"],
            table_prefix=options["table_prefix"],
            migrate=options["migrate"],
            read_only=read_only,
        )
        store._owns_pool = True
        store._conninfo = conninfo
        store._label = _redact(url)
        return store

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._label}, schema={self._sql.schema!r}, "
            f"table_prefix={self._table_prefix!r})"
        )

    async def setup(self) -> None:
        """Create or upgrade the tables; a no-op when they are up to date.

        Runs in one transaction under ``pg_advisory_xact_lock``, so several
        processes may call it at once. Raises
        :class:`~flowpoint.errors.StorageError` for a database migrated by a newer
        flowpoint, and on every call after that (nothing is cached).
        """
        with self._calling("setup"):
            async with self._setup_lock:
                if self._migrated:
                    return
                pool = await self._open_pool()
                async with pool.connection() as conn:
                    await _migrate(conn, self._sql)
                self._migrated = True

    @override
    async def _close(self) -> None:
        await self._group_commit.wait_idle()
        if not self._owns_pool:
            return
        loop = self._pool_loop
        if loop is None or loop is asyncio.get_running_loop():
            await self._pool.close()
        elif loop.is_running():
            # Opened on another thread's loop (the blocking facade's): close it there.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._pool.close(), loop))

    @override
    def _driver_errors(self) -> DriverErrors:
        import psycopg

        def conflict(exc: BaseException) -> Literal["step", "id"] | None:
            if not isinstance(exc, psycopg.errors.UniqueViolation):
                return None
            return "id" if exc.diag.constraint_name == self._sql.pkey else "step"

        # The pool's errors (PoolTimeout...) are psycopg's too.
        return DriverErrors(failures=(psycopg.Error,), conflict=conflict, describe=str)

    # -- the interface -------------------------------------------------------------------

    @override
    async def _save(self, blob: CheckpointBlob) -> None:
        params = insert_params(blob)
        if await self._group_commit.submit(params):
            return
        async with self._connection() as conn:
            await conn.execute(self._sql.insert, params)

    async def _insert_batch(self, rows: list[_Row]) -> list[bool]:
        """Insert the rows of a group commit in one statement; say which went in.

        A row that conflicts is left out by the statement (a later row with an id
        already in the batch is not sent): its caller saves it alone, and meets
        the conflict as a single save does. If the server refuses the statement
        for what a row holds, nothing went in, and each caller saves alone to
        meet its own error. An error of the connection, after which the batch
        may or may not be stored, reaches every caller.
        """
        import psycopg

        first: dict[object, int] = {}
        for index, row in enumerate(rows):
            first.setdefault(row[0], index)
        unique = [row for index, row in enumerate(rows) if first[row[0]] == index]
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(
                    self._sql.insert_batch(len(unique)), [v for row in unique for v in row]
                )
                stored = {found for (found,) in await cursor.fetchall()}
        except psycopg.OperationalError:
            raise  # the connection failed: the batch may have been committed or not
        except psycopg.Error:
            return [False] * len(rows)  # refused whole, before or by the server
        return [first[row[0]] == index and row[0] in stored for index, row in enumerate(rows)]

    @override
    async def _save_fenced(self, blob: CheckpointBlob, fence: Fence) -> None:
        params = (fence.trace_id, fence.epoch, *insert_params(blob))
        async with self._connection() as conn:
            cursor = await conn.execute(self._sql.insert_fenced, params)
            if cursor.rowcount != 1:
                raise LeaseLost(fence.trace_id, fence.epoch)

    @override
    async def _save_writes_fenced(
        self, writes: list[PendingWrite], fence: Fence, *, overwrite: bool
    ) -> int:
        return await self._insert_writes(writes, overwrite, fence)

    @contextlib.asynccontextmanager
    async def _transact(self, action: str) -> AsyncIterator[_Connection]:
        """A pooled connection in a transaction, driver errors mapped.

        This is how the run queue (:mod:`flowpoint.queue`) works on the tables it
        shares with the checkpoints.
        """
        with self._calling(action, writes=True):
            async with self._connection() as conn, conn.transaction():
                yield conn

    @property
    def _listen_conninfo(self) -> str | None:
        """Where a listener connects for the run queue's notifications; ``None``: a given pool."""
        return self._conninfo or None

    @override
    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        from psycopg.rows import tuple_row

        size = len(blob.data)
        params = (
            size,
            blob.data,
            blob.checkpoint_id,
            blob.trace_id,
            blob.step,
            blob.parent_id,
            _signed64(blob.graph_hash),
            blob.created_at,
            blob.current_node,
            _encode_metadata(blob.metadata),
        )
        async with self._connection() as conn:
            cursor = await conn.execute(self._sql.rewrite, params)
            if cursor.rowcount > 0:
                return True
            # No row with this exact header: absent, another header, or the same
            # metadata stored in another textual form. Decide under the row's lock,
            # so that a delete or another rewrite waits (or has happened).
            async with conn.transaction():
                cursor = conn.cursor(binary=True, row_factory=tuple_row)
                await cursor.execute(self._sql.header_for_update, (blob.checkpoint_id,))
                row = await cursor.fetchone()
                if row is None:
                    return False
                field = different_header(_info_from_row(row), blob)
                if field is not None:
                    raise rewrite_conflict(blob, field)
                await cursor.execute(self._sql.rewrite_by_id, (size, blob.data, blob.checkpoint_id))
                return True

    @override
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        rows = await self._fetch(self._sql.load, (checkpoint_id,))
        return _blob_from_row(rows[0]) if rows else None

    @override
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        rows = await self._fetch(self._sql.latest, (trace_id,))
        return _blob_from_row(rows[0]) if rows else None

    @override
    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        if before_step is None:
            rows = await self._fetch(self._sql.history, (trace_id, limit))
        else:
            query = self._sql.history_before
            rows = await self._fetch(query, (trace_id, before_step, limit))
        return [listed_entry(partial(_info_from_row, row), trace_id, row[2]) for row in rows]

    @override
    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        if first_step > _INT64_MAX:
            return []  # no bigint step is that high
        # Bounds within bigint keep the comparison on the (trace_id, step) index.
        params = (trace_id, first_step, min(last_step, _INT64_MAX))
        rows = await self._fetch(self._sql.steps, params)
        return [_blob_from_row(row) for row in rows]

    @override
    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        rows = await self._fetch(self._sql.traces, ())
        traces, damaged = split_traces([row[0] for row in rows])
        entries: list[TraceId | DamagedRecord] = [*traces]
        for value, reason in damaged:
            held = await self._fetch(self._sql.trace_rows, (value,))
            entries.extend(DamagedRecord(raw_id, None, step, reason) for raw_id, step in held)
        return entries

    @override
    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        bounds = id_range(prefix)
        if bounds is None:
            return []
        low, high = bounds
        if high is None:
            rows = await self._fetch(self._sql.ids_from, (low, limit))
        else:
            query = self._sql.ids_between
            rows = await self._fetch(query, (low, high, limit))
        return [CheckpointId(row[0]) for row in rows]

    @override
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        return await self._insert_writes(writes, overwrite, None)

    async def _insert_writes(
        self, writes: list[PendingWrite], overwrite: bool, fence: Fence | None
    ) -> int:
        """Insert one call's writes in one transaction, checking ``fence`` first if given."""
        first = writes[0]
        insert = self._sql.insert_writes_replace if overwrite else self._sql.insert_writes_keep
        params = (
            first.checkpoint_id,
            first.trace_id,
            [write.task_id for write in writes],
            [write.index for write in writes],
            [bytes(write.data) for write in writes],
        )
        async with self._connection() as conn, conn.transaction():
            await conn.execute(self._sql.lock_writes, _writes_lock_key(first.checkpoint_id))
            if fence is not None:
                cursor = await conn.execute(self._sql.lease_held, (fence.trace_id, fence.epoch))
                if await cursor.fetchone() is None:
                    raise LeaseLost(fence.trace_id, fence.epoch)
            cursor = await conn.execute(self._sql.writes_trace, (first.checkpoint_id,))
            stored = await cursor.fetchone()
            if stored is not None:
                check_writes_trace(first, stored[0])
            cursor = await conn.execute(insert, params)
            return cursor.rowcount

    @override
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        if self._schema_found == 1:
            return []  # read-only, on tables older than pending writes
        rows = await self._fetch(self._sql.load_writes, (checkpoint_id,))
        return [write_from_columns(checkpoint_id, *row) for row in rows]

    @override
    async def _writes_if_latest(self, blob: CheckpointBlob) -> list[PendingWrite] | None:
        if self._schema_found == 1:  # as in _load_writes: tables without writes
            return await super()._writes_if_latest(blob)
        rows = await self._fetch(self._sql.latest_with_writes, (blob.trace_id,))
        if not rows or rows[0][0] != blob.checkpoint_id or rows[0][1] != blob.data:
            return None
        checkpoint_id = blob.checkpoint_id
        # The LEFT JOIN's row without a write has NULL in task_id, which no write can hold.
        return [write_from_columns(checkpoint_id, *row[2:]) for row in rows if row[2] is not None]

    @override
    async def _load_writes_many(
        self, checkpoint_ids: list[CheckpointId]
    ) -> dict[CheckpointId, list[PendingWrite]]:
        if self._schema_found == 1:
            return {}  # as in _load_writes
        ids = {checkpoint_id: checkpoint_id for checkpoint_id in checkpoint_ids}
        found: dict[CheckpointId, list[PendingWrite]] = {}
        for key, *columns in await self._fetch(self._sql.load_writes_many, (list(ids),)):
            checkpoint_id = ids[key]
            found.setdefault(checkpoint_id, []).append(write_from_columns(checkpoint_id, *columns))
        return found

    @override
    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        return await self._delete_many([checkpoint_id]) > 0

    @override
    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        params = {"ids": checkpoint_ids}
        return await self._modify(self._sql.delete_many, params)

    @override
    async def _delete_trace(self, trace_id: TraceId) -> int:
        params = {"trace": trace_id}
        return await self._modify(self._sql.delete_trace, params)

    @override
    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        params: dict[str, object] = {"trace": trace_id}
        if rule.keep_latest is not None:
            params["keep"] = rule.keep_latest
        if rule.cutoff is not None:
            params["cutoff"] = rule.cutoff
        statement = self._sql.prune(keep="keep" in params, cutoff="cutoff" in params)
        rows = await self._fetch(statement, params)
        return int(rows[0][0])

    # -- connections -----------------------------------------------------------------------

    async def _fetch(
        self, query: str, params: Sequence[object] | Mapping[str, object]
    ) -> list[_Row]:
        from psycopg.rows import tuple_row

        # Binary results: bytea arrives as raw bytes, not as hex text to decode.
        async with self._connection() as conn:
            cursor = conn.cursor(binary=True, row_factory=tuple_row)
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def _modify(self, query: str, params: Sequence[object] | Mapping[str, object]) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        """A pooled connection for one statement (or one transaction).

        Outside autocommit mode (an application's pool) the statement gets its
        own transaction, committed when the block ends.
        """
        if self._migrate and not self._migrated:
            await self.setup()
        elif self._read_only and self._schema_found is None:
            await self._check_schema()
        pool = await self._open_pool()
        await self._take_slot(pool)
        try:
            async with pool.connection() as conn:
                if conn.autocommit:
                    yield conn
                else:
                    async with conn.transaction():
                        yield conn
        finally:
            self._slots.release()

    async def _probe(self) -> None:
        """Connect once, alone, so that a URL that cannot work fails now, saying why.

        The pool retries a failed connection in the background until a call's
        timeout passes, and then knows only that it got none.
        """
        import psycopg

        try:
            async with asyncio.timeout(self._pool.timeout):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except TimeoutError:
            raise StorageError(f"{self!r}: no connection within {self._pool.timeout:g} s") from None
        await conn.close()

    async def _take_slot(self, pool: _Pool) -> None:
        """Wait, up to the pool's timeout, until fewer than ``max_size`` calls run.

        Calls beyond the pool's size queue here rather than in the pool: waiting
        on a semaphore costs far less than the pool's wait for a connection (a
        task and a condition per waiter), which is what 32 saves in flight meet.
        """
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        from psycopg_pool import PoolTimeout

        try:
            async with asyncio.timeout(pool.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"couldn't get a connection after {pool.timeout:.2f} sec") from None

    async def _check_schema(self) -> None:
        """A read-only store's first look: whose tables are these, of which version."""
        import psycopg

        pool = await self._open_pool()
        async with pool.connection() as conn:
            try:
                cursor = await conn.execute(self._sql.schema_version)
            except psycopg.errors.UndefinedTable as exc:
                raise StorageError(
                    f"{self!r} is not a flowpoint store: there is no "
                    f"{self._table_prefix}schema_migrations table in schema {self._sql.schema!r}"
                ) from exc
            row = await cursor.fetchone()
        version = 0 if row is None or row[0] is None else row[0]
        if not 1 <= version <= len(MIGRATIONS):
            raise StorageError(
                f"{self!r}: the flowpoint tables have schema version {version}; this "
                f"flowpoint reads versions 1 to {len(MIGRATIONS)}"
            )
        self._schema_found = version

    async def _open_pool(self) -> _Pool:
        if not self._owns_pool:
            return self._pool
        loop = asyncio.get_running_loop()
        if self._pool_loop is None:
            await self._probe()
            # wait=False: a server that is down later must not close the pool for good;
            # the pool keeps reconnecting and each call waits up to its timeout.
            # Opening an open pool is a no-op, so concurrent first calls are safe.
            await self._pool.open(wait=False)
            self._pool_loop = loop
        elif self._pool_loop is not loop:
            raise StorageError(
                f"{self!r} was first used in another event loop; its connection pool "
                "belongs to that loop (open one store per event loop)"
            )
        return self._pool


# -- setup -------------------------------------------------------------------------------


async def _migrate(conn: _Connection, statements: Statements) -> None:
    from psycopg.rows import tuple_row

    async with conn.transaction():
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
        await cursor.execute(
            "SELECT current_setting('server_version_num')::int, "
            "current_setting('server_encoding'), "
            "EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)",
            (statements.schema,),
        )
        row = await cursor.fetchone()
        assert row is not None
        version_num, encoding, schema_exists = row
        if version_num < _MIN_SERVER_VERSION:
            raise StorageError(f"flowpoint needs PostgreSQL 14 or newer (server: {version_num})")
        if encoding != "UTF8":
            raise StorageError(f"flowpoint needs a database in UTF8, not {encoding}")
        if not schema_exists:
            await cursor.execute(statements.create_schema)
        await cursor.execute(statements.create_migrations_table)
        await cursor.execute(statements.schema_version)
        row = await cursor.fetchone()
        current = 0 if row is None or row[0] is None else row[0]
        known = len(statements.migrations)
        if current > known:
            raise StorageError(
                f"the flowpoint tables in schema {statements.schema!r} have schema version "
                f"{current}, written by a newer flowpoint (this one knows up to version "
                f"{known}); upgrade flowpoint"
            )
        for version in range(current + 1, known + 1):
            for statement in statements.migrations[version - 1]:
                await cursor.execute(statement)
            await cursor.execute(statements.record_migration, (version,))


async def _read_only_session(conn: _Connection) -> None:
    """The pool's setup of a read-only store's connections: the server refuses writes."""
    await conn.execute("SET default_transaction_read_only = on")


async def _check_idle_connection(conn: _Connection) -> None:
    """The pool's check of an idle connection before it lends it out.

    An idle connection receives nothing unless the server or the network closed it
    (or sent a notice), so a socket that polls readable gets a real round trip; a
    quiet one costs one ``poll`` and no round trip. Raising makes the pool drop
    the connection and lend another.
    """
    from psycopg_pool import AsyncConnectionPool

    if conn.closed or _readable(conn.fileno()):
        await AsyncConnectionPool.check_connection(conn)


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # Windows has no poll()
    return bool(readable)


def _writes_lock_key(checkpoint_id: CheckpointId) -> tuple[int, int]:
    """The two-int advisory lock of a checkpoint's writes (a key space apart from setup's)."""
    return _WRITES_LOCK_CLASS, int.from_bytes(checkpoint_id.bytes[-4:], "big", signed=True)


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise missing_driver("postgres", exc) from exc


# -- URLs --------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without flowpoint's options (checked by libpq), and those options."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.pq import Conninfo

    if not isinstance(url, str):
        raise ValueError(f"a PostgreSQL URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError(f"a PostgreSQL URL starts with postgresql:// or postgres://: {url!r}")
    libpq_names = {default.keyword.decode() for default in Conninfo.get_defaults()}
    ours: dict[str, str] = {}
    passed: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _URL_OPTIONS:
            if name in ours:
                raise ValueError(f"option {name!r} is given twice in {_redact(url)!r}")
            ours[name] = value
        elif name in libpq_names:
            passed.append((name, value))
        else:
            raise ValueError(
                f"unknown PostgreSQL URL option {name!r} in {_redact(url)!r}: neither a "
                f"flowpoint option ({', '.join(sorted(_URL_OPTIONS))}) nor a libpq parameter"
            )
    conninfo = urlunsplit(parts._replace(query=urlencode(passed)))
    try:
        conninfo_to_dict(conninfo)
    except ProgrammingError as exc:
        raise ValueError(f"not a valid PostgreSQL URL {_redact(url)!r}: {exc}") from None
    return conninfo, ours


def _url_options(url: str, query: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in query.items():
        try:
            if name in ("min_size", "max_size"):
                options[name] = int(value)
            elif name == "timeout":
                options[name] = float(value)
            elif name == "migrate":
                options[name] = _BOOLEANS[value.lower()]
            else:
                options[name] = value
        except (ValueError, KeyError):
            raise ValueError(f"bad value {value!r} for {name} in {_redact(url)!r}") from None
    return options


def _check_pool_size(min_size: object, max_size: object, timeout: object) -> None:
    if not _is_int(min_size) or min_size < 0:
        raise ValueError(f"min_size must be an int >= 0, not {min_size!r}")
    if not _is_int(max_size) or max_size < max(min_size, 1):
        raise ValueError(f"max_size must be an int >= 1 and >= min_size, not {max_size!r}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < float("inf")
    ):
        raise ValueError(f"timeout must be a number of seconds > 0, not {timeout!r}")


def _is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _redact(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, hosts = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{hosts}"))


# -- values to columns and back, trusting nothing read -------------------------------------


def insert_params(blob: CheckpointBlob) -> tuple[object, ...]:
    """The values of a checkpoint's INSERT, in the order of its columns."""
    return (
        blob.checkpoint_id,
        blob.trace_id,
        blob.step,
        blob.parent_id,
        _signed64(blob.graph_hash),
        blob.created_at,
        blob.current_node,
        _encode_metadata(blob.metadata),
        len(blob.data),
        blob.data,
    )


def _data_size(params: _Row) -> int:
    """The bytes of a checkpoint's data, in its INSERT's values."""
    return len(params[-1])


def _signed64(unsigned: int) -> int:
    """A bigint is signed: store an unsigned hash as its two's complement."""
    return unsigned - _UINT64 if unsigned > _INT64_MAX else unsigned


def _encode_metadata(metadata: Mapping[str, object]) -> str:
    if not metadata:
        return "{}"
    checked = validate_metadata(metadata)
    # jsonb keeps numbers as numeric and prints them without an exponent: 1e16 would
    # read back as the int 10000000000000000. Floats written positionally with a
    # fractional part read back as the same floats.
    encodable = {
        key: msgspec.Raw(_float_json(value)) if type(value) is float else value
        for key, value in checked.items()
    }
    return msgspec.json.encode(encodable).decode()


def _float_json(value: float) -> bytes:
    text = format(Decimal(repr(value)), "f")  # repr: the shortest digits that round-trip
    return (text if "." in text else f"{text}.0").encode()


def _blob_from_row(row: _Row) -> CheckpointBlob:
    return blob_with_data(_header_from_row(row), row[8])


def _info_from_row(row: _Row) -> CheckpointInfo:
    return info_with_size(_header_from_row(row), row[8])


def _header_from_row(row: _Row) -> CheckpointHeader:
    raw_id, trace_id, step, parent_id, graph_hash, epoch, current_node, metadata = row[:8]
    if type(raw_id) is not UUID:
        raise CorruptCheckpoint(
            None, f"column checkpoint_id holds {value_kind(raw_id)}, not a uuid"
        )
    checkpoint_id = CheckpointId(raw_id)

    def corrupt(column: str, value: object, expected: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(
            checkpoint_id, f"column {column} holds {value_kind(value)}, {expected}"
        )

    trace = trace_from_text(trace_id, checkpoint_id)
    if type(step) is not int or step < 0:
        raise corrupt("step", step, "not an int >= 0")
    if parent_id is not None and type(parent_id) is not UUID:
        raise corrupt("parent_id", parent_id, "not a uuid or NULL")
    if type(graph_hash) is not int:
        raise corrupt("graph_hash", graph_hash, "not an int")
    if current_node is not None and type(current_node) is not str:
        raise corrupt("current_node", current_node, "not text or NULL")
    return CheckpointHeader(
        checkpoint_id=checkpoint_id,
        trace_id=trace,
        step=step,
        parent_id=None if parent_id is None else CheckpointId(parent_id),
        graph_hash=graph_hash % _UINT64,
        created_at=_created_from_column(checkpoint_id, epoch),
        current_node=current_node,
        metadata=metadata_from_json(checkpoint_id, metadata),
    )


def _created_from_column(checkpoint_id: CheckpointId, epoch: object) -> datetime:
    """``extract(epoch FROM created_at)`` (seconds, 6 decimals) as a UTC datetime."""
    if type(epoch) is not Decimal or not epoch.is_finite():
        raise CorruptCheckpoint(
            checkpoint_id, f"column created_at holds {value_kind(epoch)} seconds, not a finite time"
        )
    try:
        return _EPOCH + timedelta(microseconds=int(epoch.scaleb(6)))
    except OverflowError:
        raise CorruptCheckpoint(
            checkpoint_id, f"column created_at ({epoch} s) is out of the range of datetime"
        ) from None
