"""``sqlite:///runs.db``: the run queue in the SQLite file of the checkpoints.

Where it differs from :class:`~flowpoint.queue._base.RunQueue`'s contract:
several processes on one machine share the file; every change is one
``BEGIN IMMEDIATE`` transaction (a claim included: exactly one process claims a
run), and the database's clock is the machine's. Workers find new work by
polling (every ``poll_interval`` seconds, jittered; 0.2 by default).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from typing_extensions import override

from flowpoint.blob import CheckpointBlob
from flowpoint.errors import TraceNotFound
from flowpoint.ids import TraceId
from flowpoint.queue._base import (
    ACTIVE,
    CLAIM_COLUMNS,
    RESUMABLE,
    RUN_COLUMNS,
    Claim,
    QueuedRun,
    RunQueue,
    RunStatus,
    Settlement,
    claim_from_row,
    existing_run,
    not_resumable,
    outside_the_queue,
    run_from_row,
    signed64,
)
from flowpoint.stores._registry import open_store
from flowpoint.stores._sqlite_sql import NOW, QUEUE_TABLES
from flowpoint.stores.sqlite import SqliteBlobStore, insert_checkpoint, write_transaction

__all__ = ["SqliteRunQueue"]

_A = TypeVar("_A")
_T = TypeVar("_T")

_RUN: Final = RUN_COLUMNS.format(
    lease_expires_at="lease_expires_at", submitted_at="submitted_at", updated_at="updated_at"
)
_SELECT_RUN: Final = f"SELECT {_RUN} FROM flowpoint_runs WHERE trace_id = ?"
_INSERT_RUN: Final = (
    "INSERT INTO flowpoint_runs (trace_id, graph_name, graph_hash, priority, status, epoch,"
    " attempts, max_attempts, dedup_key, submitted_at, updated_at)"
    f" VALUES (?, ?, ?, ?, 'queued', 0, 0, ?, ?, {NOW}, {NOW})"
)
_HAS_CHECKPOINTS: Final = "SELECT 1 FROM flowpoint_checkpoints WHERE trace_id = ? LIMIT 1"
_LATEST_STEP: Final = "SELECT max(step) FROM flowpoint_checkpoints WHERE trace_id = ?"
_RESUME: Final = (
    "UPDATE flowpoint_runs SET status = 'queued', resume_update = ?, update_step = ?,"
    f" attempts = 0, error = NULL, updated_at = {NOW} WHERE trace_id = ?"
)
_CANCEL: Final = (
    "UPDATE flowpoint_runs SET status = 'cancelled', owner = NULL, lease_expires_at = NULL,"
    f" updated_at = {NOW} WHERE trace_id = ? AND status IN"
    f" ({', '.join(repr(status.value) for status in ACTIVE)})"
)
# A lease that ran out: the run is queued again with one more attempt, or dead.
_REQUEUE_EXPIRED: Final = (
    "UPDATE flowpoint_runs SET"
    " status = CASE WHEN attempts + 1 >= max_attempts THEN 'dead' ELSE 'queued' END,"
    " attempts = attempts + 1,"
    " error = 'the lease of worker ' || owner || ' expired (attempt ' || (attempts + 1) || ')',"
    f" owner = NULL, lease_expires_at = NULL, updated_at = {NOW}"
    f" WHERE status = 'running' AND lease_expires_at <= {NOW}"
)
_CLAIM: Final = (
    "UPDATE flowpoint_runs SET status = 'running', epoch = epoch + 1, owner = ?,"
    f" lease_expires_at = {NOW} + ?, updated_at = {NOW}"
    f" WHERE trace_id = ? RETURNING {CLAIM_COLUMNS}"
)
# A lease that expired but was not requeued is renewed too: no one took the run over,
# and the fenced saves refused while it was expired.
_RENEW: Final = (
    f"UPDATE flowpoint_runs SET lease_expires_at = {NOW} + ?"
    " WHERE owner = ? AND status = 'running' RETURNING trace_id, epoch"
)
_REGISTER: Final = (
    "INSERT INTO flowpoint_workers (worker_id, host, pid, started_at, expires_at)"
    f" VALUES (?, ?, ?, {NOW}, {NOW} + ?)"
    " ON CONFLICT (worker_id) DO UPDATE SET expires_at = excluded.expires_at"
)
_REGISTER_GRAPH: Final = (
    "INSERT INTO flowpoint_worker_graphs (worker_id, graph_hash) VALUES (?, ?)"
    " ON CONFLICT DO NOTHING"
)
# Workers whose registration ran out (the heartbeat), or the one leaving (unregister).
_EXPIRED: Final = f"expires_at <= {NOW}"
_LEAVING: Final = "worker_id = ?"
_FORGET_GRAPHS: Final = (
    "DELETE FROM flowpoint_worker_graphs WHERE worker_id IN"
    " (SELECT worker_id FROM flowpoint_workers WHERE {})"
)
_FORGET_WORKERS: Final = "DELETE FROM flowpoint_workers WHERE {}"
_SETTLE: Final = (
    "UPDATE flowpoint_runs SET status = ?, attempts = attempts + ?, error = ?, owner = NULL,"
    " lease_expires_at = NULL,"
    " resume_update = CASE WHEN ? THEN NULL ELSE resume_update END,"
    f" updated_at = {NOW} WHERE trace_id = ? AND epoch = ? AND status = 'running'"
)
# Runs waiting for a worker (queued, or running on an expired lease) whose graph no
# live worker registered.
_STRANDED: Final = (
    f"(status = 'queued' OR (status = 'running' AND lease_expires_at <= {NOW}))"
    " AND NOT EXISTS (SELECT 1 FROM flowpoint_worker_graphs g"
    " JOIN flowpoint_workers w ON w.worker_id = g.worker_id"
    f" WHERE g.graph_hash = flowpoint_runs.graph_hash AND w.expires_at > {NOW})"
)
_ORDER: Final = " ORDER BY priority DESC, seq LIMIT ?"
_DEFAULT_POLL: Final = 0.2


class SqliteRunQueue(RunQueue):
    """The run queue in the SQLite file of ``store``."""

    store: SqliteBlobStore

    def __init__(self, store: SqliteBlobStore, *, poll_interval: float = _DEFAULT_POLL) -> None:
        if not isinstance(store, SqliteBlobStore):
            raise TypeError(f"SqliteRunQueue takes a SqliteBlobStore, not {type(store).__name__}")
        if store.read_only:
            raise ValueError("a run queue writes: its store cannot be read-only")
        self.store = store
        self.poll_interval = poll_interval
        self._tables_made = False

    @classmethod
    def open_url(cls, url: str, **options: Any) -> SqliteRunQueue:
        """The queue of the store :func:`flowpoint.open_store` opens for ``url``."""
        store = open_store(url, **options)
        assert isinstance(store, SqliteBlobStore)
        return cls(store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    async def _do(self, action: str, fn: Callable[[sqlite3.Connection, _A], _T], arg: _A) -> _T:
        if not self._tables_made:
            # The queue's tables are made by the first queue to open the file (not by
            # the store's migrations): a store without a queue keeps none of them.
            await self.store._transact("make the run queue's tables", _make_tables, None)
            self._tables_made = True
        found: _T = await self.store._transact(action, fn, arg)
        return found

    async def _read(
        self, action: str, fn: Callable[[sqlite3.Connection, None], _T], empty: _T
    ) -> _T:
        """``fn``'s answer; ``empty`` from a file no queue has opened, which stays so.

        Reading the queue (``status``, ``runs``) makes no tables: a listing never
        changes the file.
        """
        if not self._tables_made:
            made = await self.store._transact("look for the run queue", _has_tables, None)
            if not made:
                return empty
            self._tables_made = True
        found: _T = await self.store._transact(action, fn, None)
        return found

    @override
    async def _submit(
        self,
        blob: CheckpointBlob,
        graph_name: str,
        *,
        priority: int,
        dedup_key: str | None,
        max_attempts: int,
    ) -> QueuedRun:
        def submit(conn: sqlite3.Connection, _: None) -> QueuedRun:
            with write_transaction(conn):
                found = conn.execute(_SELECT_RUN, (blob.trace_id,)).fetchone()
                if found is not None:
                    return existing_run(run_from_row(found), blob.graph_hash, dedup_key)
                if conn.execute(_HAS_CHECKPOINTS, (blob.trace_id,)).fetchone() is not None:
                    raise outside_the_queue(blob.trace_id)
                insert_checkpoint(conn, blob)
                conn.execute(
                    _INSERT_RUN,
                    (
                        blob.trace_id,
                        graph_name,
                        signed64(blob.graph_hash),
                        priority,
                        max_attempts,
                        dedup_key,
                    ),
                )
                return run_from_row(conn.execute(_SELECT_RUN, (blob.trace_id,)).fetchone())

        return await self._do("submit", submit, None)

    @override
    async def _get(self, trace_id: TraceId) -> QueuedRun | None:
        def get(conn: sqlite3.Connection, _: None) -> QueuedRun | None:
            found = conn.execute(_SELECT_RUN, (trace_id,)).fetchone()
            return None if found is None else run_from_row(found)

        return await self._read("get", get, None)

    @override
    async def _resume(self, trace_id: TraceId, update: bytes | None) -> None:
        def resume(conn: sqlite3.Connection, _: None) -> None:
            with write_transaction(conn):
                found = conn.execute(_SELECT_RUN, (trace_id,)).fetchone()
                if found is None:
                    raise TraceNotFound(f"the queue holds no run {trace_id!r}")
                run = run_from_row(found)
                if run.status not in RESUMABLE:
                    raise not_resumable(run)
                (step,) = conn.execute(_LATEST_STEP, (trace_id,)).fetchone()
                conn.execute(_RESUME, (update, step, trace_id))

        await self._do("resume", resume, None)

    @override
    async def _cancel(self, trace_id: TraceId) -> bool:
        def cancel(conn: sqlite3.Connection, _: None) -> bool:
            with write_transaction(conn):
                return conn.execute(_CANCEL, (trace_id,)).rowcount > 0

        return await self._do("cancel", cancel, None)

    @override
    async def _list(
        self, status: RunStatus | None, *, stranded: bool, limit: int
    ) -> list[QueuedRun]:
        where, params = _where(status, stranded=stranded)
        query = f"SELECT {_RUN} FROM flowpoint_runs{where}{_ORDER}"

        def listing(conn: sqlite3.Connection, _: None) -> list[QueuedRun]:
            return [run_from_row(row) for row in conn.execute(query, (*params, limit))]

        return await self._read("runs", listing, [])

    @override
    async def _claim(
        self, worker: str, graphs: Sequence[int], limit: int, lease: float
    ) -> list[Claim]:
        hashes = [signed64(graph) for graph in graphs]
        marks = ", ".join("?" * len(hashes))
        pick = (
            f"SELECT trace_id FROM flowpoint_runs WHERE status = 'queued'"
            f" AND graph_hash IN ({marks}){_ORDER}"
        )

        def claim(conn: sqlite3.Connection, _: None) -> list[Claim]:
            claims: list[Claim] = []
            with write_transaction(conn):
                conn.execute(_REQUEUE_EXPIRED)
                picked = conn.execute(pick, (*hashes, limit)).fetchall()
                for (trace_id,) in picked:
                    row = conn.execute(_CLAIM, (worker, lease, trace_id)).fetchone()
                    (step,) = conn.execute(_LATEST_STEP, (trace_id,)).fetchone()
                    claims.append(claim_from_row(row, step))
            return claims

        return await self._do("claim", claim, None)

    @override
    async def _heartbeat(
        self,
        worker: str,
        host: str,
        pid: int,
        graphs: Sequence[int],
        lease: float,
        held: Sequence[tuple[TraceId, int]],
    ) -> set[tuple[TraceId, int]]:
        def beat(conn: sqlite3.Connection, _: None) -> set[tuple[TraceId, int]]:
            with write_transaction(conn):
                conn.execute(_FORGET_GRAPHS.format(_EXPIRED))
                conn.execute(_FORGET_WORKERS.format(_EXPIRED))
                conn.execute(_REGISTER, (worker, host, pid, lease))
                conn.executemany(_REGISTER_GRAPH, [(worker, signed64(g)) for g in graphs])
                renewed = {(TraceId(t), e) for t, e in conn.execute(_RENEW, (lease, worker))}
                conn.execute(_REQUEUE_EXPIRED)
            return renewed & set(held)

        return await self._do("heartbeat", beat, None)

    @override
    async def _settle(self, claim: Claim, settlement: Settlement) -> bool:
        applied = settlement.status is not RunStatus.QUEUED  # a requeued run may still need it
        params = (
            settlement.status.value,
            settlement.attempts,
            settlement.error,
            applied,
            claim.trace_id,
            claim.epoch,
        )

        def settle(conn: sqlite3.Connection, _: None) -> bool:
            with write_transaction(conn):
                return conn.execute(_SETTLE, params).rowcount > 0

        return await self._do("settle", settle, None)

    @override
    async def _unregister(self, worker: str) -> None:
        def unregister(conn: sqlite3.Connection, _: None) -> None:
            with write_transaction(conn):
                conn.execute(_FORGET_GRAPHS.format(_LEAVING), (worker,))
                conn.execute(_FORGET_WORKERS.format(_LEAVING), (worker,))

        await self._do("unregister", unregister, None)


def _has_tables(conn: sqlite3.Connection, _: None) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flowpoint_runs'"
    ).fetchone()
    return found is not None


def _make_tables(conn: sqlite3.Connection, _: None) -> None:
    with write_transaction(conn):
        for statement in QUEUE_TABLES:
            conn.execute(statement)


def _where(status: RunStatus | None, *, stranded: bool) -> tuple[str, tuple[object, ...]]:
    if stranded:
        return f" WHERE {_STRANDED}", ()
    if status is None:
        return "", ()
    return " WHERE status = ?", (status.value,)
