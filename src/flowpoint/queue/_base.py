"""The run queue's interface: submit runs, ask where they stand, resume and cancel them.

:class:`RunQueue` writes the contract once and checks arguments; a backend
(:mod:`._sqlite`, :mod:`._postgres`) implements the ``_``-methods on the tables
it shares with the checkpoints (:mod:`flowpoint.stores._fenced`). The methods a
:class:`~flowpoint.queue._worker.Worker` uses (claim, heartbeat, settle) are
internal: a run's life is a worker's business.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from flowpoint.checkpoint import Checkpoint
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import RunConflict, TraceNotFound
from flowpoint.graph._builder import BuiltGraph, Graph
from flowpoint.ids import TraceId, validate_trace_id
from flowpoint.queue._resumes import encode_resume
from flowpoint.stores._base import check_blob

if TYPE_CHECKING:
    from flowpoint.blob import CheckpointBlob
    from flowpoint.stores._fenced import FencedBlobStore

__all__ = [
    "ACTIVE",
    "CLAIM_COLUMNS",
    "RESUMABLE",
    "RUN_COLUMNS",
    "Claim",
    "QueuedRun",
    "RunQueue",
    "RunStatus",
    "Settlement",
    "claim_from_row",
    "error_text",
    "existing_run",
    "not_resumable",
    "outside_the_queue",
    "positive_seconds",
    "run_from_row",
    "signed64",
]

_UNSET: Final[Any] = object()
_INT64_MAX: Final = 2**63 - 1
_UINT64: Final = 2**64
_MAX_ERROR: Final = 4096
_MAX_DEDUP_KEY: Final = 256


class RunStatus(enum.StrEnum):
    """Where a queued run stands; each value equals its name in lowercase (``"done"``).

    ``queued``: waiting for a worker that serves its graph. ``running``: a worker
    holds its lease. ``interrupted``: paused by an interrupt until
    :meth:`RunQueue.resume`; it holds no worker. ``done``: reached the end.
    ``failed``: a node (or the run's own data) raised; the error is kept.
    ``dead``: its leases expired (or its storage failed) ``max_attempts`` times;
    the last error is kept. ``cancelled``: by :meth:`RunQueue.cancel`.
    """

    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run as the queue holds it.

    ``epoch`` counts the claims of the run (a lease's fencing token);
    ``attempts`` the claims that ended without the run settling (a lease that
    expired, storage that failed). ``owner`` is the worker holding the lease and
    ``lease_expires_at`` when it runs out (the database's clock), while
    ``running``. ``error`` is the last error, for ``failed`` and ``dead`` runs.
    ``graph_hash`` is the fingerprint (:meth:`flowpoint.BuiltGraph.hash_u64`) a
    worker must serve to claim the run.
    """

    trace_id: TraceId
    graph_name: str
    graph_hash: int
    status: RunStatus
    priority: int
    attempts: int
    max_attempts: int
    epoch: int
    owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    dedup_key: str | None
    submitted_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A run a worker claimed: its lease's ``epoch``, and what the worker needs to run it.

    ``latest_step`` is the trace's highest checkpoint step when the claim
    committed: every save of an earlier epoch is at or below it. ``update`` is a
    resume's ``{"update": ..., "value": ...}`` (either key may be absent; plain
    data, MessagePack), to apply when the trace still stands at ``update_step``;
    once a checkpoint past it is saved, it was applied.
    """

    trace_id: TraceId
    epoch: int
    graph_hash: int
    attempts: int
    max_attempts: int
    latest_step: int | None
    update: bytes | None
    update_step: int | None

    @property
    def pending_update(self) -> bytes | None:
        """The resume's update if it is still to apply, else ``None``."""
        if self.update is None or self.update_step != self.latest_step:
            return None
        return self.update


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a worker leaves a claim: the run's new status, attempts spent, and its error."""

    status: RunStatus
    attempts: int = 0
    error: str | None = None


