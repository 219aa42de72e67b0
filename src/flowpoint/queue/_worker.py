"""A worker: claims queued runs of the graphs it serves and runs them under renewed leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import threading
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any, Final

from flowpoint.blob import CheckpointBlob
from flowpoint.errors import (
    CheckpointStoreError,
    GraphDefinitionError,
    LeaseLost,
    StorageError,
)
from flowpoint.graph._builder import BuiltGraph, Graph
from flowpoint.graph._runner import Runner
from flowpoint.queue._base import (
    Claim,
    RunQueue,
    RunStatus,
    Settlement,
    error_text,
    positive_seconds,
)
from flowpoint.queue._fencing import LeasedStore
from flowpoint.queue._resumes import decode_resume
from flowpoint.stores._fenced import Fence
from flowpoint.typed import TypedCheckpointStore

__all__ = ["Worker"]

_log = logging.getLogger("flowpoint.worker")

_RENEWALS_PER_LEASE: Final = 3
"""A lease is renewed this many times per its length, so that two missed renewals are survived."""


class _Stopping(Exception):
    """Raised after a save while the worker shuts down: the run is released there."""


class Worker:
    """Claims queued runs of ``graphs`` and runs up to ``concurrency`` of them at once.

    Each run is claimed with a lease of ``lease`` (by the database's clock),
    renewed every third of it while the run runs, and every save of the run is
    fenced by the lease's epoch: a worker that lost a lease (paused past it,
    cut off) saves nothing more of that run and stops it before its next node.
    The worker also registers the fingerprints of ``graphs``
    (:meth:`~flowpoint.BuiltGraph.hash_u64`) and requeues runs whose lease expired,
    whoever held them. Runs of a graph it does not serve are never claimed.

    A run that reaches an interrupt is left ``interrupted`` (it holds no worker)
    until :meth:`~flowpoint.RunQueue.resume`. A run whose node raises is
    ``failed`` with the error: nodes are not retried. A run whose storage fails
    is queued again, one attempt spent, or ``dead`` after its ``max_attempts``.

    ``interrupt_before`` and ``interrupt_after`` name nodes to pause at, as
    :class:`~flowpoint.Runner` takes them, in whichever graphs have them. Runs
    are saved with the queue's codec settings (``RunQueue.open(url, codec=...)``)
    for their graph's state type. Events (claims,
    saves, lost leases, settled runs) are logged on the ``flowpoint.worker``
    logger, with ``event``, ``trace_id``, ``epoch`` and ``worker`` attributes.
    """

    def __init__(
        self,
        queue: RunQueue,
        graphs: Iterable[Graph[Any] | BuiltGraph[Any]],
        *,
        concurrency: int = 8,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta | None = None,
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
    ) -> None:
        if not isinstance(queue, RunQueue):
            raise TypeError(f"a Worker takes a RunQueue, not {type(queue).__name__}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
        for name, value in (("lease", lease), ("poll_interval", poll_interval)):
            if not isinstance(value, timedelta) and (name == "lease" or value is not None):
                raise TypeError(f"{name} must be a timedelta, not {value!r}")
        self.queue = queue
        self.concurrency = concurrency
        self.lease = positive_seconds("lease", lease.total_seconds())
        poll = queue.poll_interval if poll_interval is None else poll_interval.total_seconds()
        self.poll_interval = positive_seconds("poll_interval", poll)
        self._graphs = _by_fingerprint(graphs)
        # Runs of an older graph that one of these migrates from are served by it:
        # resuming them migrates them first (graph/_migrate.py).
        self._serving = _served_hashes(self._graphs)
        self._codecs = {
            fingerprint: queue.codec.for_state(graph.state_type)
            for fingerprint, graph in self._graphs.items()
        }
        self._interrupts = _interrupts(self._graphs, interrupt_before, interrupt_after)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        """How this worker is named in the queue (``owner`` of the runs it holds)."""
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: dict[asyncio.Task[None], Claim] = {}
        self._settling: set[tuple[str, int]] = set()

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, graphs={[g.name for g in self._graphs.values()]})"

    def run(self, *, until_idle: bool = False) -> None:
        """Serve runs until SIGTERM (or SIGINT); blocks, in a new event loop.

        The first signal stops claiming, lets each run finish the node in flight,
        save, and release its lease; then this returns. A second signal ends the
        process at once, as the signal does by default (the leases then expire
        and other workers take the runs over). With ``until_idle``, it also
        returns once no run it serves is queued or running here.

        The queue is closed when this returns: its connections belong to the
        event loop this made. (:meth:`arun` leaves it open.)
        """
        asyncio.run(self._run_until_signalled(until_idle))

    async def arun(self, *, until_idle: bool = False) -> None:
        """Serve runs in the running event loop until :meth:`stop` (or idle, if ``until_idle``)."""
        if self._loop is not None:
            raise RuntimeError(f"{self!r} is running already")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        try:
            # Registered before the first claim; a queue it cannot reach fails here.
            await self._beat(strict=True)
            beat = asyncio.create_task(self._beat_forever(), name="flowpoint-heartbeat")
            listen = asyncio.create_task(
                self.queue._listen(self._wake.set), name="flowpoint-listen"
            )
            try:
                await self._serve(until_idle)
            finally:
                for task in (beat, listen, *self._tasks):
                    task.cancel()
                await asyncio.gather(beat, listen, *self._tasks, return_exceptions=True)
                try:
                    await self.queue._unregister(self.worker_id)
                except CheckpointStoreError as exc:
                    _log.warning("flowpoint: %s could not unregister: %s", self.worker_id, exc)
        finally:
            self._loop = None

    def stop(self) -> None:
        """Stop claiming; let each run finish its node, save and release its lease.

        May be called from any thread. :meth:`arun` returns once the runs are released.
        """
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._stop_now()
        else:
            loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def _run_until_signalled(self, until_idle: bool) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                    loop.add_signal_handler(signum, self._on_signal, signum)
                    installed.append(signum)
        try:
            await self.arun(until_idle=until_idle)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self.queue.close()

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._stopping:
            _log.warning("flowpoint: %s stops at once", self.worker_id)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _log.warning(
            "flowpoint: %s is stopping: the runs finish their node and are released "
            "(signal again to stop at once)",
            self.worker_id,
        )
        self._stop_now()

    # -- claiming -----------------------------------------------------------------------

    async def _serve(self, until_idle: bool) -> None:
        """Claim runs while there are free slots, until stopped; then wait for the runs."""
        assert self._wake is not None
        hashes = list(self._serving)
        while not self._stopping:
            # Cleared before the claim: a run that ends meanwhile wakes the wait below.
            self._wake.clear()
            free = self.concurrency - len(self._tasks)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self.queue._claim(self.worker_id, hashes, free, self.lease)
                except StorageError as exc:
                    _log.warning("flowpoint: %s could not claim runs: %s", self.worker_id, exc)
                for claim in claims:
                    self._start(claim)
            if until_idle and not self._tasks and not claims:
                return
            if claims and len(claims) < free:
                continue  # perhaps more arrived meanwhile; an empty claim will wait
            # Woken by a notification, a run that ended, or stop(); else poll, jittered.
            timeout = self.poll_interval * random.uniform(0.5, 1.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _start(self, claim: Claim) -> None:
        for stale, held in list(self._tasks.items()):
            if held.trace_id == claim.trace_id:  # its lease expired and the run came back here
                self._event(logging.WARNING, "lease_lost", held)
                stale.cancel()
        task = asyncio.create_task(self._drive(claim), name=f"flowpoint-run {claim.trace_id}")
        self._tasks[task] = claim
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            _log.error("flowpoint: a run task failed", exc_info=task.exception())
        if self._wake is not None:
            self._wake.set()

    # -- one run ------------------------------------------------------------------------

    async def _drive(self, claim: Claim) -> None:
        """Run one claimed run until it ends, pauses, loses its lease or is released."""
        fingerprint = self._serving[claim.graph_hash]
        graph = self._graphs[fingerprint]
        self._event(logging.INFO, "claimed", claim, step=claim.latest_step)
        store = LeasedStore(
            self.queue.store, Fence(claim.trace_id, claim.epoch), partial(self._saved, claim)
        )
        before, after = self._interrupts[fingerprint]
        runner = Runner(
            graph,
            TypedCheckpointStore(store, self._codecs[fingerprint]),
            interrupt_before=before,
            interrupt_after=after,
        )
        try:
            given: dict[str, Any] = {}
            if claim.pending_update is not None:
                codec = self.queue.codec
                given = decode_resume(
                    claim.pending_update,
                    codec.encryption,
                    claim.trace_id,
                    allow_unencrypted=codec.allow_unencrypted,
                )
            update = graph.state.decode_update(given.get("update"))
            if "value" in given:
                result = await runner.resume(claim.trace_id, update, value=given["value"])
            else:
                result = await runner.resume(claim.trace_id, update)
        except LeaseLost:
            self._event(logging.WARNING, "lease_lost", claim)
            return
        except _Stopping:
            await self._settle(claim, Settlement(RunStatus.QUEUED), "released")
            return
        except StorageError as exc:
            spent = claim.attempts + 1
            status = RunStatus.DEAD if spent >= claim.max_attempts else RunStatus.QUEUED
            error = error_text(f"storage failed: {exc}")
            await self._settle(claim, Settlement(status, 1, error), status.value)
            return
        except Exception as exc:  # a node's error (or the run's own data): the run failed
            error = error_text(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
            await self._settle(claim, Settlement(RunStatus.FAILED, 0, error), "failed")
            return
        status = RunStatus(result.status)
        await self._settle(claim, Settlement(status), status.value)

    def _saved(self, claim: Claim, blob: CheckpointBlob) -> None:
        """After each save of a run: log it; while stopping, release the run here."""
        self._event(logging.DEBUG, "saved", claim, step=blob.step)
        pausing = "interrupt" in blob.metadata
        if self._stopping and blob.current_node is not None and not pausing:
            raise _Stopping

    async def _settle(self, claim: Claim, settlement: Settlement, event: str) -> None:
        key = (claim.trace_id, claim.epoch)
        self._settling.add(key)  # the heartbeat no longer counts it as held
        try:
            if await self.queue._settle(claim, settlement):
                self._event(logging.INFO, event, claim, error=settlement.error)
            else:
                self._event(logging.WARNING, "lease_lost", claim)
        except CheckpointStoreError as exc:
            # The lease expires and another worker resumes the run from its checkpoint.
            _log.warning("flowpoint: run %r could not be settled: %s", claim.trace_id, exc)
        finally:
            self._settling.discard(key)

    def _event(self, level: int, event: str, claim: Claim, **facts: Any) -> None:
        if not _log.isEnabledFor(level):
            return
        details = "".join(f" {key}={value}" for key, value in facts.items() if value is not None)
        _log.log(
            level,
            "flowpoint: %s run %r epoch %d: %s%s",
            self.worker_id,
            claim.trace_id,
            claim.epoch,
            event,
            details,
            extra={
                "event": event,
                "trace_id": claim.trace_id,
                "epoch": claim.epoch,
                "worker": self.worker_id,
                **facts,
            },
        )

    # -- leases -------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / _RENEWALS_PER_LEASE)
            await self._beat()

    async def _beat(self, *, strict: bool = False) -> None:
        """Renew this worker's registration and leases; stop the runs whose lease is lost.

        A failure is logged (the next beat tries again) unless ``strict``.
        """
        held = {
            (claim.trace_id, claim.epoch): (task, claim)
            for task, claim in self._tasks.items()
            if (claim.trace_id, claim.epoch) not in self._settling
        }
        try:
            kept = await self.queue._heartbeat(
                self.worker_id,
                socket.gethostname(),
                os.getpid(),
                list(self._serving),
                self.lease,
                list(held),
            )
        except StorageError as exc:
            if strict:
                raise
            _log.warning("flowpoint: %s could not renew its leases: %s", self.worker_id, exc)
            return
        for key, (task, claim) in held.items():
            if key not in kept and key not in self._settling:
                self._event(logging.WARNING, "lease_lost", claim)
                task.cancel()


def _served_hashes(graphs: dict[int, BuiltGraph[Any]]) -> dict[int, int]:
    """Each graph hash whose runs the worker takes, to the fingerprint of the graph that runs them.

    A graph serves its own runs and those of every graph it has a migration from.
    """
    serving = {fingerprint: fingerprint for fingerprint in graphs}
    for fingerprint, graph in graphs.items():
        for source in graph.migrations.hashes:
            other = serving.setdefault(source, fingerprint)
            if other != fingerprint:
                raise GraphDefinitionError(
                    f"graphs {graphs[other].name!r} (0x{other:016x}) and {graph.name!r} "
                    f"(0x{fingerprint:016x}) both take the runs of graph 0x{source:016x}: "
                    f"serve one of them"
                )
    return serving


def _by_fingerprint(graphs: Iterable[Graph[Any] | BuiltGraph[Any]]) -> dict[int, BuiltGraph[Any]]:
    if isinstance(graphs, Graph | BuiltGraph):
        raise TypeError("graphs takes a list of graphs: Worker(queue, graphs=[graph])")
    found: dict[int, BuiltGraph[Any]] = {}
    for graph in graphs:
        built = graph.build() if isinstance(graph, Graph) else graph
        if not isinstance(built, BuiltGraph):
            raise TypeError(f"graphs takes Graph or BuiltGraph objects, not {type(graph).__name__}")
        fingerprint = built.hash_u64()
        if fingerprint in found:
            raise GraphDefinitionError(
                f"graphs lists graph {built.name!r} (0x{fingerprint:016x}) twice"
            )
        found[fingerprint] = built
    if not found:
        raise ValueError("a worker serves at least one graph")
    return found


def _interrupts(
    graphs: dict[int, BuiltGraph[Any]], before: Iterable[str], after: Iterable[str]
) -> dict[int, tuple[frozenset[str], frozenset[str]]]:
    """Per graph, the interrupt nodes it has; a node no graph has is refused."""
    chosen: list[frozenset[str]] = []
    for option, names in (("interrupt_before", before), ("interrupt_after", after)):
        if isinstance(names, str):
            raise TypeError(f"{option} takes a list of node names, not the str {names!r}")
        wanted = frozenset(names)
        known = set().union(*(graph.nodes for graph in graphs.values()))
        unknown = sorted(wanted - known)
        if unknown:
            raise GraphDefinitionError(f"{option} names node(s) no graph has: {unknown}")
        chosen.append(wanted)
    return {
        fingerprint: (chosen[0] & set(graph.nodes), chosen[1] & set(graph.nodes))
        for fingerprint, graph in graphs.items()
    }
