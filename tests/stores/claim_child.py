"""Saves one checkpoint to a file store, stopping or dying where a save claims its id.

Run as ``python -m tests.stores.claim_child ROOT kill|stop``. Just before the save
links its record into place (its id claimed, its record not yet published), the
process sends itself SIGKILL, or SIGSTOP (and goes on once continued). The
checkpoint is :func:`the_blob`, the same in every process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from flowpoint.blob import CheckpointBlob
from flowpoint.ids import CheckpointId
from flowpoint.stores.file import FileBlobStore
from tests.blobs import make_blob


def the_blob() -> CheckpointBlob:
    return make_blob(
        "claims",
        3,
        data=b"the record",
        checkpoint_id=CheckpointId(UUID("01a20000-0000-7000-8000-00000000c1a1")),
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def main(root: str, how: str) -> None:
    link = os.link
    sig = signal.SIGKILL if how == "kill" else signal.SIGSTOP

    def stop_before_publishing(src: Any, dst: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".ckpt"):
            print("claimed", flush=True)
            # To this very thread, which then goes no further (os.kill to the process
            # may let it run on a little before the signal takes hold).
            signal.pthread_kill(threading.get_ident(), sig)
        link(src, dst, **kwargs)

    os.link = stop_before_publishing  # type: ignore[assignment]
    asyncio.run(FileBlobStore(root).save(the_blob()))
    print("saved", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
