"""interrupt() across processes: SIGKILLed while paused, or while an answer is being run.

The answers are stored in the checkpoints, so a new process goes on from them, and
the final state is the state of a run that was never interrupted by a kill.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flowpoint import InMemoryBlobStore, Runner
from tests.graph import interrupt_workflow as wf
from tests.graph.test_crash import ENV, ROOT

QUESTION = {"ask": "approve?", "items": ["wal", "fsync"]}


def uninterrupted() -> dict[str, Any]:
    """The state of the workflow answered in one process, with no kill."""

    async def run() -> dict[str, Any]:
        runner = Runner(wf.build(None), InMemoryBlobStore())
        await runner.run("ref", {"items": []})
        await runner.resume("ref", value=wf.FIRST)
        result = await runner.resume("ref", value=wf.SECOND)
        assert result.status == "done"
        state: dict[str, Any] = result.state
        return state

    return asyncio.run(run())


def command(db: Path, marks: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.graph.interrupt_workflow", str(db), str(marks), *args]


def workflow(db: Path, marks: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        command(db, marks, *args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def marks_of(marks: Path) -> list[list[str]]:
    return [line.split(" ") for line in marks.read_text(encoding="ascii").splitlines()]


def paused_and_killed(db: Path, marks: Path) -> dict[str, Any]:
    """Start the trace; once it has paused and waits for its human, SIGKILL the process."""
    waiting = subprocess.Popen(
        command(db, marks, "run"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert waiting.stdout is not None
    paused: dict[str, Any] = json.loads(waiting.stdout.readline())
    assert waiting.poll() is None  # still waiting
    waiting.send_signal(signal.SIGKILL)
    assert waiting.wait() == -signal.SIGKILL
    waiting.stdout.close()
    return paused


def test_a_run_killed_while_it_waits_on_interrupt_is_answered_by_a_new_process(
    tmp_path: Path,
) -> None:
    db, marks = tmp_path / "runs.db", tmp_path / "marks.txt"
    paused = paused_and_killed(db, marks)
    assert (paused["status"], paused["interrupt"]) == ("interrupted", QUESTION)
    second = workflow(db, marks, "answer", json.dumps(wf.FIRST))
    assert (second["status"], second["interrupt"]) == ("interrupted", {"ask": "title?"})
    done = workflow(db, marks, "answer", json.dumps(wf.SECOND))
    assert done["status"] == "done"
    assert done["state"] == uninterrupted()
    # review ran three times, in three processes, each from the checkpoint before it.
    assert [event for event, _ in marks_of(marks)] == [
        "started",
        "started",
        "answered",
        "started",
        "answered",
    ]


def test_a_kill_while_an_answer_runs_keeps_the_answer(tmp_path: Path) -> None:
    """Killed between its two questions, the node goes on from the stored first answer."""
    db, marks = tmp_path / "runs.db", tmp_path / "marks.txt"
    paused_and_killed(db, marks)
    answering = subprocess.Popen(
        command(db, marks, "answer-slow", json.dumps(wf.FIRST)), cwd=ROOT, env=ENV
    )
    deadline = time.monotonic() + 60
    while answering.poll() is None and time.monotonic() < deadline:
        if marks.exists() and "answered" in marks.read_text(encoding="ascii"):
            break
        time.sleep(0.02)
    assert [event for event, _ in marks_of(marks)] == ["started", "started", "answered"]
    answering.send_signal(signal.SIGKILL)
    assert answering.wait() == -signal.SIGKILL

    # No value: the stored first answer carries the node to its second question.
    asked = workflow(db, marks, "resume")
    assert (asked["status"], asked["interrupt"]) == ("interrupted", {"ask": "title?"})
    # Asked again without an answer, it stays where it is.
    assert workflow(db, marks, "resume")["interrupt"] == {"ask": "title?"}
    done = workflow(db, marks, "answer", json.dumps(wf.SECOND))
    assert done["status"] == "done"
    assert done["state"] == uninterrupted()
    # The killed run and the one that took over ran from the same checkpoint: the
    # same idempotency key, so a side effect keyed on it happens once.
    killed, rerun = marks_of(marks)[1:3], marks_of(marks)[3:5]
    assert [event for event, _ in rerun] == ["started", "answered"]
    assert {key for _, key in killed} == {key for _, key in rerun}
