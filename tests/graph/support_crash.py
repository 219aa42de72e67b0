"""What the crash tests and the workflows they SIGKILL share.

Workflow side (in the child process): :func:`record_effect` writes a side effect
the outside world has seen, :func:`pause` sleeps a while that depends only on a
seed, and :func:`run_or_resume` runs a trace, or resumes it if it exists, and
prints the result. Test side: :func:`run_killed_after` starts a workflow and
SIGKILLs it, :func:`run_to_end` lets one finish, and :func:`uninterrupted` is
the reference state of a run no kill interrupted.
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flowpoint import BlobCheckpointStore, BuiltGraph, InMemoryBlobStore, Runner

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWPOINT_GRAPH_CRASH_KILLS", "10"))
# The children import this tree's flowpoint, whatever the environment has installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


# -- in the workflow's process ----------------------------------------------------------------


def record_effect(path: str, line: str) -> None:
    """Append ``line`` to the file at ``path``, flushed and fsynced before going on."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{line}\n")
        out.flush()
        os.fsync(out.fileno())


def pause(seed: str, low: float, high: float) -> None:
    """Sleep from ``low`` to ``high`` seconds, the same for the same ``seed``.

    Deterministic but varied: the state never depends on timing.
    """
    time.sleep(random.Random(seed).uniform(low, high))


async def run_or_resume(
    store: BlobCheckpointStore, graph: BuiltGraph[Any], trace: str, initial: Any
) -> None:
    """Run ``trace`` from ``initial``, or resume it if it is stored; print the result.

    The line printed is the status, a space, and the final state as JSON.
    """
    runner = Runner(graph, store)
    if await store.load_latest(trace) is None:
        result = await runner.run(trace, initial)
    else:
        result = await runner.resume(trace)
    print(result.status, json.dumps(result.state, sort_keys=True), flush=True)


# -- in the test's process --------------------------------------------------------------------


def workflow_command(module: str, *args: str) -> list[str]:
    """The command line running the workflow ``module`` (``tests.graph....``) with ``args``."""
    return [sys.executable, "-m", module, *args]


def run_killed_after(command: list[str], delay: float) -> str | None:
    """Start ``command``, and SIGKILL it after ``delay`` seconds unless it has finished.

    Its output if it finished by itself; ``None`` if the kill ended it.
    """
    child = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    time.sleep(delay)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    if child.returncode == 0:
        return out
    assert child.returncode == -signal.SIGKILL
    return None


def kill_numbered_traces(
    command: Callable[[str], list[str]],
    delay: Callable[[], float],
    reference: Any,
    finished: list[str],
) -> Iterator[str]:
    """Run traces ``crash/0``, ``crash/1``, ... a process at a time, each SIGKILLed after
    ``delay()`` seconds; yield the trace of every process a kill ended.

    ``command(trace)`` runs the workflow on ``trace``. A trace whose process finished
    must have reached ``reference``; it is appended to ``finished``, and the next
    trace starts. A killed trace runs again (resuming) unless the caller stops.
    """
    number = 0
    while True:
        trace = f"crash/{number}"
        out = run_killed_after(command(trace), delay())
        if out is None:
            yield trace
            continue
        assert finished_state(out) == reference
        finished.append(trace)
        number += 1


def finished_state(output: str) -> Any:
    """The final state a workflow printed; it must have printed ``done``."""
    status, _, state = output.strip().partition(" ")
    assert status == "done", output
    return json.loads(state)


def run_to_end(command: list[str]) -> Any:
    """Run ``command`` to its end (a finished trace resumes to ``done`` at once); its state."""
    done = subprocess.run(
        command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return finished_state(done.stdout)


def uninterrupted(graph: BuiltGraph[Any], initial: Any, trace: str) -> dict[str, Any]:
    """The final state of ``graph`` run from ``initial`` in this process, with no kill."""

    async def run() -> dict[str, Any]:
        result = await Runner(graph, InMemoryBlobStore()).run(trace, initial)
        return dict(result.state)

    return asyncio.run(run())


def side_effect_lines(path: Path) -> list[list[str]]:
    """The side effects recorded at ``path``, each split at its spaces; none if it is absent."""
    if not path.exists():
        return []
    return [line.split(" ") for line in path.read_text(encoding="utf-8").splitlines()]


def assert_reruns_only_in_flight(
    keys: Iterable[str], in_flight: Mapping[str, int], what: str
) -> None:
    """Each idempotency key in ``keys`` (one a run) ran at most once more per kill that
    caught it in flight, and exactly once if none did; ``what`` names the runs in errors."""
    for key, count in Counter(keys).items():
        assert count - 1 <= in_flight.get(key, 0), f"{what} ran {count} times"
        if key not in in_flight:
            assert count == 1
