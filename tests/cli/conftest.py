"""Stores to point the command line at, and two ways to run it: in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from flowpoint import Checkpoint, CheckpointBlob, KeyRing, SyncCheckpointStore, open_store
from flowpoint.blob import PendingWrite
from flowpoint.cli._app import app
from flowpoint.cli._demo import run_demo
from flowpoint.ids import CheckpointId
from tests.harnesses.base import unavailable
from tests.harnesses.file import FileHarness

GRAPH = 0x5EA7C0DE0BADF00D
TRACES = {"alpha": 3, "beta/one": 2}
"""The traces of :func:`make_store`, and how many checkpoints each holds."""


@pytest.fixture(autouse=True)
def _no_global_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's environment must not choose the store or the key ring of a test."""
    monkeypatch.delenv("FLOWPOINT_STORE", raising=False)
    monkeypatch.delenv("FLOWPOINT_KEYRING", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)


POSTGRES_ADMIN_URL = os.environ.get(
    "FLOWPOINT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql

    def admin(statement: sql.Composed) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)

    name = f"flowpoint_cli_{secrets.token_hex(6)}"
    try:
        admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {exc}")
    try:
        yield urlunsplit(urlsplit(POSTGRES_ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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


def blobs_of(url: str) -> dict[UUID, CheckpointBlob]:
    """Every checkpoint of the store, loaded as stored."""

    async def load_all() -> dict[UUID, CheckpointBlob]:
        found: dict[UUID, CheckpointBlob] = {}
        async with open_store(url) as store:
            for trace in await store.traces():
                for info in await store.history(trace, limit=1000):
                    loaded = await store.load(info.checkpoint_id)
                    assert loaded is not None
                    found[info.checkpoint_id] = loaded
        return found

    return asyncio.run(load_all())


DELTA_OF = "flowpoint.delta_of"
"""The metadata key that names the checkpoint a checkpoint is stored as changes to."""


@dataclass
class Chain:
    """A trace ``chat`` whose later checkpoints are stored as changes to earlier ones."""

    url: str
    ids: list[UUID]
    states: dict[UUID, dict[str, Any]]
    delta_of: dict[UUID, UUID]
    """Each checkpoint stored as changes, and the checkpoint it is stored as changes to."""


def make_chain(url: str, ring: KeyRing | None = None, turns: int = 6) -> Chain:
    """A chat that grows by a message a turn: big enough to be stored as changes."""
    rng = random.Random(7)

    def words(count: int) -> str:
        return " ".join("".join(rng.choices("abcdefghij", k=6)) for _ in range(count))

    options: dict[str, Any] = {} if ring is None else {"encryption": ring}
    states: dict[UUID, dict[str, Any]] = {}
    with SyncCheckpointStore.open(url, dict, **options) as store:
        state: dict[str, Any] = {"profile": words(200), "messages": []}
        checkpoint = Checkpoint.first("agent", state)
        store.save_with_trace("chat", checkpoint, GRAPH)
        states[checkpoint.checkpoint_id] = state
        for _ in range(turns - 1):
            state = {**state, "messages": [*state["messages"], words(30)]}
            checkpoint = checkpoint.child("agent", state)
            store.save_with_trace("chat", checkpoint, GRAPH)
            states[checkpoint.checkpoint_id] = state
        infos = store.history("chat")
    delta_of = {
        info.checkpoint_id: UUID(str(info.metadata[DELTA_OF]))
        for info in infos
        if DELTA_OF in info.metadata
    }
    assert delta_of, "the chain holds no checkpoint stored as changes"
    return Chain(url, [info.checkpoint_id for info in reversed(infos)], states, delta_of)


def unique_start(wanted: UUID, among: list[UUID]) -> str:
    """The shortest start of ``wanted``'s id (8 characters at least) no other id has."""
    text = str(wanted)
    for length in range(8, 36):
        start = text[:length]
        if not start.endswith("-") and [str(o).startswith(start) for o in among].count(True) == 1:
            return start
    return text


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


def damage_sqlite_metadata(path: Path, checkpoint_id: UUID) -> None:
    """Make a checkpoint's metadata column unreadable, underneath the store."""
    with closing(sqlite3.connect(path)) as conn, conn:
        updated = conn.execute(
            "UPDATE flowpoint_checkpoints SET metadata = '{not json' WHERE checkpoint_id = ?",
            (checkpoint_id.bytes,),
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
    """The single ``error: ...`` line of a usage error (which exits 2, as the caller checks)."""
    return one_line_error(stderr)


def seeded_file_store(tmp_path: Path) -> tuple[str, dict[str, list[UUID]], FileHarness]:
    """A file store holding :data:`TRACES`: its URL, its ids, and a harness to damage its files."""
    root = tmp_path / "files"
    url = f"file://{root}"
    ids = make_store(url)
    harness = FileHarness()
    shutil.rmtree(harness.root)
    harness.root = str(root)
    return url, ids, harness


PARALLEL_TRACE = "fan/out"


@dataclass
class Parallel:
    """A trace whose fan-out failed in one branch: its first checkpoint holds pending writes."""

    url: str
    ids: list[UUID]
    """The trace's checkpoint ids by step; the writes are attached to the last one."""

    @property
    def with_writes(self) -> UUID:
        return self.ids[-1]


def make_parallel(url: str, ring: KeyRing | None = None) -> Parallel:
    """Run a graph whose superstep runs ``web``, ``docs`` and two Sends; ``docs`` raises.

    The checkpoint the superstep started from then holds four pending writes: the
    updates of ``web``, ``summarise#0`` and ``summarise#1``, and the error of ``docs``.
    """
    from flowpoint import Graph, Runner, Send, SerdeCheckpointCodec, TypedCheckpointStore
    from flowpoint.graph import END, START

    def docs(state: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("docs down")

    def route(state: dict[str, Any]) -> list[str | Send]:
        return ["web", "docs", Send("summarise", {"n": 1}), Send("summarise", {"n": 2})]

    g = Graph("fan", state=dict)
    g.add_node("plan", lambda state: None).add_node("docs", docs)
    g.add_node("web", lambda state: {"web": "3 pages"})
    g.add_node("summarise", lambda arg: {f"summary{arg['n']}": "short"})
    g.add_edge(START, "plan").add_conditional_edges("plan", route, ["web", "docs", "summarise"])
    g.add_edge(["web", "docs"], END).add_edge("summarise", END)

    async def run() -> list[UUID]:
        async with open_store(url) as blobs:
            store = TypedCheckpointStore(blobs, SerdeCheckpointCodec(dict, encryption=ring))
            with pytest.raises(RuntimeError, match="docs down"):
                await Runner(g, store).run(PARALLEL_TRACE, {"topic": "x"})
            return [info.checkpoint_id for info in reversed(await blobs.history(PARALLEL_TRACE))]

    return Parallel(url, asyncio.run(run()))


def writes_of(url: str, checkpoint_id: UUID) -> list[PendingWrite]:
    """The pending writes of a checkpoint, as stored."""

    async def load() -> list[PendingWrite]:
        async with open_store(url) as store:
            return await store.load_writes(CheckpointId(checkpoint_id))

    return asyncio.run(load())
