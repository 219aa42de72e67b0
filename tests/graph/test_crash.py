"""A workflow SIGKILLed in the middle of its nodes resumes in a new process and finishes.

At-least-once: a node that was running when its process died runs again on resume
(its side effect happens twice). Every node that finished and was checkpointed
never runs again, and the final state is the state of an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from flowpoint import SyncCheckpointStore
from tests.graph import crash_workflow as wf
from tests.graph.support_crash import (
    ENV,
    KILLS,
    ROOT,
    finished_state,
    run_killed_after,
    run_to_end,
    side_effect_lines,
    uninterrupted,
    workflow_command,
)

HASH = wf.build(None).hash_u64()


def in_flight(url: str) -> tuple[str, int] | None:
    """The node (and its visit) the latest checkpoint says runs next, if any."""
    with SyncCheckpointStore.open(url) as store:
        latest = store.load_latest(wf.TRACE, HASH)
    if latest is None or latest.current_node is None:
        return None
    return latest.current_node, wf.visit_of(latest.state, latest.current_node)


@pytest.mark.slow
def test_sigkilled_workflow_resumes_in_a_new_process(tmp_path: Path) -> None:
    db, side_effects = tmp_path / "runs.db", tmp_path / "side-effects.txt"
    url = f"sqlite:///{db}"
    command = workflow_command("tests.graph.crash_workflow", str(db), str(side_effects))
    rng = random.Random("graph-crash")
    killed_in_flight: Counter[tuple[str, int]] = Counter()
    kills = 0
    output: str | None = None
    for _ in range(KILLS):
        # Some kills land while the child starts up, most in the middle of a node.
        output = run_killed_after(command, rng.uniform(0.05, 0.9))
        if output is not None:
            break
        kills += 1
        flight = in_flight(url)
        if flight is not None:
            killed_in_flight[flight] += 1
    assert kills >= 3  # the test did kill the workflow, more than once
    # Then let it finish (a finished trace resumes to "done" at once).
    state = run_to_end(command) if output is None else finished_state(output)
    reference = uninterrupted(wf.build(None), wf.initial(), "ref")
    assert state == json.loads(json.dumps(reference))

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
    lines = side_effect_lines(side_effects)
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
