"""``flowpoint runs`` and ``flowpoint worker``: a run queue from the command line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowpoint import RunQueue, TypedCheckpointStore
from flowpoint.cli._output import ExitCode
from flowpoint.codec import KeyRing, SerdeCheckpointCodec
from flowpoint.errors import CodecError
from flowpoint.queue._base import RunStatus, Settlement
from tests.cli.conftest import invoke, sqlite_url
from tests.queue import graphs

ROOT = Path(__file__).resolve().parents[2]


def make_queue(url: str) -> None:
    """Three runs: one failed with a long error, one queued, one no worker serves."""

    async def fill() -> None:
        async with RunQueue.open(url) as queue:
            await queue.submit(graphs.SERVED, "broken", graphs.start())
            await queue.submit(graphs.SERVED, "waiting", graphs.start(), priority=-1)
            await queue.submit(graphs.approval(), "unserved", {"ticket": 1}, priority=-2)
            await queue._heartbeat("w1", "host", 1, [graphs.SERVED.hash_u64()], 600.0, [])
            [claim] = await queue._claim("w1", [graphs.SERVED.hash_u64()], 1, 600.0)
            error = "builtins.ValueError: " + "x" * 200
            await queue._settle(claim, Settlement(RunStatus.FAILED, 0, error))

    asyncio.run(fill())


def test_runs_shows_the_queue_readably(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    make_queue(url)
    result = invoke("runs", "--store", url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"3 run(s) in {url}"
    assert [line.split()[:2] for line in lines[3:]] == [
        ["broken", "failed"],
        ["waiting", "queued"],
        ["unserved", "queued"],
    ]
    assert "builtins.ValueError: xxx" in result.output
    assert "x" * 100 not in result.output  # a long error is cut short in the table
    result = invoke("runs", "--store", url, "--status", "queued")
    assert [line.split()[0] for line in result.output.splitlines()[3:]] == ["waiting", "unserved"]


def test_runs_lists_the_stranded_runs(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    make_queue(url)
    result = invoke("runs", "--store", url, "--stranded")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"1 stranded run(s) in {url}"
    assert result.output.splitlines()[3].split()[:3] == ["unserved", "queued", "approval"]


def test_runs_as_json(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    make_queue(url)
    result = invoke("runs", "--store", url, "--json", "--status", "failed")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    [failed] = document["runs"]
    assert document["store"] == url
    assert failed["trace_id"] == "broken"
    assert (failed["status"], failed["epoch"], failed["owner"]) == ("failed", 1, None)
    assert failed["graph_hash"] == f"0x{graphs.SERVED.hash_u64():016x}"
    assert failed["error"] == "builtins.ValueError: " + "x" * 200


def test_runs_refuses_bad_input(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    missing = invoke("runs", "--store", sqlite_url(tmp_path / "typo.db"))
    assert missing.exit_code == ExitCode.ERROR
    assert "does not exist" in missing.output
    assert not (tmp_path / "typo.db").exists()
    make_queue(url)
    status = invoke("runs", "--store", url, "--status", "paused")
    assert status.exit_code == ExitCode.ERROR
    assert "unknown run status 'paused'" in status.output
    both = invoke("runs", "--store", url, "--status", "queued", "--stranded")
    assert both.exit_code == ExitCode.USAGE
    other = invoke("runs", "--store", "memory://")
    assert other.exit_code == ExitCode.ERROR
    assert "a run queue lives in SQLite" in other.output


def serve_until(url: str, target: str, expected: list[str], *options: str) -> str:
    """Run ``flowpoint worker TARGET`` until the runs have ``expected`` statuses; its stderr."""

    async def statuses() -> list[str]:
        async with RunQueue.open(url) as queue:
            return [run.status.value for run in await queue.runs()]

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.pop("FLOWPOINT_STORE", None)
    env.pop("FLOWPOINT_KEYRING", None)
    command = [sys.executable, "-m", "flowpoint.cli", "worker", target]
    child = subprocess.Popen(
        [*command, "--store", url, "--concurrency", "2", *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while asyncio.run(statuses()) != expected:
            assert time.monotonic() < deadline, "the worker never finished the runs"
            time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    return stderr


def test_worker_serves_the_queue_until_sigterm(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")

    async def submit() -> None:
        async with RunQueue.open(url) as queue:
            for n in range(3):
                await queue.submit(graphs.SERVED, f"t{n}", graphs.start(n))

    asyncio.run(submit())
    stderr = serve_until(url, "tests.queue.graphs:SERVED", ["done"] * 3)
    assert f"serves chain (0x{graphs.SERVED.hash_u64():016x}) from {url}" in stderr
    assert "run 't0' epoch 1: done" in stderr


def test_worker_applies_the_interrupts_of_a_runner(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")

    async def submit() -> None:
        async with RunQueue.open(url) as queue:
            await queue.submit(graphs.approval(), "ticket", {"ticket": 7})

    asyncio.run(submit())
    stderr = serve_until(url, "tests.queue.graphs:APPROVAL_RUNNER", ["interrupted"])
    assert "run 'ticket' epoch 1: interrupted" in stderr


def test_worker_with_a_keyring_serves_an_encrypted_queue(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    ring = KeyRing({"k1": bytes(range(32))}, primary="k1")
    ring_file = tmp_path / "ring.json"
    ring_file.write_text(
        json.dumps({"primary": "k1", "keys": {"k1": base64.b64encode(bytes(range(32))).decode()}})
    )
    sealed = SerdeCheckpointCodec(encryption=ring)

    async def submit() -> None:
        async with RunQueue.open(url, codec=sealed) as queue:
            for n in range(2):
                await queue.submit(graphs.SERVED, f"t{n}", graphs.start(n))

    asyncio.run(submit())
    stderr = serve_until(
        url, "tests.queue.graphs:SERVED", ["done"] * 2, "--keyring", str(ring_file)
    )
    assert "encrypting with key 'k1'" in stderr

    async def stored() -> None:
        async with RunQueue.open(url, codec=sealed) as queue:
            state_type = graphs.SERVED.state_type
            opened = TypedCheckpointStore(queue.store, sealed.for_state(state_type))
            latest = await opened.load_latest("t1", graphs.SERVED.hash_u64())
            assert latest is not None
            assert latest.state["visited"] == list(graphs.NODES)
            stock = SerdeCheckpointCodec(state_type)
            history = await queue.store.history("t1")
            assert len(history) == len(graphs.NODES) + 1
            for info in history:  # what the worker saved is encrypted too
                blob = await queue.store.load(info.checkpoint_id)
                assert blob is not None
                with pytest.raises(CodecError, match="encrypted with key 'k1'"):
                    stock.deserialize(blob, graphs.SERVED.hash_u64())

    asyncio.run(stored())


def test_worker_refuses_a_bad_keyring_before_it_starts(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    bad = tmp_path / "ring.json"
    bad.write_text('{"primary": "k1", "keys": {"k1": "not base64!"}}')
    result = invoke("worker", "tests.queue.graphs:SERVED", "--store", url, "--keyring", str(bad))
    assert result.exit_code == ExitCode.ERROR
    assert "key 'k1' is not a base64 string" in result.output
    missing = invoke(
        "worker", "tests.queue.graphs:SERVED", "--store", url, "--keyring", str(tmp_path / "no")
    )
    assert missing.exit_code == ExitCode.ERROR
    assert "cannot read key ring" in missing.output
    assert not (tmp_path / "runs.db").exists()  # nothing was opened


def test_worker_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "runs.db")
    result = invoke("worker", "tests.queue.graphs:nothing_here", "--store", url)
    assert result.exit_code == ExitCode.USAGE
    assert "has no 'nothing_here'" in result.output
    result = invoke("worker", "tests.queue.graphs:NODES", "--store", url)
    assert result.exit_code == ExitCode.USAGE
    assert "not a Graph, BuiltGraph or Runner" in result.output