class RunQueue(abc.ABC):
    """A durable queue of graph runs, in the database that holds their checkpoints.

    Open one with :meth:`open` (``sqlite:///runs.db`` or ``postgresql://...``) and
    use it as ``async with RunQueue.open(url) as queue:``. :meth:`submit` puts a
    run in; :class:`~flowpoint.Worker` processes claim and run them, each run by
    one worker at a time under a renewed lease whose epoch fences every save
    (:mod:`flowpoint.stores._fenced`). ``store`` is the checkpoint store the
    runs are saved in: read their states through it.
    """

    store: FencedBlobStore
    poll_interval: float
    """Seconds a worker waits, give or take half, before it looks for work again."""
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()
    """The codec settings runs are saved with (compression, encryption, limits): the
    initial state by :meth:`submit`, every checkpoint after it by the workers of this
    queue, each for its graph's state type (``codec.for_state``)."""

    @staticmethod
    def open(
        url: str, *, codec: SerdeCheckpointCodec[Any] | None = None, **options: Any
    ) -> RunQueue:
        """The queue in the database ``url`` names, as :func:`flowpoint.open_store` takes it.

        ``sqlite:///path.db`` (several processes on one machine) or
        ``postgresql://...`` (many machines); ``options`` go to the store
        (:func:`flowpoint.open_store`). ``codec`` gives the settings runs are
        saved with, ``SerdeCheckpointCodec(encryption=KeyRing(...))`` to encrypt
        them: every process that submits to or works for the queue opens it with
        the same settings. Opening connects to nothing. Another scheme raises
        ``ValueError``; a codec that is not a ``SerdeCheckpointCodec``, ``TypeError``.
        """
        if not isinstance(url, str):
            raise ValueError(f"a queue URL must be a str, not {type(url).__name__}")
        if codec is not None and not isinstance(codec, SerdeCheckpointCodec):
            raise TypeError(
                f"a run queue's codec is a SerdeCheckpointCodec (one for each graph's state "
                f"type is made from it), not {type(codec).__name__}"
            )
        scheme = url.partition(":")[0].lower()
        queue: RunQueue
        if scheme == "sqlite":
            from flowpoint.queue._sqlite import SqliteRunQueue

            queue = SqliteRunQueue.open_url(url, **options)
        elif scheme in ("postgresql", "postgres"):
            from flowpoint.queue._postgres import PostgresRunQueue

            queue = PostgresRunQueue.open_url(url, **options)
        else:
            raise ValueError(
                f"a run queue lives in SQLite (sqlite:///path.db) or PostgreSQL "
                f"(postgresql://...), not {url!r}"
            )
        if codec is not None:
            queue.codec = codec
        return queue

    async def submit(
        self,
        graph: Graph[Any] | BuiltGraph[Any],
        trace_id: TraceId | str,
        state: Any,
        *,
        priority: int = 0,
        dedup_key: str | None = None,
        max_attempts: int = 3,
    ) -> QueuedRun:
        """Queue a run of ``graph`` on trace ``trace_id``, starting from ``state``.

        The trace's first checkpoint is saved with the run, in one transaction.
        Runs with a higher ``priority`` are claimed first, then the oldest. A
        graph no live worker serves is accepted, and listed by :meth:`stranded`.
        After ``max_attempts`` claims that end without the run settling (a lease
        expired, storage failed), the run is ``dead``.

        A trace the queue holds already raises :class:`~flowpoint.errors.RunConflict`,
        unless it was submitted with the same graph and the same ``dedup_key``:
        then that run is returned as it stands (a retried submit). A trace with
        checkpoints saved outside the queue is a conflict too. A ``state`` that
        does not fit the graph's state type raises
        :class:`~flowpoint.errors.InvalidUpdate`, queueing nothing.
        """
        built = graph.build() if isinstance(graph, Graph) else graph
        if not isinstance(built, BuiltGraph):
            raise TypeError(f"submit takes a Graph or BuiltGraph, not {type(graph).__name__}")
        trace = validate_trace_id(trace_id)
        _check_int("priority", priority, -(2**31), 2**31 - 1)
        _check_int("max_attempts", max_attempts, 1, 2**31 - 1)
        if dedup_key is not None and (
            not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= _MAX_DEDUP_KEY
        ):
            raise ValueError(
                f"dedup_key must be a str of 1 to {_MAX_DEDUP_KEY} characters, "
                f"not {dedup_key!r:.80}"
            )
        built.state.check(state, f"the initial state of run {trace!r}")
        first = Checkpoint.first(built.start, state, metadata={"source": "input"})
        blob = self.codec.for_state(built.state_type).serialize(first, built.hash_u64(), trace)
        check_blob("submit", blob)
        return await self._submit(
            blob, built.name, priority=priority, dedup_key=dedup_key, max_attempts=max_attempts
        )

    async def status(self, trace_id: TraceId | str) -> RunStatus:
        """The run's status; :class:`~flowpoint.errors.TraceNotFound` if there is no such run."""
        return (await self._require(trace_id)).status

    async def get(self, trace_id: TraceId | str) -> QueuedRun | None:
        """The run as the queue holds it, or ``None``."""
        return await self._get(validate_trace_id(trace_id))

    async def resume(
        self,
        trace_id: TraceId | str,
        update: Mapping[str, Any] | None = None,
        *,
        value: Any = _UNSET,
    ) -> None:
        """Queue an ``interrupted`` run again; a worker resumes it as ``Runner.resume`` does.

        ``update`` is a dict of fields, and ``value`` the answer to the
        :func:`~flowpoint.interrupt` the run is paused at, as
        :meth:`~flowpoint.Runner.resume` takes them (as plain data: a dataclass
        becomes a dict); they are applied once, when the run continues. A
        ``failed`` or ``dead`` run may be resumed too (after a fix): it continues
        from its latest checkpoint with its attempts counted from zero. Any other
        status raises :class:`~flowpoint.errors.RunConflict`; an unknown run
        :class:`~flowpoint.errors.TraceNotFound`; an update or a value that
        cannot be stored ``TypeError``.
        """
        trace = validate_trace_id(trace_id)
        given: dict[str, Any] = {}
        if update is not None:
            if not isinstance(update, Mapping):
                raise TypeError(
                    f"a queued run's update is a dict of fields, not a {type(update).__name__}"
                )
            given["update"] = update
        if value is not _UNSET:
            given["value"] = value
        encoded = encode_resume(given, self.codec.encryption, trace) if given else None
        await self._resume(trace, encoded)

    async def cancel(self, trace_id: TraceId | str) -> bool:
        """Cancel a queued, running or interrupted run; ``False`` if it had settled already.

        A running run's worker stops it before its next save (that save fails
        its lease check). An unknown run raises :class:`~flowpoint.errors.TraceNotFound`.
        """
        trace = validate_trace_id(trace_id)
        if await self._cancel(trace):
            return True
        await self._require(trace)
        return False

    async def runs(
        self, status: RunStatus | str | None = None, limit: int = 100
    ) -> list[QueuedRun]:
        """Up to ``limit`` runs (of ``status``, if given), the next to be claimed first."""
        wanted = None if status is None else _status(status)
        _check_int("limit", limit, 1, 2**31 - 1)
        return await self._list(wanted, stranded=False, limit=limit)

    async def stranded(self, limit: int = 100) -> list[QueuedRun]:
        """Runs waiting for a worker that no live worker can serve (none registered their graph).

        Queued runs, and running ones whose lease expired, whose graph
        fingerprint no live worker registered: a graph that changed since they
        were submitted, or one no deployed worker serves.
        """
        _check_int("limit", limit, 1, 2**31 - 1)
        return await self._list(None, stranded=True, limit=limit)

    async def close(self) -> None:
        """Close the store, and with it the queue. Twice is harmless."""
        await self.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _require(self, trace_id: TraceId | str) -> QueuedRun:
        trace = validate_trace_id(trace_id)
        found = await self._get(trace)
        if found is None:
            raise TraceNotFound(f"the queue holds no run {trace!r}")
        return found

    # -- what a backend implements --------------------------------------------------------

    @abc.abstractmethod
    async def _submit(
        self,
        blob: CheckpointBlob,
        graph_name: str,
        *,
        priority: int,
        dedup_key: str | None,
        max_attempts: int,
    ) -> QueuedRun: ...

    @abc.abstractmethod
    async def _get(self, trace_id: TraceId) -> QueuedRun | None: ...

    @abc.abstractmethod
    async def _resume(self, trace_id: TraceId, update: bytes | None) -> None:
        """Requeue a resumable run with ``update``, noting the trace's latest step with it."""

    @abc.abstractmethod
    async def _cancel(self, trace_id: TraceId) -> bool: ...

    @abc.abstractmethod
    async def _list(
        self, status: RunStatus | None, *, stranded: bool, limit: int
    ) -> list[QueuedRun]: ...

    # The worker's side. ``lease`` is in seconds.

    @abc.abstractmethod
    async def _claim(
        self, worker: str, graphs: Sequence[int], limit: int, lease: float
    ) -> list[Claim]:
        """Claim up to ``limit`` queued runs of ``graphs``, by priority then age.

        Expired leases are requeued first (or the runs made ``dead``), in the
        same transaction. Each claimed run gets ``epoch + 1`` and a lease of
        ``lease`` seconds by the database's clock.
        """

    @abc.abstractmethod
    async def _heartbeat(
        self,
        worker: str,
        host: str,
        pid: int,
        graphs: Sequence[int],
        lease: float,
        held: Sequence[tuple[TraceId, int]],
    ) -> set[tuple[TraceId, int]]:
        """Register the worker live for ``lease`` seconds, renew its leases, requeue expired ones.

        A lease that expired but was not requeued yet is renewed (no one took the
        run over; saves were refused while it was expired), then other workers'
        expired leases are requeued. Returns which of ``held`` (trace, epoch) the
        worker still holds.
        """

    @abc.abstractmethod
    async def _settle(self, claim: Claim, settlement: Settlement) -> bool:
        """Leave a claim as ``settlement`` says, if the lease is still the claim's."""

    @abc.abstractmethod
    async def _unregister(self, worker: str) -> None: ...

    async def _listen(self, notify: Callable[[], None]) -> None:  # noqa: B027 - polling is a default
        """Call ``notify`` whenever a run may have become claimable, until cancelled.

        A backend that cannot tell returns at once: its workers poll.
        """


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int from {low} to {high}, not {value!r:.40}")


