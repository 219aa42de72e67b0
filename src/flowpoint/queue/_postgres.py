"""``postgresql://...``: the run queue in the PostgreSQL database of the checkpoints.

Where it differs from :class:`~flowpoint.queue._base.RunQueue`'s contract:
workers on many machines share the database. A claim picks runs with
``FOR UPDATE SKIP LOCKED`` (claimers never wait on each other), requeueing
expired leases skips rows locked the same way, and every time is the server's
``clock_timestamp()``. A run that becomes claimable (submitted, resumed,
requeued) is announced with ``NOTIFY`` on the channel
``<schema>.<prefix>runs``; a worker waits on ``LISTEN`` (a connection of its
own, when the store was opened from a URL) and polls as well, every
``poll_interval`` seconds, jittered (1 by default), in case a notification is
missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

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
from flowpoint.stores.postgres import PostgresBlobStore, insert_params

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["PostgresRunQueue"]

_log = logging.getLogger("flowpoint.worker")

_NOW: Final = "clock_timestamp()"
_SECONDS: Final = "extract(epoch FROM {0})::float8"
_RUN: Final = RUN_COLUMNS.format(
    lease_expires_at=_SECONDS.format("lease_expires_at"),
    submitted_at=_SECONDS.format("submitted_at"),
    updated_at=_SECONDS.format("updated_at"),
)
_LEASE: Final = f"{_NOW} + make_interval(secs => %s)"
_TEMPLATES: Final = {
    "select_run": f"SELECT {_RUN} FROM {{runs}} WHERE trace_id = %s",
    "lock_run": f"SELECT {_RUN} FROM {{runs}} WHERE trace_id = %s FOR UPDATE",
    "insert_run": (
        "INSERT INTO {runs} (trace_id, graph_name, graph_hash, priority, status, epoch,"
        " attempts, max_attempts, dedup_key, submitted_at, updated_at)"
        f" VALUES (%s, %s, %s, %s, 'queued', 0, 0, %s, %s, {_NOW}, {_NOW})"
        " ON CONFLICT (trace_id) DO NOTHING RETURNING trace_id"
    ),
    "has_checkpoints": "SELECT 1 FROM {checkpoints} WHERE trace_id = %s LIMIT 1",
    "latest_step": "SELECT max(step) FROM {checkpoints} WHERE trace_id = %s",
    "latest_steps": (
        "SELECT trace_id, max(step) FROM {checkpoints} WHERE trace_id = ANY(%s) GROUP BY trace_id"
    ),
    "resume": (
        "UPDATE {runs} SET status = 'queued', resume_update = %s, update_step = %s,"
        f" attempts = 0, error = NULL, updated_at = {_NOW} WHERE trace_id = %s"
    ),
    "cancel": (
        "UPDATE {runs} SET status = 'cancelled', owner = NULL, lease_expires_at = NULL,"
        f" updated_at = {_NOW} WHERE trace_id = %s AND status = ANY(%s)"
    ),
    # A lease that ran out: the run is queued again with one more attempt, or dead.
    "requeue_expired": (
        "WITH expired AS (SELECT trace_id FROM {runs} WHERE status = 'running'"
        f" AND lease_expires_at <= {_NOW} FOR UPDATE SKIP LOCKED)"
        " UPDATE {runs} r SET"
        " status = CASE WHEN r.attempts + 1 >= r.max_attempts THEN 'dead' ELSE 'queued' END,"
        " attempts = r.attempts + 1,"
        " error = 'the lease of worker ' || r.owner || ' expired (attempt '"
        " || (r.attempts + 1) || ')',"
        f" owner = NULL, lease_expires_at = NULL, updated_at = {_NOW}"
        " FROM expired WHERE r.trace_id = expired.trace_id RETURNING r.status"
    ),
    "claim": (
        "WITH picked AS (SELECT trace_id FROM {runs} WHERE status = 'queued'"
        " AND graph_hash = ANY(%s) ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE {runs} r SET status = 'running', epoch = r.epoch + 1, owner = %s,"
        f" lease_expires_at = {_LEASE}, updated_at = {_NOW}"
        " FROM picked WHERE r.trace_id = picked.trace_id RETURNING "
        + ", ".join(f"r.{column}" for column in CLAIM_COLUMNS.split(", "))
    ),
    # A lease that expired but was not requeued is renewed too: no one took the run
    # over, and the fenced saves refused while it was expired.
    "renew": (
        f"UPDATE {{runs}} SET lease_expires_at = {_LEASE}"
        " WHERE owner = %s AND status = 'running' RETURNING trace_id, epoch"
    ),
    "register": (
        "INSERT INTO {workers} (worker_id, host, pid, started_at, expires_at)"
        f" VALUES (%s, %s, %s, {_NOW}, {_LEASE})"
        " ON CONFLICT (worker_id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
    ),
    "register_graphs": (
        "INSERT INTO {worker_graphs} (worker_id, graph_hash)"
        " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING"
    ),
    # Workers whose registration ran out, skipping those another worker is forgetting.
    "forget_expired": (
        "WITH gone AS (DELETE FROM {workers} WHERE worker_id IN (SELECT worker_id FROM"
        f" {{workers}} WHERE expires_at <= {_NOW} FOR UPDATE SKIP LOCKED) RETURNING worker_id)"
        " DELETE FROM {worker_graphs} WHERE worker_id IN (SELECT worker_id FROM gone)"
    ),
    "forget": (
        "WITH gone AS (DELETE FROM {workers} WHERE worker_id = %(worker)s)"
        " DELETE FROM {worker_graphs} WHERE worker_id = %(worker)s"
    ),
    "settle": (
        "UPDATE {runs} SET status = %s, attempts = attempts + %s, error = %s, owner = NULL,"
        " lease_expires_at = NULL,"
        " resume_update = CASE WHEN %s THEN NULL ELSE resume_update END,"
        f" updated_at = {_NOW} WHERE trace_id = %s AND epoch = %s AND status = 'running'"
    ),
    "list": f"SELECT {_RUN} FROM {{runs}}",
    "list_status": f"SELECT {_RUN} FROM {{runs}} WHERE status = %s",
    # Runs waiting for a worker (queued, or running on an expired lease) whose graph
    # no live worker registered.
    "list_stranded": (
        f"SELECT {_RUN} FROM {{runs}} r WHERE (r.status = 'queued' OR (r.status = 'running'"
        f" AND r.lease_expires_at <= {_NOW})) AND NOT EXISTS (SELECT 1 FROM {{worker_graphs}} g"
        " JOIN {workers} w ON w.worker_id = g.worker_id"
        f" WHERE g.graph_hash = r.graph_hash AND w.expires_at > {_NOW})"
    ),
    "notify": "SELECT pg_notify(%s, '')",
}
_ORDER: Final = " ORDER BY priority DESC, seq LIMIT %s"
_DEFAULT_POLL: Final = 1.0


class PostgresRunQueue(RunQueue):
    """The run queue in the PostgreSQL database of ``store``."""

    store: PostgresBlobStore

    def __init__(self, store: PostgresBlobStore, *, poll_interval: float = _DEFAULT_POLL) -> None:
        if not isinstance(store, PostgresBlobStore):
            raise TypeError(
                f"PostgresRunQueue takes a PostgresBlobStore, not {type(store).__name__}"
            )
        if store.read_only:
            raise ValueError("a run queue writes: its store cannot be read-only")
        self.store = store
        self.poll_interval = poll_interval
        self._sql = {name: store._sql.render(template) for name, template in _TEMPLATES.items()}
        self._channel = store._sql.runs_channel

    @classmethod
    def open_url(cls, url: str, **options: Any) -> PostgresRunQueue:
        """The queue of the store :func:`flowpoint.open_store` opens for ``url``."""
        store = open_store(url, **options)
        assert isinstance(store, PostgresBlobStore)
        return cls(store)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

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
        trace = blob.trace_id
        params = (trace, graph_name, signed64(blob.graph_hash), priority, max_attempts, dedup_key)
        async with self.store._transact("submit") as conn:
            # Inserting first: a concurrent submit of the trace waits here for this one.
            cursor = await conn.execute(self._sql["insert_run"], params)
            if await cursor.fetchone() is None:
                cursor = await conn.execute(self._sql["select_run"], (trace,))
                found = await cursor.fetchone()
                assert found is not None  # the conflicting row has committed
                return existing_run(run_from_row(found), blob.graph_hash, dedup_key)
            cursor = await conn.execute(self._sql["has_checkpoints"], (trace,))
            if await cursor.fetchone() is not None:
                raise outside_the_queue(trace)
            await conn.execute(self.store._sql.insert, insert_params(blob))
            await conn.execute(self._sql["notify"], (self._channel,))
            cursor = await conn.execute(self._sql["select_run"], (trace,))
            row = await cursor.fetchone()
            assert row is not None
            return run_from_row(row)

    @override
    async def _get(self, trace_id: TraceId) -> QueuedRun | None:
        async with self.store._transact("get") as conn:
            cursor = await conn.execute(self._sql["select_run"], (trace_id,))
            row = await cursor.fetchone()
        return None if row is None else run_from_row(row)

    @override
    async def _resume(self, trace_id: TraceId, update: bytes | None) -> None:
        async with self.store._transact("resume") as conn:
            cursor = await conn.execute(self._sql["lock_run"], (trace_id,))
            row = await cursor.fetchone()
            if row is None:
                raise TraceNotFound(f"the queue holds no run {trace_id!r}")
            run = run_from_row(row)
            if run.status not in RESUMABLE:
                raise not_resumable(run)
            cursor = await conn.execute(self._sql["latest_step"], (trace_id,))
            latest = await cursor.fetchone()
            step = None if latest is None else latest[0]
            await conn.execute(self._sql["resume"], (update, step, trace_id))
            await conn.execute(self._sql["notify"], (self._channel,))

    @override
    async def _cancel(self, trace_id: TraceId) -> bool:
        statuses = [status.value for status in ACTIVE]
        async with self.store._transact("cancel") as conn:
            cursor = await conn.execute(self._sql["cancel"], (trace_id, statuses))
            return bool(cursor.rowcount > 0)

    @override
    async def _list(
        self, status: RunStatus | None, *, stranded: bool, limit: int
    ) -> list[QueuedRun]:
        params: tuple[object, ...]
        if stranded:
            query, params = self._sql["list_stranded"], (limit,)
        elif status is None:
            query, params = self._sql["list"], (limit,)
        else:
            query, params = self._sql["list_status"], (status.value, limit)
        async with self.store._transact("runs") as conn:
            cursor = await conn.execute(query + _ORDER, params)
            rows = await cursor.fetchall()
        return [run_from_row(row) for row in rows]

    @override
    async def _claim(
        self, worker: str, graphs: Sequence[int], limit: int, lease: float
    ) -> list[Claim]:
        hashes = [signed64(graph) for graph in graphs]
        async with self.store._transact("claim") as conn:
            await self._requeue_expired(conn)
            cursor = await conn.execute(self._sql["claim"], (hashes, limit, worker, lease))
            rows = await cursor.fetchall()
            if not rows:
                return []
            # After the claim, in the same transaction: no save of an earlier epoch
            # can commit any more (its lease check would see the new epoch).
            traces = [row[0] for row in rows]
            cursor = await conn.execute(self._sql["latest_steps"], (traces,))
            steps = dict(await cursor.fetchall())
        return [claim_from_row(row, steps.get(row[0])) for row in rows]

    async def _requeue_expired(self, conn: AsyncConnection[Any]) -> None:
        cursor = await conn.execute(self._sql["requeue_expired"])
        requeued = await cursor.fetchall()
        if any(status == RunStatus.QUEUED for (status,) in requeued):
            await conn.execute(self._sql["notify"], (self._channel,))

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
        hashes = [signed64(graph) for graph in graphs]
        async with self.store._transact("heartbeat") as conn:
            await conn.execute(self._sql["register"], (worker, host, pid, lease))
            await conn.execute(self._sql["register_graphs"], (worker, hashes))
            await conn.execute(self._sql["forget_expired"])
            cursor = await conn.execute(self._sql["renew"], (lease, worker))
            renewed = {(TraceId(trace), epoch) for trace, epoch in await cursor.fetchall()}
            await self._requeue_expired(conn)
        return renewed & set(held)

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
        async with self.store._transact("settle") as conn:
            cursor = await conn.execute(self._sql["settle"], params)
            if cursor.rowcount > 0 and settlement.status is RunStatus.QUEUED:
                await conn.execute(self._sql["notify"], (self._channel,))
            return bool(cursor.rowcount > 0)

    @override
    async def _unregister(self, worker: str) -> None:
        async with self.store._transact("unregister") as conn:
            await conn.execute(self._sql["forget"], {"worker": worker})

    @override
    async def _listen(self, notify: Callable[[], None]) -> None:
        """LISTEN on a connection of its own, when the store was opened from a URL."""
        import psycopg

        conninfo = self.store._listen_conninfo
        if conninfo is None:
            return
        while True:
            try:
                conn = await _listening(conninfo, self._channel)
            except psycopg.Error as exc:
                _log.warning("flowpoint: LISTEN failed (%s); polling until it works again", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            try:
                async for _ in conn.notifies():
                    notify()
            except psycopg.Error as exc:
                _log.warning("flowpoint: LISTEN broke (%s); listening again", exc)
            finally:
                await conn.close()


async def _listening(conninfo: str, channel: str) -> AsyncConnection[Any]:
    import psycopg
    from psycopg import sql

    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except BaseException:
        await conn.close()
        raise
    return conn
