"""Stores to point the command line at, and two ways to run it: in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from flowpoint import Checkpoint, KeyRing, SyncCheckpointStore
from flowpoint.cli.app import app
from flowpoint.cli.demo import run_demo

GRAPH = 0x5EA7C0DE0BADF00D
TRACES = {"alpha": 3, "beta/one": 2}
"""The traces of :func:`make_store`, and how many checkpoints each holds."""


@pytest.fixture(autouse=True)
def _no_global_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's environment must not choose the store or the key ring of a test."""
    monkeypatch.delenv("FLOWPOINT_STORE", raising=False)
    monkeypatch.delenv("FLOWPOINT_KEYRING", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)


def invoke(*args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> Result:
    """Run ``flowpoint ARGS`` in this process."""
    return CliRunner().invoke(app, list(args), env=env, input=input)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def flowpoint(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input: bytes = b""
) -> Finished:
    """Run ``python -m flowpoint.cli ARGS`` as a subprocess (text output)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FLOWPOINT_STORE", "FLOWPOINT_KEYRING")
    }
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "flowpoint.cli", *args],
        cwd=cwd,
        env=environment,
        input=input,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode())


def flowpoint_bytes(*args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m flowpoint.cli ARGS`` as a subprocess, stdout kept as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "flowpoint.cli", *args],
        input=input,
        capture_output=True,
        timeout=120,
        check=False,
    )


def parse_json(text: str) -> Any:
    return json.loads(text)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_store(
    url: str,
    traces: dict[str, int] = TRACES,
    ring: KeyRing | None = None,
) -> dict[str, list[UUID]]:
    """Save small dict states in ``traces``; return each trace's checkpoint ids by step."""
    options: dict[str, Any] = {} if ring is None else {"encryption": ring}
    ids: dict[str, list[UUID]] = {}
    with SyncCheckpointStore.open(url, dict, **options) as store:
        for trace, count in traces.items():
            checkpoint = Checkpoint.first(
                "step-1", {"count": 0, "items": [], "name": trace}, metadata={"source": "test"}
            )
            store.save_with_trace(trace, checkpoint, GRAPH)
            ids[trace] = [checkpoint.checkpoint_id]
            for step in range(1, count):
                state = {"count": step, "items": list(range(step)), "name": trace}
                node = None if step == count - 1 else f"step-{step + 1}"
                checkpoint = checkpoint.child(node, state, metadata={"source": "test", "n": step})
                store.save_with_trace(trace, checkpoint, GRAPH)
                ids[trace].append(checkpoint.checkpoint_id)
    return ids


def run_demo_quietly(url: str) -> None:
    asyncio.run(run_demo(url, Console(file=io.StringIO())))


@dataclass
class Seeded:
    """A SQLite store holding :data:`TRACES`."""

    path: Path
    url: str
    ids: dict[str, list[UUID]]


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    path = tmp_path / "store.db"
    url = sqlite_url(path)
    return Seeded(path, url, make_store(url))


def damage_sqlite(path: Path, checkpoint_id: UUID) -> None:
    """Flip a byte in the middle of a checkpoint's data, underneath the store."""
    with closing(sqlite3.connect(path)) as conn, conn:
        (data,) = conn.execute(
            "SELECT data FROM flowpoint_checkpoints WHERE checkpoint_id = ?",
            (checkpoint_id.bytes,),
        ).fetchone()
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0xFF
        updated = conn.execute(
            "UPDATE flowpoint_checkpoints SET data = ? WHERE checkpoint_id = ?",
            (bytes(damaged), checkpoint_id.bytes),
        )
        assert updated.rowcount == 1


def write_keyring(path: Path, keys: dict[str, bytes], primary: str) -> Path:
    document = {
        "primary": primary,
        "keys": {key_id: base64.b64encode(key).decode() for key_id, key in keys.items()},
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def one_line_error(stderr: str) -> str:
    """The single ``error: ...`` line of a failed command."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def usage_error(stderr: str) -> str:
    """The text of typer's boxed usage error, box and line breaks removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())
