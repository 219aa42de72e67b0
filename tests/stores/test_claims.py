"""A file-store save killed between claiming its id and publishing its record blocks nothing.

Its claim is left behind (a link to a record that is not there): the next save of
the checkpoint takes it over, while a save still in flight keeps its claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowpoint import CheckpointConflict
from flowpoint.stores.file import FileBlobStore, trace_dir_name
from tests.stores.claim_child import the_blob

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


@contextlib.contextmanager
def child_saving(root: Path, how: str) -> Iterator[subprocess.Popen[str]]:
    """A child saving :func:`the_blob` that stops (or dies) once it has claimed the id."""
    with subprocess.Popen(
        [sys.executable, "-m", "tests.stores.claim_child", str(root), how],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "claimed\n"
            yield child
        finally:
            if child.poll() is None:
                child.kill()


def id_link(root: Path) -> Path:
    hex_id = the_blob().checkpoint_id.hex
    return root / "ids" / hex_id[-2:] / hex_id


async def test_a_save_killed_after_its_claim_does_not_block_the_rerun(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with child_saving(root, "kill") as child:
        assert child.wait() == -signal.SIGKILL
    # What the kill left: the claim, and no record.
    assert id_link(root).is_symlink()
    assert not id_link(root).exists()
    blob = the_blob()
    async with FileBlobStore(root) as store:
        assert await store.load(blob.checkpoint_id) is None
        assert await store.history("claims") == []
        await store.save(blob)  # the rerun (as `flowpoint copy` or `import` does) succeeds
        assert await store.load(blob.checkpoint_id) == blob
        assert await store.ids_with_prefix(str(blob.checkpoint_id)) == [blob.checkpoint_id]
        with pytest.raises(CheckpointConflict, match="exists"):
            await store.save(blob)  # and the id is taken now


async def test_a_save_in_flight_keeps_its_claim(tmp_path: Path) -> None:
    root = tmp_path / "store"
    blob = the_blob()
    async with FileBlobStore(root) as store:
        with child_saving(root, "stop") as child:
            # Another saver of the same checkpoint waits for the one in flight...
            second = asyncio.create_task(store.save(blob))
            await asyncio.sleep(0.5)
            assert not second.done()
            child.send_signal(signal.SIGCONT)
            assert child.wait() == 0
            assert child.stdout is not None
            assert child.stdout.read() == "saved\n"
        # ...which wins; the second sees its claim, and stores nothing.
        with pytest.raises(CheckpointConflict, match="exists"):
            await second
        assert await store.history("claims") == [blob.info()]


async def test_a_save_waiting_on_one_that_dies_takes_its_claim_over(tmp_path: Path) -> None:
    root = tmp_path / "store"
    blob = the_blob()
    async with FileBlobStore(root) as store:
        with child_saving(root, "stop") as child:
            second = asyncio.create_task(store.save(blob))
            await asyncio.sleep(0.5)
            assert not second.done()
            child.kill()  # dies while stopped, its claim made, its record not published
            assert child.wait() == -signal.SIGKILL
        await second
        assert await store.load(blob.checkpoint_id) == blob
        target = f"../../traces/{trace_dir_name('claims')}/{blob.step:020d}.ckpt"
        assert os.readlink(id_link(root)) == target
