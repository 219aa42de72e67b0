"""A workflow SIGKILLed in the middle of its nodes resumes in a new process and finishes.

At-least-once: a node that was running when its process died runs again on resume
(its side effect happens twice). Every node that finished and was checkpointed
never runs again, and the final state is the state of an uninterrupted run.
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
from tests.graph import crash_workflow as wf

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWPOINT_GRAPH_CRASH_KILLS", "10"))
HASH = wf.build(None).hash_u64()
# The children import this tree's flowpoint, whatever the environment has installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def in_flight(url: str) -> tuple[str, int] | None:
    """The node (and its visit) the latest checkpoint says runs next, if any."""
    with SyncCheckpointStore.open(url) as store:
        latest = store.load_latest(wf.TRACE, HASH)
    if latest is None or latest.current_node is None:
        return None
    return latest.current_node, wf.visit_of(latest.state, latest.current_node)


def uninterrupted() -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        result = await Runner(wf.build(None), InMemoryBlobStore()).run("ref", wf.initial())
        state: dict[str, Any] = result.state
        return state

    return asyncio.run(run())


@pytest.mark.slow
def test_sigkilled_workflow_resumes_in_a_new_process(tmp_path: Path) -> None:
    db, side_effects = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    url = f"sqlite:///{db}"
    command = [sys.executable, "-m", "tests.graph.crash_workflow", str(db), str(side_effects)]
    rng = random.Random("graph-crash")
    killed_in_flight: Counter[tuple[str, int]] = Counter()
    kills = 0
    outputs: list[str] = []
    for _ in range(KILLS):
        child = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
        # Some kills land while the child starts up, most in the middle of a node.
        time.sleep(rng.uniform(0.05, 0.9))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        out, _ = child.communicate()
        if child.returncode == 0:
            outputs.append(out)
            break
        assert child.returncode == -signal.SIGKILL
        flight = in_flight(url)
        if flight is not None:
            killed_in_flight[flight] += 1
    assert kills >= 3  # the test did kill the workflow, more than once
    # Then let it finish (a finished trace resumes to "done" at once).
    while not outputs:
        finished = subprocess.run(
            command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False
        )
        assert finished.returncode == 0, finished.stderr
        outputs.append(finished.stdout)
    status, _, state_json = outputs[-1].strip().partition(" ")
    assert status == "done"
    reference = uninterrupted()
    assert json.loads(state_json) == json.loads(json.dumps(reference))

    # The stored trace: one checkpoint per node run, in the order of an uninterrupted run.
    with SyncCheckpointStore.open(url) as store:
        infos = store.history(wf.TRACE, limit=1000)
        final = store.load_latest(wf.TRACE, HASH)
    assert final is not None
    assert final.state == reference
    assert [info.step for info in infos] == list(range(len(reference["log"]), -1, -1))
    ran = [str(info.metadata.get("node")) for info in reversed(infos[:-1])]
    assert ran == [entry.split("#")[0] for entry in reference["log"]]

    # Side effects: every node run of the reference happened; only a node in flight
    # at a kill happened twice (or more, if several kills caught it in flight).
    lines = [line.split(" ") for line in side_effects.read_text(encoding="ascii").splitlines()]
    seen = Counter((name, int(visit)) for name, visit, _ in lines)
    # A node run again after a kill got the key of the run it repeats; no other run did.
    keys: dict[tuple[str, int], set[str]] = {}
    for name, visit, key in lines:
        keys.setdefault((name, int(visit)), set()).add(key)
    assert all(len(same) == 1 for same in keys.values())
    assert len(set.union(*keys.values())) == len(keys)
    expected = {(entry.split("#")[0], int(entry.split("#")[1])) for entry in reference["log"]}
    assert set(seen) == expected
    repeats = {key: count - 1 for key, count in seen.items() if count > 1}
    for key, extra in repeats.items():
        assert extra <= killed_in_flight[key], f"{key} ran {extra + 1} times"
    assert sum(repeats.values()) <= kills
    # Every node that finished before a kill (never in flight at one) ran exactly once.
    for key, count in seen.items():
        if key not in killed_in_flight:
            assert count == 1, f"{key} ran {count} times"


def test_a_human_update_survives_a_kill_in_the_next_node(tmp_path: Path) -> None:
    """The update's checkpoint records that the pause was passed: no second pause."""
    db, started = tmp_path / "approval.db", tmp_path / "send-started"

    def workflow(*args: str) -> list[str]:
        command = [sys.executable, "-m", "tests.graph.approval_workflow", str(db), *args]
        done = subprocess.run(
            command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split(" ", 2)

    assert workflow("run")[:2] == ["interrupted", "send"]
    approving = subprocess.Popen(
        [sys.executable, "-m", "tests.graph.approval_workflow", str(db), "approve", str(started)],
        cwd=ROOT,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and approving.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started.exists(), "send never started"
    approving.send_signal(signal.SIGKILL)
    assert approving.wait() == -signal.SIGKILL

    status, next_node, state = workflow("resume")
    assert (status, next_node) == ("done", "None")
    # send ran again, in another process, under the key its killed run had.
    key = started.read_text(encoding="ascii")
    assert json.loads(state) == {"approved": True, "draft": "hello", "sent": True, "key": key}
