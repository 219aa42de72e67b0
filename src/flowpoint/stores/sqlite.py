"""``sqlite:///path.db``: checkpoints in one SQLite database file (the default backend).

Where it differs from the :class:`~flowpoint.stores._base.BlobCheckpointStore`
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
- **The schema is versioned** (table ``flowpoint_schema``, :mod:`._sqlite_sql`).
  A new file is set up on first use, and a file of an older release upgraded in
  place (version 2 adds the pending writes' table, ``flowpoint_writes``), in one
  write transaction; a file written by a newer flowpoint is refused with
  :class:`~flowpoint.errors.StorageError` rather than misread.
- **Pending writes** and deletes take the writes along in the same transactions
  (one commit) as the checkpoints.
- **Fenced saves** (:class:`~flowpoint.stores._fenced.FencedBlobStore`): the
  run queue's tables live in the same file (made by the first queue to open
  it, not by a migration), and a fenced save checks the run's lease in its write
  transaction.
- **Read-only** (``read_only=True``): the file is opened ``mode=rw`` (never
  created; the last connection still removes the WAL files SQLite makes while it
  reads), or ``mode=ro`` if this process may not write it (SQLite may then leave
  its WAL files), with ``query_only`` set; nothing is set up or migrated, and a
  file without flowpoint's tables is refused on the first call. A file of schema
  version 1 reads as it is, without pending writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, Literal, NamedTuple, TypeAlias, TypeVar

import msgspec
from typing_extensions import override

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    DamagedRecord,
    Metadata,
    PendingWrite,
    validate_metadata,
)
from flowpoint.errors import (
    CorruptCheckpoint,
    LeaseLost,
    StorageError,
)
from flowpoint.ids import CheckpointId, TraceId, uuid_from_bytes
from flowpoint.stores import _sqlite_sql as sql
from flowpoint.stores._base import (
    BlockingBlobStore,
    DamageReportingBlobStore,
    DriverErrors,
    PruneRule,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    id_range,
    in_caller_thread,
    rewrite_conflict,
)
from flowpoint.stores._columns import (
    info_with_size,
    listed_entry,
    metadata_from_json,
    split_traces,
    trace_from_text,
    value_kind,
    write_from_columns,
)
from flowpoint.stores._fenced import Fence, FencedBlobStore
from flowpoint.stores._thread import WorkThread

__all__ = ["SqliteBlobStore", "insert_checkpoint", "write_transaction"]

Durability = Literal["full", "normal"]

_A = TypeVar("_A")
_T = TypeVar("_T")

_SYNCHRONOUS: Final[Mapping[str, str]] = {"full": "FULL", "normal": "NORMAL"}
# The WAL is checkpointed into the database every this many pages (SQLite's default is
# 1,000). A commit that appends to the WAL file, growing it, costs its fsync about
# twice one that overwrites frames already there; flowpoint's commits are a few pages,
# so a long WAL keeps growing for hundreds of commits. A short one starts reusing its
# frames soon, and each checkpoint copies back few pages, the same ones written again.
_WAL_CHECKPOINT_PAGES: Final = 200
# Rows a batch of saves inserts with one statement: ten parameters each, 640 in all,
# within what SQLite binds in one statement (999 before 3.32, 32,766 since).
_ROWS_PER_INSERT: Final = 64

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_INT64_MAX: Final = 2**63 - 1
_UINT64: Final = 2**64

_Query: TypeAlias = tuple[str, Sequence[object] | Mapping[str, object]]
_Row: TypeAlias = Sequence[Any]
_HeaderValues: TypeAlias = tuple[
    CheckpointId, TraceId, int, CheckpointId | None, int, datetime, str | None, Metadata
]


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
    outcome: asyncio.Future[Exception | None]
    loop: asyncio.AbstractEventLoop


class SqliteBlobStore(
    RewritableBlobStore, DamageReportingBlobStore, FencedBlobStore, BlockingBlobStore
):
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
        read_only: bool = False,
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
        self._read_only = check_read_only(read_only)
        # Absolute now: the file is opened later, perhaps after a chdir.
        self._path = os.path.abspath(raw)
        self._busy_timeout = float(busy_timeout)
        self._durability: Durability = durability
        self._work_thread: WorkThread = WorkThread("flowpoint-sqlite")
        # Saves waiting for the store's thread (group commit):
        self._queue_lock = threading.Lock()
        self._queue: list[_PendingSave] = []
        self._flush_scheduled = False
        # Touched only while holding the lock:
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._disconnected = False  # the connection was closed: never open it again
        self._schema = sql.SCHEMA_VERSION  # of the file; read-only stores read older ones

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._path!r}, durability={self._durability!r})"

    @override
    def _driver_errors(self) -> DriverErrors:
        return _DRIVER_ERRORS

    @override
    async def _close(self) -> None:
        try:
            # Calls submitted before this one finish first: the thread serves in order.
            await self._blocking(self._disconnect)
        finally:
            # The thread exits once its queue is empty; nothing here waits for it.
            self._work_thread.close()

    # -- the operations ----------------------------------------------------------------

    @override
    async def _save(self, blob: CheckpointBlob) -> None:
        row = _new_row(blob)
        if in_caller_thread():
            [outcome] = self._call(_insert_rows, [row])
        else:
            outcome = await self._enqueue_save(row)
        if outcome is not None:
            raise outcome

    async def _enqueue_save(self, row: _NewRow) -> Exception | None:
        """Queue a save for the store's thread and wait until it is committed.

        Saves queued while the thread is busy are committed together, in one
        transaction and one fsync (group commit); each save's own conflict still
        reaches only its caller. Returns the error the save met, to raise in the
        caller's call.
        """
        loop = asyncio.get_running_loop()
        pending = _PendingSave(row, loop.create_future(), loop)
        with self._queue_lock:
            self._queue.append(pending)
            if not self._flush_scheduled:
                try:
                    self._work_thread.post(self._flush)
                except RuntimeError as exc:  # the store's thread was closed
                    self._queue.remove(pending)
                    raise StorageError(f"{self!r} cannot save: {exc}") from exc
                self._flush_scheduled = True
        outcome: Exception | None = await pending.outcome
        return outcome

    def _flush(self) -> None:
        """On the store's thread: commit every queued save, then tell each caller."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._flush_scheduled = False
        outcomes: list[Exception | None]
        try:
            outcomes = self._call(_insert_rows, [p.row for p in batch])
        except Exception as exc:  # nothing of the batch was committed: each caller is told
            outcomes = [exc] * len(batch)
        # One wake-up of each loop the callers wait on for the whole batch, not one per save.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.outcome, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the callers' loop is closed: no one waits
                loop.call_soon_threadsafe(_settle, settled)

    @override
    async def _save_fenced(self, blob: CheckpointBlob, fence: Fence) -> None:
        await self._run("save", _insert_fenced, (_new_row(blob), fence))

    @override
    async def _save_writes_fenced(
        self, writes: list[PendingWrite], fence: Fence, *, overwrite: bool
    ) -> int:
        rows = _write_rows(writes)
        return await self._run("save_writes", _insert_writes, (writes[0], rows, overwrite, fence))

    async def _transact(
        self, action: str, fn: Callable[[sqlite3.Connection, _A], _T], arg: _A
    ) -> _T:
        """Run ``fn(connection, arg)`` on the store's thread, driver errors mapped.

        This is how the run queue (:mod:`flowpoint.queue`) works on the tables it
        shares with the checkpoints; ``fn`` opens its own write transaction.
        """
        with self._calling(action, writes=True):
            return await self._run(action, fn, arg)

    @override
    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        return await self._run("rewrite", _rewrite_row, (_new_row(blob), blob))

    @override
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        row = await self._run("load", _fetch_one, (sql.LOAD, (checkpoint_id.bytes,)))
        return None if row is None else _blob_from_row(row)

    @override
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        row = await self._run("load_latest", _fetch_one, (sql.LATEST, (trace_id,)))
        return None if row is None else _blob_from_row(row)

    @override
    async def _writes_if_latest(self, blob: CheckpointBlob) -> list[PendingWrite] | None:
        rows = await self._run("writes_if_latest", self._fetch_latest_with_writes, blob.trace_id)
        # Columns of another kind (damage) are no match: load_latest reports them.
        if not rows or rows[0][0] != blob.checkpoint_id.bytes or rows[0][1] != blob.data:
            return None
        checkpoint_id = blob.checkpoint_id
        # The LEFT JOIN's row without a write has NULL in task_id, which no write can hold.
        return [
            write_from_columns(checkpoint_id, *row[2:])
            for row in rows
            if len(row) > 2 and row[2] is not None
        ]

    def _fetch_latest_with_writes(self, conn: sqlite3.Connection, trace_id: TraceId) -> list[_Row]:
        if self._schema < 2:  # as in _fetch_writes: a file without writes
            return conn.execute(sql.LATEST_DATA, (trace_id,)).fetchall()
        return conn.execute(sql.LATEST_WITH_WRITES, (trace_id,)).fetchall()

    @override
    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        query: _Query = (
            (sql.HISTORY, (trace_id, limit))
            if before_step is None
            else (sql.HISTORY_BEFORE, (trace_id, before_step, limit))
        )
        rows = await self._run("history", _fetch_all, query)
        return [listed_entry(partial(_info_from_row, row), trace_id, row[2]) for row in rows]

    @override
    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        if first_step > _INT64_MAX:
            return []  # no step is that high; and SQLite cannot bind the number
        query: _Query = (sql.STEPS, (trace_id, first_step, min(last_step, _INT64_MAX)))
        rows = await self._run("load_steps", _fetch_all, query)
        return [_blob_from_row(row) for row in rows]

    @override
    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        rows = await self._run("traces", _fetch_all, (sql.TRACES, ()))
        traces, damaged = split_traces([row[0] for row in rows])
        entries: list[TraceId | DamagedRecord] = [*traces]
        for value, reason in damaged:
            held = await self._run("traces", _fetch_all, (sql.TRACE_ROWS, (value,)))
            entries.extend(
                DamagedRecord(
                    _id_from_column(raw_id), None, step if type(step) is int else None, reason
                )
                for raw_id, step in held
            )
        return entries

    @override
    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        bounds = id_range(prefix)
        if bounds is None:
            return []
        low, high = bounds
        query: _Query = (
            (sql.IDS_FROM, (low.bytes, limit))
            if high is None
            else (sql.IDS_BETWEEN, (low.bytes, high.bytes, limit))
        )
        rows = await self._run("ids_with_prefix", _fetch_all, query)
        # A damaged key (not 16 bytes) may sort inside the range: it names no id.
        return [found for row in rows if (found := _id_from_column(row[0])) is not None]

    @override
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        rows = _write_rows(writes)
        return await self._run("save_writes", _insert_writes, (writes[0], rows, overwrite, None))

    @override
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        query: _Query = (sql.LOAD_WRITES, (checkpoint_id.bytes,))
        rows = await self._run("load_writes", self._fetch_writes, query)
        return [write_from_columns(checkpoint_id, *row) for row in rows]

    def _fetch_writes(self, conn: sqlite3.Connection, query: _Query) -> list[_Row]:
        # A read-only store may read a file of schema version 1, which has no writes.
        return conn.execute(*query).fetchall() if self._schema >= 2 else []

    @override
    async def _load_writes_many(
        self, checkpoint_ids: list[CheckpointId]
    ) -> dict[CheckpointId, list[PendingWrite]]:
        ids = {checkpoint_id.bytes: checkpoint_id for checkpoint_id in checkpoint_ids}
        found: dict[CheckpointId, list[PendingWrite]] = {}
        for key, *columns in await self._run(
            "load_writes_many", self._fetch_writes_many, list(ids)
        ):
            checkpoint_id = ids[key]
            found.setdefault(checkpoint_id, []).append(write_from_columns(checkpoint_id, *columns))
        return found

    def _fetch_writes_many(self, conn: sqlite3.Connection, ids: Sequence[bytes]) -> list[_Row]:
        if self._schema < 2:
            return []  # as in _fetch_writes
        rows: list[_Row] = []
        # In chunks within the oldest SQLite's limit of 999 parameters per statement.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = sql.LOAD_WRITES_MANY + "(" + ",".join("?" * len(chunk)) + ")"
            rows.extend(conn.execute(query, chunk).fetchall())
        return rows

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
        select = sql.PRUNE
        params: dict[str, object] = {"trace": trace_id}
        if rule.keep_latest is not None:
            select += sql.PRUNE_KEEP
            params["keep"] = rule.keep_latest
        if rule.cutoff is not None:
            select += sql.PRUNE_CUTOFF
            params["cutoff"] = (rule.cutoff - _EPOCH) // _MICROSECOND
        return await self._run("prune", _delete_selected, (select, params))

    # -- the thread that owns the connection -------------------------------------------

    async def _run(
        self,
        action: str,
        fn: Callable[[sqlite3.Connection, _A], _T],
        arg: _A,
    ) -> _T:
        """Run ``fn(connection, arg)`` on the store's thread; one round trip per call."""
        try:
            return await self._blocking(self._call, fn, arg)
        except RuntimeError as exc:  # the store's thread was closed
            raise StorageError(f"{self!r} cannot run {action}: {exc}") from exc

    def _call(self, fn: Callable[[sqlite3.Connection, _A], _T], arg: _A) -> _T:
        with self._lock:
            if self._disconnected:
                raise StorageError(f"{self!r} is closed")
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            return fn(conn, arg)

    def _connect(self) -> sqlite3.Connection:
        if self._read_only:
            return self._connect_read_only()
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
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            _set_up_schema(conn, self._path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that creates nothing, to a file that must be a flowpoint store.

        ``mode=rw`` never creates the file, and the last connection to close still
        removes the WAL files SQLite makes while it reads (``mode=ro`` would leave
        them behind); a file this process may only read is opened ``mode=ro``.
        ``query_only`` refuses any write, and nothing is set up or migrated.
        """
        if not os.path.isfile(self._path):
            raise StorageError(f"{self!r} is not a flowpoint store: no such file")
        mode = "rw" if os.access(self._path, os.W_OK) else "ro"
        conn = sqlite3.connect(
            f"file:{urllib.parse.quote(self._path)}?mode={mode}",
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA query_only=ON")
            try:
                version = _schema_version(conn, self._path)
            except sqlite3.DatabaseError as exc:  # not a database at all
                raise StorageError(f"{self!r} is not a flowpoint store: {exc}") from exc
            if version == 0:
                raise StorageError(f"{self!r} is not a flowpoint store: it has no flowpoint tables")
            self._schema = version
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self) -> None:
        with self._lock:
            self._disconnected = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()


# -- work done on the store's thread, given its connection -----------------------------


def _insert_rows(conn: sqlite3.Connection, rows: list[_NewRow]) -> list[Exception | None]:
    """Insert checkpoints in one transaction; return each one's constraint violation, if any.

    The rows go in by one INSERT for each :data:`_ROWS_PER_INSERT`, so that the
    store's thread gives up the GIL (around each statement) a few times a batch,
    not once a row: each time, it may wait for the event loop's thread to give it
    back. A row that violates a constraint fails its whole INSERT, which SQLite
    backs out while the transaction goes on (its ABORT resolution): those rows
    are then inserted one by one, each undoing only itself. Any other failure
    undoes them all and is raised.
    """
    outcomes: list[Exception | None] = []
    with write_transaction(conn):
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            if len(chunk) > 1:
                try:
                    conn.execute(sql.insert_many(len(chunk)), [v for row in chunk for v in row])
                except sqlite3.IntegrityError:
                    pass  # backed out whole: find the rows that conflict, below
                else:
                    outcomes.extend([None] * len(chunk))
                    continue
            for row in chunk:
                try:
                    conn.execute(sql.INSERT, row)
                except sqlite3.IntegrityError as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
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
    with write_transaction(conn):
        updated = conn.execute(
            sql.REWRITE,
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
        stored = conn.execute(sql.HEADER_BY_ID, (row.checkpoint_id,)).fetchone()
        if stored is None:
            return False
        field = different_header(_info_from_row(stored), blob)
        if field is not None:
            raise rewrite_conflict(blob, field)
        conn.execute(sql.REWRITE_BY_ID, (row.size, row.data, row.checkpoint_id))
        return True


def insert_checkpoint(conn: sqlite3.Connection, blob: CheckpointBlob) -> None:
    """Insert ``blob`` within a write transaction the caller holds (the run queue's submit)."""
    conn.execute(sql.INSERT, _new_row(blob))


def _fetch_one(conn: sqlite3.Connection, query: _Query) -> _Row | None:
    row: _Row | None = conn.execute(*query).fetchone()
    return row


def _fetch_all(conn: sqlite3.Connection, query: _Query) -> list[_Row]:
    return conn.execute(*query).fetchall()


def _write_rows(writes: list[PendingWrite]) -> list[tuple[object, ...]]:
    return [(w.checkpoint_id.bytes, w.task_id, w.index, w.trace_id, bytes(w.data)) for w in writes]


def _insert_fenced(conn: sqlite3.Connection, arg: tuple[_NewRow, Fence]) -> None:
    """Insert a checkpoint in a write transaction that first checks the run's lease."""
    row, fence = arg
    with write_transaction(conn):
        _check_lease(conn, fence)
        conn.execute(sql.INSERT, row)


def _check_lease(conn: sqlite3.Connection, fence: Fence) -> None:
    """Raise :class:`~flowpoint.errors.LeaseLost` unless ``fence`` holds (in a transaction).

    The write lock taken by ``BEGIN IMMEDIATE`` keeps it holding until the commit:
    a claim or a requeue of the run is a write transaction too.
    """
    if conn.execute(sql.LEASE_HELD, (fence.trace_id, fence.epoch)).fetchone() is None:
        raise LeaseLost(fence.trace_id, fence.epoch)


def _insert_writes(
    conn: sqlite3.Connection,
    arg: tuple[PendingWrite, list[tuple[object, ...]], bool, Fence | None],
) -> int:
    """Insert one call's writes in one write transaction; return how many were stored.

    With a fence, the run's lease is checked first, in the same transaction.
    """
    first, rows, overwrite, fence = arg
    with write_transaction(conn):
        if fence is not None:
            _check_lease(conn, fence)
        stored = conn.execute(sql.WRITES_TRACE, (first.checkpoint_id.bytes,)).fetchone()
        if stored is not None:
            check_writes_trace(first, stored[0])
        insert = sql.UPSERT_WRITE if overwrite else sql.INSERT_WRITE
        return conn.executemany(insert, rows).rowcount


def _delete_by_ids(conn: sqlite3.Connection, ids: list[bytes]) -> int:
    """Delete checkpoints by id with their writes, in one write transaction (one commit)."""
    params = [(checkpoint_id,) for checkpoint_id in ids]
    with write_transaction(conn):
        conn.executemany(sql.DELETE_WRITES, params)
        return conn.executemany(sql.DELETE, params).rowcount


def _delete_trace_rows(conn: sqlite3.Connection, trace_id: str) -> int:
    with write_transaction(conn):
        conn.execute(sql.DELETE_TRACE_WRITES, (trace_id,))
        return conn.execute(sql.DELETE_TRACE, (trace_id,)).rowcount


def _delete_selected(conn: sqlite3.Connection, query: _Query) -> int:
    """Delete the checkpoints ``query`` selects, with their writes, in one transaction."""
    with write_transaction(conn):
        params = conn.execute(*query).fetchall()
        conn.executemany(sql.DELETE_WRITES, params)
        return conn.executemany(sql.DELETE, params).rowcount


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
    if _schema_version(conn, path) == sql.SCHEMA_VERSION:
        return
    with write_transaction(conn):
        conn.execute(sql.CREATE_SCHEMA_TABLE)
        for version in range(_schema_version(conn, path) + 1, sql.SCHEMA_VERSION + 1):
            for statement in sql.MIGRATIONS[version - 1]:
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
    if version > sql.SCHEMA_VERSION:
        raise StorageError(
            f"SQLite database {path} has schema version {version}, written by a newer "
            f"flowpoint (this one reads up to version {sql.SCHEMA_VERSION}); upgrade flowpoint"
        )
    return version


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed if the block ends, rolled back if it raises."""
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


# The one-winner rule's refusals: UNIQUE (trace_id, step), and the checkpoint id.
_CONFLICTS: Final[Mapping[str, Literal["step", "id"]]] = {
    "SQLITE_CONSTRAINT_UNIQUE": "step",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "id",
}
_DRIVER_ERRORS: Final = DriverErrors(
    failures=(sqlite3.Error, OSError),
    conflict=lambda exc: _CONFLICTS.get(getattr(exc, "sqlite_errorname", "")),
    describe=str,
)


_Settled: TypeAlias = tuple[asyncio.Future[Exception | None], Exception | None]


def _settle(settled: list[_Settled]) -> None:
    """On the callers' loop: tell each queued save of a batch how it ended."""
    for outcome, error in settled:
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
    values = _header_values(row)
    data = row[8]
    if type(data) is not bytes:
        raise _corrupt(values[0], "data", data, "not bytes")
    # Straight from the columns, with no header object in between: every read makes one.
    return CheckpointBlob(*values, data=data)


def _info_from_row(row: _Row) -> CheckpointInfo:
    values = _header_values(row)
    size = row[8]
    if type(size) is int and size >= 0:
        return CheckpointInfo(*values, size=size)
    return info_with_size(CheckpointHeader(*values), size)  # damaged: raises, naming it


def _header_values(row: _Row) -> _HeaderValues:
    """A row's header columns, checked, in the order of the header's fields."""
    raw_id, trace_id, step, parent_id, graph_hash, created_at, current_node, metadata = row[:8]
    checkpoint_id = _id_from_column(raw_id)
    if checkpoint_id is None:
        raise CorruptCheckpoint(
            None, f"column checkpoint_id holds {value_kind(raw_id)}, not 16 bytes"
        )
    trace = trace_from_text(trace_id, checkpoint_id)
    if type(step) is not int or step < 0:
        raise _corrupt(checkpoint_id, "step", step, "not an int >= 0")
    parent = None if parent_id is None else _id_from_column(parent_id)
    if parent_id is not None and parent is None:
        raise _corrupt(checkpoint_id, "parent_id", parent_id, "not 16 bytes or NULL")
    if type(graph_hash) is not int:
        raise _corrupt(checkpoint_id, "graph_hash", graph_hash, "not an int")
    if type(created_at) is not int:
        raise _corrupt(checkpoint_id, "created_at", created_at, "not an int of microseconds")
    try:
        created = _EPOCH + created_at * _MICROSECOND
    except OverflowError:
        raise _corrupt(
            checkpoint_id, "created_at", created_at, "out of the range of datetime"
        ) from None
    if current_node is not None and type(current_node) is not str:
        raise _corrupt(checkpoint_id, "current_node", current_node, "not TEXT or NULL")
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


def _corrupt(
    checkpoint_id: CheckpointId, column: str, value: object, expected: str
) -> CorruptCheckpoint:
    reason = f"column {column} holds {value_kind(value)}, {expected}"
    return CorruptCheckpoint(checkpoint_id, reason)


def _step_or_none(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _id_from_column(value: object) -> CheckpointId | None:
    if type(value) is bytes and len(value) == 16:
        return CheckpointId(uuid_from_bytes(value))
    return None
