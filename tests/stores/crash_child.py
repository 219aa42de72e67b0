"""Saves checkpoints in a loop until it is killed; resumes from the latest on start.

Run as ``python -m tests.stores.crash_child URL``. Each checkpoint's state holds its
step and a few KB of text, so a kill lands in the middle of writes as often as not.
After each checkpoint it saves :data:`CALLS` calls of pending writes against it, one
task each; on start it sends the latest checkpoint's writes again, as a rerun would.
"""

from __future__ import annotations

import sys

from flowpoint import Checkpoint, SyncCheckpointStore
from flowpoint.blob import PendingWrite
from flowpoint.stores._base import run_in_caller_thread

GRAPH = 0x5EED
TRACE = "crash/trace"
CALLS = 3
WRITES_PER_CALL = 4


def writes_of(checkpoint: Checkpoint, call: int) -> list[PendingWrite]:
    """The writes of one call: task ``call``, indexes 0 to 3, each a few KB."""
    return [
        PendingWrite(
            TRACE,
            checkpoint.checkpoint_id,
            f"task {call}",
            index,
            f"{checkpoint.step}:{call}:{index} ".encode() * 300,
        )
        for index in range(WRITES_PER_CALL)
    ]


def main(url: str) -> None:
    with SyncCheckpointStore.open(url) as store:
        blobs = store.store.store  # file and SQLite stores run in this thread

        def save_writes(checkpoint: Checkpoint) -> None:
            for call in range(CALLS):
                run_in_caller_thread(blobs.save_writes(writes_of(checkpoint, call)))

        latest = store.load_latest(TRACE, GRAPH)
        if latest is None:
            latest = Checkpoint.first("work", {"step": 0, "text": "start"})
            store.save_with_trace(TRACE, latest, GRAPH)
        save_writes(latest)
        while True:
            step = latest.step + 1
            latest = latest.child("work", {"step": step, "text": f"step {step} " * 400})
            store.save_with_trace(TRACE, latest, GRAPH)
            save_writes(latest)


if __name__ == "__main__":
    main(sys.argv[1])
