"""Saves checkpoints in a loop until it is killed; resumes from the latest on start.

Run as ``python -m tests.stores.crash_child URL``. Each checkpoint's state holds its
step and a few KB of text, so a kill lands in the middle of writes as often as not.
"""

from __future__ import annotations

import sys

from flowpoint import Checkpoint, SyncCheckpointStore

GRAPH = 0x5EED
TRACE = "crash/trace"


def main(url: str) -> None:
    with SyncCheckpointStore.open(url) as store:
        latest = store.load_latest(TRACE, GRAPH)
        if latest is None:
            latest = Checkpoint.first("work", {"step": 0, "text": "start"})
            store.save_with_trace(TRACE, latest, GRAPH)
        while True:
            step = latest.step + 1
            latest = latest.child("work", {"step": step, "text": f"step {step} " * 400})
            store.save_with_trace(TRACE, latest, GRAPH)


if __name__ == "__main__":
    main(sys.argv[1])
