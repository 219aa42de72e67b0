"""Saves checkpoints of many traces at once on PostgreSQL until it is killed.

Run as ``python -m tests.stores.group_commit_child URL``. :data:`WRITERS` tasks
each save their own trace's steps one after another, so that saves are always in
flight together and the store commits them in batches. Each save, once
acknowledged, is printed as ``saved <checkpoint id hex>``; each batch the store
sends as ``batch <rows>``. On start each writer goes on from its trace's latest step.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from flowpoint.blob import CheckpointBlob
from flowpoint.stores.postgres import PostgresBlobStore
from tests.blobs import make_blob

WRITERS = 16


def data_of(trace: str, step: int) -> bytes:
    """What the checkpoint of ``trace`` at ``step`` holds: a few hundred bytes."""
    return f"{trace}:{step};".encode() * 40


def blob_of(trace: str, step: int) -> CheckpointBlob:
    return make_blob(trace, step, data=data_of(trace, step))


async def main(url: str) -> None:
    async with PostgresBlobStore.from_url(url, max_size=4) as store:
        await store.setup()
        commit = store._group_commit._commit

        async def reported(rows: list[Any]) -> Any:
            print(f"batch {len(rows)}", flush=True)
            return await commit(rows)

        store._group_commit._commit = reported

        async def writer(trace: str) -> None:
            latest = await store.load_latest(trace)
            step = 0 if latest is None else latest.step + 1
            while True:
                blob = blob_of(trace, step)
                await store.save(blob)
                print(f"saved {blob.checkpoint_id.hex}", flush=True)
                step += 1

        await asyncio.gather(*(writer(f"writer-{n}") for n in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
