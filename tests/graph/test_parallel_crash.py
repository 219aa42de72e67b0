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
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowpoint import SyncCheckpointStore
from flowpoint.graph._context import node_context
from flowpoint.graph._cursor import Cursor
from flowpoint.graph._runner import OUTPUT_INDEX
from tests.graph import parallel_crash_workflow as wf
from tests.graph.support_crash import (
    KILLS,
    assert_reruns_only_in_flight,
    kill_numbered_traces,
    run_to_end,
    side_effect_lines,
    uninterrupted,
    workflow_command,
)

GRAPH = wf.build(wf.Effects(None, ""))
HASH = GRAPH.hash_u64()
TASKS = {"plan", *wf.BRANCHES, "split", *(f"summarise#{i}" for i in range(wf.ITEMS)), "reduce"}


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
    return [(task, key) for name, task, key in side_effect_lines(side_effects) if name == trace]


def workflow(url: str, trace: str, side_effects: Path) -> list[str]:
    return workflow_command("tests.graph.parallel_crash_workflow", url, trace, str(side_effects))


@pytest.mark.slow
def test_sigkilled_parallel_workflow_resumes_and_runs_finished_branches_once(
    store_url: str, tmp_path: Path
) -> None:
    side_effects = tmp_path / "side-effects.txt"
    rng = random.Random(f"parallel-crash/{store_url.split(':')[0]}")
    reference = uninterrupted(GRAPH, wf.initial(), "reference")
    in_flight: Counter[str] = Counter()  # key -> kills that caught its task running
    several_in_flight = partly_saved = 0
    finished: list[str] = []
    killed = kill_numbered_traces(
        lambda trace: workflow(store_url, trace, side_effects),
        # Some kills land while the child starts, most in the middle of a superstep.
        lambda: rng.uniform(0.4, 2.0),
        reference,
        finished,
    )
    for kills, trace in enumerate(killed, start=1):
        done, tasks, saved = durable(store_url, trace)
        flight = {key for _, key in logged(side_effects, trace)} - done
        in_flight.update(flight)
        several_in_flight += len(flight) >= 2
        partly_saved += 0 < saved < tasks
        # At least KILLS kills, and more (up to 4 times as many) until some caught
        # several branches running and some left a superstep partly saved.
        if kills >= KILLS and ((several_in_flight and partly_saved) or kills >= 4 * KILLS):
            break
    # Let the last trace finish (a finished trace resumes to "done" at once).
    assert run_to_end(workflow(store_url, trace, side_effects)) == reference
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
        assert_reruns_only_in_flight((key for _, key in runs), in_flight, f"{trace}: a task")
