"""``sqlite:///path.db``: checkpoints in one SQLite database file (the default backend).

Where it differs from the :class:`~flowpoint.stores.base.BlobCheckpointStore`
contract:

- **Durability** is chosen at construction. ``"full"`` (the default) commits with
  ``synchronous=FULL`` in WAL mode: an acknowledged save survives a power loss.
  ``"normal"`` uses ``synchronous=NORMAL``: a save survives a crash of the process,
  but the last commits may be lost if the machine loses power.
- **Several processes** may share one file: every write is a ``BEGIN IMMEDIATE``
  transaction, and a writer that finds the file locked waits up to
  ``busy_timeout`` seconds before failing with
  :class:`~flowpoint.errors.StorageError`. The ``UNIQUE (trace_id, step)``
  constraint picks the one winner of a race. Nothing read is cached between
  calls, so every store sees the others' commits at once. The file must be on a
  local disk: SQLite's WAL mode does not work over network filesystems.
- **The schema is versioned** (table ``flowpoint_schema``). A new file is set up
  on first use; a file written by a newer flowpoint is refused with
  :class:`~flowpoint.errors.StorageError` rather than misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, TypeAlias, TypeVar
from uuid import UUID

import msgspec
from typing_extensions import override

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointInfo,
    PendingWrite,
    validate_metadata,
)
from flowpoint.errors import (
    CheckpointConflict,
    CheckpointStoreError,
    CorruptCheckpoint,
    StorageError,
)
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores.base import (
    BlockingBlobStore,
    PruneRule,
    RewritableBlobStore,
    check_writes_trace,
    different_header,
    id_range,
    in_caller_thread,
    rewrite_conflict,
)
from flowpoint.stores.columns import (
    HeaderFields,
    blob_with_data,
    info_with_size,
    metadata_from_json,
    trace_from_text,
    value_kind,
    write_from_columns,
)

__all__ = ["SqliteBlobStore"]

Durability = Literal["full", "normal"]

_A = TypeVar("_A")
_T = TypeVar("_T")

_SYNCHRONOUS: Final[Mapping[str, str]] = {"full": "FULL", "normal": "NORMAL"}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_INT64_MAX: Final = 2**63 - 1
_UINT64: Final = 2**64

# -- SQL -------------------------------------------------------------------------------

_CREATE_SCHEMA_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS flowpoint_schema (version INTEGER NOT NULL)"
)
# Migration N (1-based) is _MIGRATIONS[N - 1]; a database records each one it got in
# flowpoint_schema. Released migrations never change: add a new one instead.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the checkpoints. `data` is the last column, so reading the header columns
    # (and `size`) of a row never touches the overflow pages that hold a large `data`.
    (
        """
        CREATE TABLE flowpoint_checkpoints (
            checkpoint_id BLOB PRIMARY KEY,
            trace_id      TEXT NOT NULL,
            step          INTEGER NOT NULL,
            parent_id     BLOB,
            graph_hash    INTEGER NOT NULL,
            created_at    INTEGER NOT NULL,
            current_node  TEXT,
            metadata      TEXT NOT NULL,
            size          INTEGER NOT NULL,
            data          BLOB NOT NULL,
            UNIQUE (trace_id, step)
        )
        """,
    ),
    # 2: pending writes, keyed as the interface keys them; by trace for delete_trace.
    (
        """
        CREATE TABLE flowpoint_writes (
            checkpoint_id BLOB NOT NULL,
            task_id       TEXT NOT NULL,
            idx           INTEGER NOT NULL,
            trace_id      TEXT NOT NULL,
            data          BLOB NOT NULL,
            PRIMARY KEY (checkpoint_id, task_id, idx)
        )
        """,
        "CREATE INDEX flowpoint_writes_trace ON flowpoint_writes (trace_id)",
    ),
)
_SCHEMA_VERSION: Final = len(_MIGRATIONS)

_HEADER: Final = (
    "checkpoint_id, trace_id, step, parent_id, graph_hash, created_at, current_node, metadata"
)
_INSERT_SQL: Final = (
    f"INSERT INTO flowpoint_checkpoints ({_HEADER}, size, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LOAD_SQL: Final = f"SELECT {_HEADER}, data FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
_LATEST_SQL: Final = (
    f"SELECT {_HEADER}, data FROM flowpoint_checkpoints "
    "WHERE trace_id = ? ORDER BY step DESC LIMIT 1"
)
_STEPS_SQL: Final = (
    f"SELECT {_HEADER}, data FROM flowpoint_checkpoints "
    "WHERE trace_id = ? AND step BETWEEN ? AND ? ORDER BY step"
)
_HISTORY_SQL: Final = (
    f"SELECT {_HEADER}, size FROM flowpoint_checkpoints "
    "WHERE trace_id = ? ORDER BY step DESC LIMIT ?"
)
_HISTORY_BEFORE_SQL: Final = (
    f"SELECT {_HEADER}, size FROM flowpoint_checkpoints "
    "WHERE trace_id = ? AND step < ? ORDER BY step DESC LIMIT ?"
)
# A rewrite replaces the data of the row whose whole header matches.
_REWRITE_SQL: Final = (
    "UPDATE flowpoint_checkpoints SET size = ?, data = ? WHERE checkpoint_id = ?"
    " AND trace_id = ? AND step = ? AND parent_id IS ? AND graph_hash = ?"
    " AND created_at = ? AND current_node IS ? AND metadata = ?"
)
_REWRITE_BY_ID_SQL: Final = (
    "UPDATE flowpoint_checkpoints SET size = ?, data = ? WHERE checkpoint_id = ?"
)
_HEADER_BY_ID_SQL: Final = (
    f"SELECT {_HEADER}, size FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
)
_TRACES_SQL: Final = "SELECT DISTINCT trace_id FROM flowpoint_checkpoints ORDER BY trace_id"
_IDS_FROM_SQL: Final = (
    "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE checkpoint_id >= ?"
    " ORDER BY checkpoint_id LIMIT ?"
)
_IDS_BETWEEN_SQL: Final = (
    "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE checkpoint_id >= ?"
    " AND checkpoint_id < ? ORDER BY checkpoint_id LIMIT ?"
)
_DELETE_SQL: Final = "DELETE FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
_DELETE_TRACE_SQL: Final = "DELETE FROM flowpoint_checkpoints WHERE trace_id = ?"
_PRUNE_SQL: Final = "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE trace_id = :trace"
_WRITES_TRACE_SQL: Final = "SELECT trace_id FROM flowpoint_writes WHERE checkpoint_id = ? LIMIT 1"
_INSERT_WRITE_SQL: Final = (
    "INSERT INTO flowpoint_writes (checkpoint_id, task_id, idx, trace_id, data)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (checkpoint_id, task_id, idx) DO NOTHING"
)
_UPSERT_WRITE_SQL: Final = (
    "INSERT INTO flowpoint_writes (checkpoint_id, task_id, idx, trace_id, data)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (checkpoint_id, task_id, idx)"
    " DO UPDATE SET data = excluded.data"
)
_LOAD_WRITES_SQL: Final = (
    "SELECT task_id, idx, trace_id, data FROM flowpoint_writes WHERE checkpoint_id = ?"
)
_DELETE_WRITES_SQL: Final = "DELETE FROM flowpoint_writes WHERE checkpoint_id = ?"
_DELETE_TRACE_WRITES_SQL: Final = "DELETE FROM flowpoint_writes WHERE trace_id = ?"
# Steps at or below the (keep+1)-th newest; NULL (so nothing) when the trace is shorter.
_PRUNE_KEEP_SQL: Final = (
    " AND step <= (SELECT step FROM flowpoint_checkpoints WHERE trace_id = :trace"
    " ORDER BY step DESC LIMIT 1 OFFSET :keep)"
)
_PRUNE_CUTOFF_SQL: Final = " AND created_at < :cutoff"

_Query: TypeAlias = tuple[str, Sequence[object] | Mapping[str, object]]
_Row: TypeAlias = Sequence[Any]


class _NewRow(NamedTuple):
    """A checkpoint as the INSERT binds it, built before the call reaches the thread."""

    checkpoint_id: bytes
    trace_id: str
    step: int
    parent_id: bytes | None
    graph_hash: int
    created_at: int
    current_node: str | None
    metadata: str
    size: int
    data: bytes


class _PendingSave(NamedTuple):
    row: _NewRow
    outcome: asyncio.Future[CheckpointStoreError | None]
    loop: asyncio.AbstractEventLoop


class SqliteBlobStore(RewritableBlobStore, BlockingBlobStore):
    """Checkpoints in one SQLite database file, in WAL mode.

    ``durability="full"`` (the default) makes each acknowledged save survive a power
    loss; ``durability="normal"`` survives a crash of the process only, and may lose
    the last commits on power loss, in exchange for fewer fsyncs. ``busy_timeout`` is
    how many seconds a call waits for another process's write lock before it fails
    with :class:`~flowpoint.errors.StorageError`.

    The file is opened on first use. Async calls run on a thread the store owns, one
    at a time and in order, so none blocks the event loop; a call whose caller was
    cancelled after it started still runs to its end (a save may commit). The
    blocking facade's calls run in the calling thread. One lock serialises every use
    of the connection.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        durability: Durability = "full",
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:"):
            raise ValueError(
                f"SqliteBlobStore needs the path of a database file, not {raw!r} "
                "(use InMemoryBlobStore, memory://, for a store that lives in memory)"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not math.isfinite(busy_timeout)
            or busy_timeout < 0
        ):
            raise ValueError(f"busy_timeout must be a number of seconds >= 0, not {busy_timeout!r}")
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        # Absolute now: the file is opened later, perhaps after a chdir.
        self._path = os.path.abspath(raw)
        self._busy_timeout = float(busy_timeout)
        self._durability: Durability = durability
        self._worker_threads: ThreadPoolExecutor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="flowpoint-sqlite"
        )
        self._insert_rows = functools.partial(_insert_rows, self._path)
        # Saves waiting for the store's thread (group commit):
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingSave] = []
        self._flush_scheduled = False
        self._closing = False  # close() was called: accept no new calls
        # Touched only while holding the lock:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False  # the connection was closed: never open it again

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, durability={self._durability!r})"

    @override
    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            # Calls submitted before this one finish first: the thread serves in order.
            await self._blocking(self._disconnect)
        finally:
            # The thread exits once its queue is empty; nothing here waits for it.
            self._worker_threads.shutdown(wait=False)

    # -- the operations ----------------------------------------------------------------

    @override
    async def _save(self, blob: CheckpointBlob) -> None:
        row = _new_row(blob)
        if self._closing:
            raise StorageError(f"{self!r} is closed")
        if in_caller_thread():
            [outcome] = self._call("save", self._insert_rows, [row])
        else:
            outcome = await self._enqueue_save(row)
        if outcome is not None:
            raise outcome

    async def _enqueue_save(self, row: _NewRow) -> CheckpointStoreError | None:
        """Queue a save for the store's thread and wait until it is committed.

        Saves queued while the thread is busy are committed together, in one
        transaction and one fsync (group commit); each save's own conflict still
        reaches only its caller.
        """
        loop = asyncio.get_running_loop()
        pending = _PendingSave(row, loop.create_future(), loop)
        with self._queue_lock:
            self._queue.append(pending)
            if not self._flush_scheduled:
                try:
                    self._worker_threads.submit(self._flush)
                except RuntimeError as exc:  # the thread pool was shut down (interpreter exit)
                    self._queue.remove(pending)
                    raise StorageError(f"{self!r} cannot save: {exc}") from exc
                self._flush_scheduled = True
        outcome: CheckpointStoreError | None = await pending.outcome
        return outcome

    def _flush(self) -> None:
        """On the store's thread: commit every queued save, then tell each caller."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._flush_scheduled = False
        outcomes: list[CheckpointStoreError | None]
        try:
            outcomes = self._call("save", self._insert_rows, [p.row for p in batch])
        except CheckpointStoreError as exc:  # nothing of the batch was committed
            outcomes = [exc] * len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: no one waits
                pending.loop.call_soon_threadsafe(_settle, pending.outcome, outcome)

    @override
    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        return await self._run("rewrite", _rewrite_row, (_new_row(blob), blob))

    @override
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        row = await self._run("load", _fetch_one, (_LOAD_SQL, (checkpoint_id.bytes,)))
        return None if row is None else _blob_from_row(row)

    @override
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        row = await self._run("load_latest", _fetch_one, (_LATEST_SQL, (trace_id,)))
        return None if row is None else _blob_from_row(row)

    @override
    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        query: _Query = (
            (_HISTORY_SQL, (trace_id, limit))
            if before_step is None
            else (_HISTORY_BEFORE_SQL, (trace_id, before_step, limit))
        )
        rows = await self._run("history", _fetch_all, query)
        return [_info_from_row(row) for row in rows]

    @override
    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        if first_step > _INT64_MAX:
            return []  # no step is that high; and SQLite cannot bind the number
        query: _Query = (_STEPS_SQL, (trace_id, first_step, min(last_step, _INT64_MAX)))
        rows = await self._run("load_steps", _fetch_all, query)
        return [_blob_from_row(row) for row in rows]

    @override
    async def _traces(self) -> list[TraceId]:
        rows = await self._run("traces", _fetch_all, (_TRACES_SQL, ()))
        return [trace_from_text(row[0]) for row in rows]

    @override
    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        bounds = id_range(prefix)
        if bounds is None:
            return []
        low, high = bounds
        query: _Query = (
            (_IDS_FROM_SQL, (low.bytes, limit))
            if high is None
            else (_IDS_BETWEEN_SQL, (low.bytes, high.bytes, limit))
        )
        rows = await self._run("ids_with_prefix", _fetch_all, query)
        # A damaged key (not 16 bytes) may sort inside the range: it names no id.
        return [found for row in rows if (found := _id_from_column(row[0])) is not None]

    @override
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        rows: list[tuple[object, ...]] = [
            (w.checkpoint_id.bytes, w.task_id, w.index, w.trace_id, bytes(w.data)) for w in writes
        ]
        return await self._run("save_writes", _insert_writes, (writes[0], rows, overwrite))

    @override
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        query: _Query = (_LOAD_WRITES_SQL, (checkpoint_id.bytes,))
        rows = await self._run("load_writes", _fetch_all, query)
        return [write_from_columns(checkpoint_id, *row) for row in rows]

    @override
    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        return await self._run("delete", _delete_by_ids, [checkpoint_id.bytes]) > 0

    @override
    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        ids = [checkpoint_id.bytes for checkpoint_id in checkpoint_ids]
        return await self._run("delete_many", _delete_by_ids, ids)

    @override
    async def _delete_trace(self, trace_id: TraceId) -> int:
        return await self._run("delete_trace", _delete_trace_rows, trace_id)

    @override
    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        sql = _PRUNE_SQL
        params: dict[str, object] = {"trace": trace_id}
        if rule.keep_latest is not None:
            sql += _PRUNE_KEEP_SQL
            params["keep"] = rule.keep_latest
        if rule.cutoff is not None:
            sql += _PRUNE_CUTOFF_SQL
            params["cutoff"] = (rule.cutoff - _EPOCH) // _MICROSECOND
        return await self._run("prune", _delete_selected, (sql, params))

    # -- the thread that owns the connection -------------------------------------------

    async def _run(
        self,
        action: str,
        fn: Callable[[sqlite3.Connection, _A], _T],
        arg: _A,
    ) -> _T:
        """Run ``fn(connection, arg)`` on the store's thread; one round trip per call."""
        if self._closing:
            raise StorageError(f"{self!r} is closed")
        try:
            return await self._blocking(self._call, action, fn, arg)
        except RuntimeError as exc:  # the thread pool was shut down (interpreter exit)
            raise StorageError(f"{self!r} cannot run {action}: {exc}") from exc

    def _call(
        self,
        action: str,
        fn: Callable[[sqlite3.Connection, _A], _T],
        arg: _A,
    ) -> _T:
        with self._lock, _driver_errors(self._path, action):
            if self._closed:
                raise StorageError(f"{self!r} is closed")
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            return fn(conn, arg)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
        # timeout= is SQLite's busy timeout, in force from the first statement on.
        # check_same_thread=False: the lock, not the thread, guards the connection.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            mode = _set_wal_mode(conn, self._busy_timeout)
            if mode != "wal":
                raise StorageError(
                    f"SQLite database {self._path}: WAL mode could not be set "
                    f"(journal_mode is {mode!r})"
                )
            conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self._durability]}")
            _set_up_schema(conn, self._path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                with _driver_errors(self._path, "close"):
                    conn.close()


# -- work done on the store's thread, given its connection -----------------------------


def _insert_rows(
    path: str, conn: sqlite3.Connection, rows: list[_NewRow]
) -> list[CheckpointStoreError | None]:
    """Insert checkpoints in one transaction; return each one's conflict, if any.

    Each row after the first gets a savepoint, so that one row's conflict undoes
    only that row. Any other failure undoes them all and is raised.
    """
    outcomes: list[CheckpointStoreError | None] = []
    with _write_transaction(conn):
        if len(rows) == 1:
            try:
                conn.execute(_INSERT_SQL, rows[0])
            except sqlite3.IntegrityError as exc:
                return [_conflict(path, exc, rows[0])]
            return [None]
        for row in rows:
            conn.execute("SAVEPOINT flowpoint_row")
            try:
                conn.execute(_INSERT_SQL, row)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO flowpoint_row")
                outcomes.append(_conflict(path, exc, row))
            else:
                outcomes.append(None)
            conn.execute("RELEASE flowpoint_row")
    return outcomes


def _new_row(blob: CheckpointBlob) -> _NewRow:
    if type(blob.data) is not bytes:
        raise TypeError(f"a blob's data must be bytes, not {type(blob.data).__name__}")
    return _NewRow(
        checkpoint_id=blob.checkpoint_id.bytes,
        trace_id=blob.trace_id,
        step=blob.step,
        parent_id=None if blob.parent_id is None else blob.parent_id.bytes,
        graph_hash=_signed64(blob.graph_hash),
        created_at=(blob.created_at - _EPOCH) // _MICROSECOND,
        current_node=blob.current_node,
        metadata=_encode_metadata(blob.metadata),
        size=len(blob.data),
        data=blob.data,
    )


def _rewrite_row(conn: sqlite3.Connection, arg: tuple[_NewRow, CheckpointBlob]) -> bool:
    """Replace the data of the row with ``row``'s header, in one write transaction."""
    row, blob = arg
    with _write_transaction(conn):
        updated = conn.execute(
            _REWRITE_SQL,
            (
                row.size,
                row.data,
                row.checkpoint_id,
                row.trace_id,
                row.step,
                row.parent_id,
                row.graph_hash,
                row.created_at,
                row.current_node,
                row.metadata,
            ),
        ).rowcount
        if updated:
            return True
        # No row with this exact header: absent, another header, or the same metadata
        # written in another key order (the column holds JSON text).
        stored = conn.execute(_HEADER_BY_ID_SQL, (row.checkpoint_id,)).fetchone()
        if stored is None:
            return False
        field = different_header(_info_from_row(stored), blob)
        if field is not None:
            raise rewrite_conflict(blob, field)
        conn.execute(_REWRITE_BY_ID_SQL, (row.size, row.data, row.checkpoint_id))
        return True


def _fetch_one(conn: sqlite3.Connection, query: _Query) -> _Row | None:
    row: _Row | None = conn.execute(*query).fetchone()
    return row


def _fetch_all(conn: sqlite3.Connection, query: _Query) -> list[_Row]:
    return conn.execute(*query).fetchall()


def _insert_writes(
    conn: sqlite3.Connection, arg: tuple[PendingWrite, list[tuple[object, ...]], bool]
) -> int:
    """Insert one call's writes in one write transaction; return how many were stored."""
    first, rows, overwrite = arg
    with _write_transaction(conn):
        stored = conn.execute(_WRITES_TRACE_SQL, (first.checkpoint_id.bytes,)).fetchone()
        if stored is not None:
            check_writes_trace(first, stored[0])
        sql = _UPSERT_WRITE_SQL if overwrite else _INSERT_WRITE_SQL
        return conn.executemany(sql, rows).rowcount


def _delete_by_ids(conn: sqlite3.Connection, ids: list[bytes]) -> int:
    """Delete checkpoints by id with their writes, in one write transaction (one commit)."""
    params = [(checkpoint_id,) for checkpoint_id in ids]
    with _write_transaction(conn):
        conn.executemany(_DELETE_WRITES_SQL, params)
        return conn.executemany(_DELETE_SQL, params).rowcount


def _delete_trace_rows(conn: sqlite3.Connection, trace_id: str) -> int:
    with _write_transaction(conn):
        conn.execute(_DELETE_TRACE_WRITES_SQL, (trace_id,))
        return conn.execute(_DELETE_TRACE_SQL, (trace_id,)).rowcount


def _delete_selected(conn: sqlite3.Connection, query: _Query) -> int:
    """Delete the checkpoints ``query`` selects, with their writes, in one transaction."""
    with _write_transaction(conn):
        params = conn.execute(*query).fetchall()
        conn.executemany(_DELETE_WRITES_SQL, params)
        return conn.executemany(_DELETE_SQL, params).rowcount


def _set_wal_mode(conn: sqlite3.Connection, busy_timeout: float) -> object:
    """Switch to WAL mode (a no-op when the file is in it already); return the mode.

    Switching needs an exclusive lock, and SQLite answers SQLITE_BUSY at once rather
    than wait in its busy handler when another connection is opening the file (two
    processes setting up a new file at the same moment), so wait here instead.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return mode.lower() if isinstance(mode, str) else mode


def _set_up_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, or apply the migrations the file lacks, in one transaction.

    Of several processes setting up or upgrading a file at once, the first does it
    and the others find it done.
    """
    # A read first: a file that is up to date (the usual case) is not write-locked.
    if _schema_version(conn, path) == _SCHEMA_VERSION:
        return
    with _write_transaction(conn):
        conn.execute(_CREATE_SCHEMA_TABLE)
        for version in range(_schema_version(conn, path) + 1, _SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO flowpoint_schema (version) VALUES (?)", (version,))


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The flowpoint schema version of the file: 0 for a file without flowpoint's tables."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flowpoint_schema'"
    ).fetchone()
    if exists is None:
        return 0
    (version,) = conn.execute("SELECT max(version) FROM flowpoint_schema").fetchone()
    if version is None:
        return 0  # made by a setup that crashed before it committed? Its tables are not there
    if type(version) is not int or version < 1:
        raise StorageError(
            f"SQLite database {path}: unrecognised flowpoint schema version {version!r}"
        )
    if version > _SCHEMA_VERSION:
        raise StorageError(
            f"SQLite database {path} has schema version {version}, written by a newer "
            f"flowpoint (this one reads up to version {_SCHEMA_VERSION}); upgrade flowpoint"
        )
    return version


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock at the start (waiting up to the busy timeout), so a
    # transaction never upgrades a read lock: an upgrade that meets another writer fails
    # at once with SQLITE_BUSY, without waiting, to avoid a deadlock.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_CONFLICTS: Final = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


@contextmanager
def _driver_errors(path: str, action: str) -> Iterator[None]:
    """The error boundary: every SQLite or OS error becomes a :class:`StorageError`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"SQLite database {path}: {action} failed: {exc}") from exc


def _conflict(path: str, exc: sqlite3.IntegrityError, row: _NewRow) -> CheckpointStoreError:
    """A unique violation of a saved row is its :class:`CheckpointConflict`."""
    error: CheckpointStoreError
    if exc.sqlite_errorname not in _CONFLICTS:
        error = StorageError(f"SQLite database {path}: save failed: {exc}")
    else:
        detail = None
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY":
            detail = f"checkpoint id {UUID(bytes=row.checkpoint_id)} exists"
        error = CheckpointConflict(row.trace_id, row.step, detail)
    error.__cause__ = exc
    return error


def _settle(
    outcome: asyncio.Future[CheckpointStoreError | None], error: CheckpointStoreError | None
) -> None:
    if not outcome.done():  # a cancelled caller no longer waits
        outcome.set_result(error)


# -- rows to objects, trusting nothing (SQLite lets any column hold any kind) ---------


def _signed64(unsigned: int) -> int:
    """SQLite integers are signed 64-bit: store an unsigned hash as its two's complement."""
    return unsigned - _UINT64 if unsigned > _INT64_MAX else unsigned


def _encode_metadata(metadata: Mapping[str, object]) -> str:
    if not metadata:
        return "{}"
    return msgspec.json.encode(validate_metadata(metadata)).decode()


def _blob_from_row(row: _Row) -> CheckpointBlob:
    return blob_with_data(_header_from_row(row), row[8])


def _info_from_row(row: _Row) -> CheckpointInfo:
    return info_with_size(_header_from_row(row), row[8])


def _header_from_row(row: _Row) -> HeaderFields:
    raw_id, trace_id, step, parent_id, graph_hash, created_at, current_node, metadata = row[:8]
    checkpoint_id = _id_from_column(raw_id)
    if checkpoint_id is None:
        raise CorruptCheckpoint(
            None, f"column checkpoint_id holds {value_kind(raw_id)}, not 16 bytes"
        )

    def corrupt(column: str, value: object, expected: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(
            checkpoint_id, f"column {column} holds {value_kind(value)}, {expected}"
        )

    trace = trace_from_text(trace_id, checkpoint_id)
    if type(step) is not int or step < 0:
        raise corrupt("step", step, "not an int >= 0")
    parent = None if parent_id is None else _id_from_column(parent_id)
    if parent_id is not None and parent is None:
        raise corrupt("parent_id", parent_id, "not 16 bytes or NULL")
    if type(graph_hash) is not int:
        raise corrupt("graph_hash", graph_hash, "not an int")
    if type(created_at) is not int:
        raise corrupt("created_at", created_at, "not an int of microseconds")
    try:
        created = _EPOCH + created_at * _MICROSECOND
    except OverflowError:
        raise corrupt("created_at", created_at, "out of the range of datetime") from None
    if current_node is not None and type(current_node) is not str:
        raise corrupt("current_node", current_node, "not TEXT or NULL")
    return (
        checkpoint_id,
        trace,
        step,
        parent,
        graph_hash % _UINT64,
        created,
        current_node,
        metadata_from_json(checkpoint_id, metadata),
    )


def _id_from_column(value: object) -> CheckpointId | None:
    if type(value) is bytes and len(value) == 16:
        return CheckpointId(UUID(bytes=value))
    return None
