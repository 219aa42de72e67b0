"""A writer SIGKILLed at random moments, many times, never leaves a corrupt store.

Nor a call of pending writes half stored: each is all there or not at all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flowpoint import Checkpoint, SyncCheckpointStore
from flowpoint.stores._base import run_in_caller_thread
from tests.stores.crash_child import CALLS, GRAPH, TRACE, WRITES_PER_CALL, writes_of

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FLOWPOINT_CRASH_KILLS", "30"))


def _check_consistent(url: str) -> int:
    """Every listed checkpoint loads, steps run 0..latest, latest matches history."""
    with SyncCheckpointStore.open(url) as store:
        infos = []
        before = None
        while page := store.history(TRACE, limit=200, before_step=before):
            infos.extend(page)
            before = page[-1].step
        latest = store.load_latest(TRACE, GRAPH)
        if latest is None:
            assert infos == []
            return -1
        assert infos[0].checkpoint_id == latest.checkpoint_id
        assert [info.step for info in infos] == list(range(latest.step, -1, -1))
        ids = {info.step: info.checkpoint_id for info in infos}
        for info in infos:
            checkpoint = store.load(info.checkpoint_id, GRAPH)
            assert checkpoint is not None
            assert checkpoint.state["step"] == info.step
            assert checkpoint.parent_id == ids.get(info.step - 1)
            _check_writes(store, checkpoint, latest=info.step == latest.step)
        return latest.step


def _check_writes(store: SyncCheckpointStore[Any], checkpoint: Checkpoint, *, latest: bool) -> None:
    """Each call's writes are all there or none; the calls there are the first ones made.

    Every checkpoint but the latest has all its calls: the writer made them before
    its next checkpoint, or sent them again when it started.
    """
    blobs = store.store.store
    loaded = run_in_caller_thread(blobs.load_writes(checkpoint.checkpoint_id))
    calls = len(loaded) // WRITES_PER_CALL
    assert loaded == [w for call in range(calls) for w in writes_of(checkpoint, call)]
    assert calls == CALLS or (latest and calls < CALLS)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["file", "sqlite"])
def test_sigkill_never_corrupts(tmp_path: Path, scheme: str) -> None:
    url = f"file://{tmp_path / 'store'}" if scheme == "file" else f"sqlite:///{tmp_path / 'c.db'}"
    rng = random.Random(f"{scheme}-crash")
    # The sources of this tree first, as in the test run itself.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    progress = []
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.stores.crash_child", url], cwd=ROOT, env=env
        )
        # Some kills land while the child starts up, most while it writes.
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        progress.append(_check_consistent(url))
    # The writer got somewhere, and never lost an acknowledged step across kills.
    assert progress[-1] > KILLS
    assert progress == sorted(progress)
