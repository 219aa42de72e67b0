"""Three worker processes, 60 runs, one worker SIGKILLed and another SIGSTOPped past its lease.

Every run ends ``done``; every node of every run has its side effect once, except
the nodes in flight in the disrupted workers (at most one extra each); and no
worker saved a checkpoint after it lost its lease: each worker records every claim
(with the trace's latest step when the claim committed) and every save (with its
lease's epoch), and no save of an epoch lands above the step at which a later
epoch's claim took the run over.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from flowpoint import RunQueue
from tests.queue import graphs
from tests.queue.test_worker import start_worker

RUNS = 60
WORKERS = 3
CONCURRENCY = 4
DELAY = 0.1  # seconds per node
LEASE = 2.0  # seconds


async def until(
    condition: Any,
    what: str,
    timeout: float = 60.0,  # noqa: ASYNC109
    explain: Any = None,
) -> None:
    """Wait for ``condition``; on a timeout, fail with what ``explain()`` tells of the state."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            told = "" if explain is None else f"\n{await explain()}"
            pytest.fail(f"timed out waiting until {what}{told}")
        await asyncio.sleep(0.02)


async def unfinished(queue: RunQueue, workers: list[subprocess.Popen[str]]) -> str:
    """The runs not done, with their leases, and each worker's pid and exit status."""
    lines = [f"worker {worker.pid}: exit status {worker.poll()}" for worker in workers]
    for run in await queue.runs(limit=RUNS):
        if run.status != "done":
            lines.append(
                f"{run.trace_id} {run.status} epoch={run.epoch} attempts={run.attempts} "
                f"owner={run.owner} lease_expires_at={run.lease_expires_at} error={run.error}"
            )
    return "\n".join(lines)


async def pause(worker: subprocess.Popen[str], url: str) -> None:
    """SIGSTOP ``worker``, at a moment it does not hold the SQLite file's write lock.

    A process paused inside a write transaction (a few milliseconds each) would stall
    every process of the file, the healthy workers' heartbeats included, and every
    lease would expire at once: another scenario than one worker paused.
    """
    os.kill(worker.pid, signal.SIGSTOP)
    if not url.startswith("sqlite:"):
        return  # PostgreSQL: a paused client's locks hold only its own rows
    path = urlsplit(url).path[1:]
    for _ in range(100):
        probe = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # locked: by the paused worker, or a healthy one
            os.kill(worker.pid, signal.SIGCONT)
            await asyncio.sleep(0.01)
            os.kill(worker.pid, signal.SIGSTOP)
        finally:
            probe.close()
    pytest.fail("the worker could not be paused outside a write transaction")


def events_of(path: Path) -> list[dict[str, Any]]:
    """A worker's recorded events; a SIGKILLed worker's last line may be cut short."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


@pytest.mark.slow
async def test_workers_killed_and_paused_lose_no_run_and_write_nothing_stale(
    queue: RunQueue, queue_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side-effects.txt"
    chain = graphs.chain(delay=DELAY)
    for n in range(RUNS):
        await queue.submit(chain, f"run-{n:02d}", graphs.start(n))
    event_files = [tmp_path / f"events-{n}.jsonl" for n in range(WORKERS)]
    options = ["--delay", str(DELAY), "--lease", str(LEASE), "--concurrency", str(CONCURRENCY)]
    workers = [
        start_worker(queue_url, log, *options, "--events", str(events)) for events in event_files
    ]
    killed, paused = workers[0], workers[1]

    async def done() -> int:
        return len(await queue.runs(status="done", limit=RUNS))

    async def holds_runs(worker: subprocess.Popen[str]) -> bool:
        running = await queue.runs(status="running", limit=RUNS)
        return any(f":{worker.pid}:" in (run.owner or "") for run in running)

    try:
        await until(lambda: _at_least(done, 8), "some runs are done")
        await until(lambda: holds_runs(killed), "the first worker holds runs")
        killed.send_signal(signal.SIGKILL)
        for _ in range(20):
            await until(lambda: holds_runs(paused), "the second worker holds runs")
            await pause(paused, queue_url)
            if await holds_runs(paused):
                break  # paused with runs in flight
            os.kill(paused.pid, signal.SIGCONT)
        else:
            pytest.fail("the second worker could not be paused holding runs")
        await asyncio.sleep(LEASE * 3)  # past its lease: the third worker takes its runs over
        os.kill(paused.pid, signal.SIGCONT)
        await until(
            lambda: _at_least(done, RUNS),
            "every run is done",
            explain=lambda: unfinished(queue, workers),
        )
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                await asyncio.to_thread(worker.wait, 30)
            finally:
                worker.kill()
                worker.communicate()
    assert killed.returncode == -signal.SIGKILL
    assert paused.returncode == 0

    # Every node ran, once, but for the nodes in flight in the disrupted workers.
    effects = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    counts = Counter((trace, node) for trace, node, _ in effects)
    assert set(counts) == {(f"run-{n:02d}", node) for n in range(RUNS) for node in graphs.NODES}
    disrupted = {str(killed.pid), str(paused.pid)}
    repeated = {key for key, count in counts.items() if count > 1}
    assert max(counts.values()) <= 2
    for trace, node in repeated:
        pids = [pid for t, n, pid in effects if (t, n) == (trace, node)]
        assert disrupted & set(pids), (trace, node, pids)
    assert len(repeated) <= 2 * CONCURRENCY

    # No save of an epoch after a later epoch's claim took the run over.
    events = [event for path in event_files for event in events_of(path)]
    claimed_at: dict[tuple[str, int], tuple[str, int]] = {}
    saves: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for event in events:
        key = (event["trace_id"], event["epoch"])
        if event["event"] == "claimed":
            claimed_at[key] = (event["worker"], event["step"])
        elif event["event"] == "saved":
            saves[event["trace_id"]].append((event["epoch"], event["step"], event["worker"]))
    takeovers = [key for key in claimed_at if key[1] > 1]
    assert takeovers, "no run was taken over: the test disrupted nothing"
    for trace, recorded in saves.items():
        for epoch, step, worker in recorded:
            assert claimed_at[(trace, epoch)][0] == worker  # saved by its lease's holder
            for (other, later), (_, fence_step) in claimed_at.items():
                if other == trace and later > epoch:
                    assert step <= fence_step, (trace, epoch, step, later, fence_step)
    paused_events = events_of(event_files[1])
    assert any(event["event"] == "lease_lost" for event in paused_events)
    # And each trace holds one checkpoint per step, the last one the end.
    for n in range(RUNS):
        history = await queue.store.history(f"run-{n:02d}")
        assert [info.step for info in history] == list(range(len(graphs.NODES), -1, -1))
        assert history[0].current_node is None


async def _at_least(count: Any, wanted: int) -> bool:
    return bool(await count() >= wanted)
