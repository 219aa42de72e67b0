"""A workflow SIGKILLed inside its subgraph resumes inside it, in a new process.

The workflow (tests/graph/subgraph_crash_workflow.py) runs a three-node subgraph
twice in a loop. Every node records a side effect when it starts. After each
kill the test reads the store: a node is finished when a later checkpoint of its
trace (the parent's, or a subgraph's child trace) exists; a node that started
and is not finished was in flight. In the end:

- every trace finishes with the state of an uninterrupted run;
- every node that finished before a kill, inside the subgraph too, ran exactly
  once: a resume goes on inside the subgraph instead of starting it again;
- a node in flight at kills ran at most once more per such kill, under the same
  idempotency key each time.
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
from pathlib import Path
from typing import Any

import pytest

from flowpoint import InMemoryBlobStore, Runner, SyncCheckpointStore
from flowpoint.graph._context import node_context
from tests.graph import subgraph_crash_workflow as wf

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWPOINT_GRAPH_CRASH_KILLS", "10"))
# The children import this tree's flowpoint, whatever the environment has installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
# Node runs of one trace: the parent's own nodes and the subgraph's, in each child trace.
PARENT_RUNS = 1 + wf.ROUNDS + 1  # plan, count per round, write
CHILD_STEPS = (1, 3)  # the steps the subgraph node runs at: after plan, after each count


def uninterrupted() -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        result = await Runner(wf.build(None), InMemoryBlobStore()).run("reference", wf.initial())
        return dict(result.state)

    return asyncio.run(run())


def finished_keys(url: str, trace: str) -> set[str]:
    """The keys of the nodes of ``trace`` and its child traces that finished."""
    keys: set[str] = set()
    with SyncCheckpointStore.open(url, wf.Work) as store:
        family = [one for one in store.traces() if one == trace or one.startswith(f"{trace}/")]
        for one in family:
            history = store.history(one, limit=1000)  # newest first
            for info in history[1:]:  # a later checkpoint exists: its node finished
                assert info.current_node is not None
                context = node_context(
                    one, info.checkpoint_id, info.step, 0, info.current_node, info.current_node
                )
                keys.add(context.idempotency_key)
    return keys


def logged(side_effects: Path, trace: str) -> list[tuple[str, str, str]]:
    """``(trace, node, key)`` of every node run of ``trace`` and its children, in order."""
    if not side_effects.exists():
        return []
    lines = [line.split(" ") for line in side_effects.read_text(encoding="utf-8").splitlines()]
    return [
        (name, node, key)
        for name, node, key in lines
        if name == trace or name.startswith(f"{trace}/")
    ]


def workflow(url: str, trace: str, side_effects: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.graph.subgraph_crash_workflow",
        url,
        trace,
        str(side_effects),
    ]


@pytest.mark.slow
def test_sigkilled_inside_a_subgraph_resumes_inside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    side_effects = tmp_path / "side-effects.txt"
    rng = random.Random("subgraph-crash")
    reference = uninterrupted()
    in_flight: Counter[str] = Counter()  # key -> kills that caught its node running
    kills = inside = 0
    finished: list[str] = []
    number = 0
    # At least KILLS kills, and more (up to 4 times as many) until some landed in a subgraph.
    while kills < KILLS or (not inside and kills < 4 * KILLS):
        trace = f"crash/{number}"
        child = subprocess.Popen(
            workflow(url, trace, side_effects), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
        )
        # Some kills land while the child starts, most inside the subgraph.
        time.sleep(rng.uniform(0.3, 2.2))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        if child.returncode == 0:
            status, _, state = out.strip().partition(" ")
            assert (status, json.loads(state)) == ("done", reference)
            finished.append(trace)
            number += 1
            continue
        assert child.returncode == -signal.SIGKILL
        kills += 1
        runs = logged(side_effects, trace)
        flight = {key for _, _, key in runs} - finished_keys(url, trace)
        in_flight.update(flight)
        inside += any(name != trace and key in flight for name, _, key in runs)
    # Let the last trace finish (a finished trace resumes to "done" at once).
    trace = f"crash/{number}"
    while trace not in finished:
        done = subprocess.run(
            workflow(url, trace, side_effects),
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        status, _, state = done.stdout.strip().partition(" ")
        assert (status, json.loads(state)) == ("done", reference)
        finished.append(trace)

    assert inside >= 1  # some kills caught a subgraph's node running

    for trace in finished:
        with SyncCheckpointStore.open(url, wf.Work) as store:
            children = sorted(one for one in store.traces() if one.startswith(f"{trace}/"))
        assert children == [f"{trace}/research@{step}" for step in CHILD_STEPS]
        runs = logged(side_effects, trace)
        expected = {(trace, "plan"), (trace, "count"), (trace, "write")} | {
            (child, node) for child in children for node in wf.CHILD_NODES
        }
        assert {(name, node) for name, node, _ in runs} == expected
        # One key per node run, the same at every rerun: the parent's count runs twice.
        keys = {key for _, _, key in runs}
        assert len(keys) == PARENT_RUNS + len(children) * len(wf.CHILD_NODES)
        for key, count in Counter(key for _, _, key in runs).items():
            assert count - 1 <= in_flight[key], f"{trace}: a node ran {count} times"
            if key not in in_flight:
                assert count == 1