def _status(value: RunStatus | str) -> RunStatus:
    try:
        return RunStatus(value)
    except ValueError:
        known = ", ".join(status.value for status in RunStatus)
        raise ValueError(f"unknown run status {value!r:.40}: one of {known}") from None


def signed64(unsigned: int) -> int:
    """A graph hash as SQL's signed 64-bit integer (two's complement)."""
    return unsigned - _UINT64 if unsigned > _INT64_MAX else unsigned


def positive_seconds(name: str, seconds: float) -> float:
    """``seconds``, if a finite, positive length of time; else ``ValueError`` naming ``name``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive length of time, not {seconds!r} s")
    return seconds


def error_text(error: str) -> str:
    """An error as the queue keeps it: at most 4096 characters."""
    return error[:_MAX_ERROR]


def run_from_row(row: Sequence[Any]) -> QueuedRun:
    """A run from the columns :data:`RUN_COLUMNS` names (times as seconds since the epoch)."""
    (
        trace_id, graph_name, graph_hash, status, priority, attempts, max_attempts, epoch,
        owner, lease_expires_at, error, dedup_key, submitted_at, updated_at,
    ) = row  # fmt: skip
    return QueuedRun(
        trace_id=TraceId(trace_id),
        graph_name=graph_name,
        graph_hash=int(graph_hash) % _UINT64,
        status=RunStatus(status),
        priority=priority,
        attempts=attempts,
        max_attempts=max_attempts,
        epoch=epoch,
        owner=owner,
        lease_expires_at=None if lease_expires_at is None else _time(lease_expires_at),
        error=error,
        dedup_key=dedup_key,
        submitted_at=_time(submitted_at),
        updated_at=_time(updated_at),
    )


def claim_from_row(row: Sequence[Any], latest_step: int | None) -> Claim:
    """A claim from the columns :data:`CLAIM_COLUMNS` names."""
    trace_id, epoch, graph_hash, attempts, max_attempts, update, update_step = row
    return Claim(
        trace_id=TraceId(trace_id),
        epoch=epoch,
        graph_hash=int(graph_hash) % _UINT64,
        attempts=attempts,
        max_attempts=max_attempts,
        latest_step=latest_step,
        update=None if update is None else bytes(update),
        update_step=update_step,
    )


def _time(seconds: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=float(seconds))


RUN_COLUMNS: Final = (
    "trace_id, graph_name, graph_hash, status, priority, attempts, max_attempts, epoch, "
    "owner, {lease_expires_at}, error, dedup_key, {submitted_at}, {updated_at}"
)
"""The columns of :func:`run_from_row`; a backend fills in how it reads a time as seconds."""
CLAIM_COLUMNS: Final = (
    "trace_id, epoch, graph_hash, attempts, max_attempts, resume_update, update_step"
)
"""The columns of :func:`claim_from_row`."""
ACTIVE: Final = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.INTERRUPTED)
"""The statuses :meth:`RunQueue.cancel` cancels."""
RESUMABLE: Final = (RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.DEAD)
"""The statuses :meth:`RunQueue.resume` queues again."""


def existing_run(found: QueuedRun, graph_hash: int, dedup_key: str | None) -> QueuedRun:
    """A submit of a trace the queue holds: the run if it is the same submit, else a conflict."""
    if dedup_key is not None and found.dedup_key == dedup_key and found.graph_hash == graph_hash:
        return found
    same = "" if dedup_key is None else " under another dedup_key or graph"
    raise RunConflict(
        found.trace_id,
        found.status,
        f"the queue holds this trace already{same}; pick another trace id, or submit "
        f"with the dedup_key of the first submit to get its run back",
    )


def outside_the_queue(trace_id: TraceId) -> RunConflict:
    """The error for a submit of a trace whose checkpoints were saved outside the queue."""
    return RunConflict(
        trace_id, "not queued", "the store holds checkpoints of this trace, saved outside the queue"
    )


def not_resumable(found: QueuedRun) -> RunConflict:
    """The error for a resume of a run that is not interrupted, failed or dead."""
    return RunConflict(
        found.trace_id, found.status, "only an interrupted, failed or dead run can be resumed"
    )
