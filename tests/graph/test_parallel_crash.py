"""A parallel workflow SIGKILLed again and again resumes in new processes and finishes.

The workflow (tests/graph/parallel_crash_workflow.py) fans out to 3 branches, joins
them, maps a node over 8 items with ``Send`` and reduces. Every task records a side
effect when it starts. After each kill the test reads the store: the tasks whose
output is durable (a later checkpoint, or a pending write of the latest one) are
finished; the tasks that started and are not are in flight. In the end:

- every trace finishes with the state of an uninterrupted run;
- every task that finished before a kill ran exactly once: a resume runs only the
  tasks of the superstep whose writes are not saved;
- a task in flight at kills ran at most once more per such kill, under the same
  idempotency key each time (and no other task has that key).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowpoint import InMemoryBlobStore, Runner, SyncCheckpointStore
from flowpoint.graph._context import node_context
from flowpoint.graph._cursor import Cursor
from flowpoint.graph._runner import OUTPUT_INDEX
from tests.graph import parallel_crash_workflow as wf

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWPOINT_GRAPH_CRASH_KILLS", "10"))
GRAPH = wf.build(wf.Effects(None, ""))
HASH = GRAPH.hash_u64()
TASKS = {"plan", *wf.BRANCHES, "split", *(f"summarise#{i}" for i in range(wf.ITEMS)), "reduce"}
# The children import this tree's flowpoint, whatever the environment has installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    from tests.harnesses.postgres import create_database, drop_database, url_for

    database = asyncio.run(create_database())
    try:
        yield url_for(database)
    finally:
        asyncio.run(drop_database(database))


def uninterrupted() -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        result = await Runner(GRAPH, InMemoryBlobStore()).run("reference", wf.initial())
        state: dict[str, Any] = dict(result.state)
        return state

    return asyncio.run(run())


def durable(url: str, trace: str) -> tuple[set[str], int, int]:
    """The keys of the trace's tasks whose output is durable; the latest superstep's
    tasks, and how many of them have their pending write saved."""
    keys: set[str] = set()
    with SyncCheckpointStore.open(url, wf.Work) as store:
        infos = store.history(trace, limit=1000)  # newest first
        latest_tasks = latest_saved = 0
        for number, info in enumerate(infos):
            checkpoint = store.load(info.checkpoint_id, HASH)
            assert checkpoint is not None
            cursor = Cursor.from_stored(checkpoint.current_node, checkpoint.cursor, GRAPH)
            if number == 0:  # the latest: only the tasks with a saved output are done
                done = {
                    write.task_id
                    for write in store.load_writes(info.checkpoint_id)
                    if write.index == OUTPUT_INDEX
                }
                latest_tasks, latest_saved = len(cursor.tasks), len(done)
            else:  # a later checkpoint exists: every task of this superstep finished
                done = {task.id for task in cursor.tasks}
            for task in cursor.tasks:
                if task.id in done:
                    key = node_context(
                        trace, checkpoint.checkpoint_id, checkpoint.step, 0, task.node, task.id
                    ).idempotency_key
                    keys.add(key)
    return keys, latest_tasks, latest_saved


def logged(side_effects: Path, trace: str) -> list[tuple[str, str]]:
    """``(task id, key)`` of every task run of the trace, in the order they started."""
    if not side_effects.exists():
        return []
    lines = [line.split(" ") for line in side_effects.read_text(encoding="utf-8").splitlines()]
    return [(task, key) for name, task, key in lines if name == trace]


@pytest.mark.slow
def test_sigkilled_parallel_workflow_resumes_and_runs_finished_branches_once(
    store_url: str, tmp_path: Path
) -> None:
    side_effects = tmp_path / "side-effects.txt"
    rng = random.Random(f"parallel-crash/{store_url.split(':')[0]}")
    reference = uninterrupted()
    in_flight: Counter[str] = Counter()  # key -> kills that caught its task running
    kills = several_in_flight = partly_saved = 0
    finished: list[str] = []
    trace_number = 0
    # At least KILLS kills, and more (up to 4 times as many) until some caught several
    # branches running and some left a superstep partly saved.
    while kills < KILLS or (not (several_in_flight and partly_saved) and kills < 4 * KILLS):
        trace = f"crash/{trace_number}"
        command = [
            sys.executable,
            "-m",
            "tests.graph.parallel_crash_workflow",
            store_url,
            trace,
            str(side_effects),
        ]
        child = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
        # Some kills land while the child starts, most in the middle of a superstep.
        time.sleep(rng.uniform(0.4, 2.0))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        if child.returncode == 0:
            status, _, state = out.strip().partition(" ")
            assert status == "done"
            assert json.loads(state) == reference
            finished.append(trace)
            trace_number += 1
            continue
        assert child.returncode == -signal.SIGKILL
        kills += 1
        done, tasks, saved = durable(store_url, trace)
        flight = {key for _, key in logged(side_effects, trace)} - done
        in_flight.update(flight)
        several_in_flight += len(flight) >= 2
        partly_saved += 0 < saved < tasks
    # Let the last trace finish (a finished trace resumes to "done" at once).
    while f"crash/{trace_number}" not in finished:
        trace = f"crash/{trace_number}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.graph.parallel_crash_workflow",
                store_url,
                trace,
                str(side_effects),
            ],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        status, _, state = result.stdout.strip().partition(" ")
        assert (status, json.loads(state)) == ("done", reference)
        finished.append(trace)

    # The kills caught parallel branches running, and left supersteps half saved.
    assert several_in_flight >= 1
    assert partly_saved >= 1

    for trace in finished:
        with SyncCheckpointStore.open(store_url, wf.Work) as store:
            latest = store.load_latest(trace, HASH)
            history = store.history(trace, limit=100)
        assert latest is not None
        assert latest.state == reference
        assert [info.step for info in history] == [5, 4, 3, 2, 1, 0]  # one per superstep
        runs = logged(side_effects, trace)
        assert {task for task, _ in runs} == TASKS
        # One key per task, the same at every rerun, and no two tasks share one.
        keys: dict[str, set[str]] = {}
        for task, key in runs:
            keys.setdefault(task, set()).add(key)
        assert all(len(found) == 1 for found in keys.values()), keys
        assert len({key for found in keys.values() for key in found}) == len(TASKS)
        for key, count in Counter(key for _, key in runs).items():
            assert count - 1 <= in_flight[key], f"{trace}: a task ran {count} times"
            if key not in in_flight:
                assert count == 1
