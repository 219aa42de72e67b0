"""``flowpoint import-langgraph``: threads moved from LangGraph's SQLite and PostgreSQL savers
read back as LangGraph's own savers read them, after every checkpoint is compared; a run
killed midway is finished by the next."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from flowpoint.langgraph import FlowpointSaver
from tests.cli.conftest import flowpoint, postgres_url
from tests.langgraph.graphs import APPLICATION_TYPES, scenarios

__all__ = ["postgres_url"]

pytestmark = pytest.mark.filterwarnings("ignore")  # LangGraph warns of unregistered types


@contextmanager
def _sqlite_saver(path: Path) -> Iterator[SqliteSaver]:
    with closing(sqlite3.connect(path, check_same_thread=False)) as conn:
        yield SqliteSaver(conn)


def _fill(saver: BaseCheckpointSaver[Any], copies: int = 1) -> list[str]:
    """Run every scenario on ``saver``; return the threads they wrote."""
    for copy in range(copies):
        for run in scenarios().values():
            run(saver, f"c{copy}-")
    return sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})


def _tuples(saver: BaseCheckpointSaver[Any], thread: str) -> list[Any]:
    """Everything of a thread's checkpoints, all namespaces, newest first, as plain values."""
    return [
        (
            t.config["configurable"],
            t.checkpoint["id"],
            t.checkpoint["ts"],
            t.checkpoint["channel_values"],
            {k: str(v) for k, v in t.checkpoint["channel_versions"].items()},
            t.checkpoint["versions_seen"],
            t.metadata,
            None if t.parent_config is None else t.parent_config["configurable"],
            t.pending_writes,
        )
        for t in saver.list({"configurable": {"thread_id": thread}})
    ]


def _same_threads(source: BaseCheckpointSaver[Any], threads: list[str], url: str) -> None:
    with FlowpointSaver.from_url(url, allowed_types=APPLICATION_TYPES) as imported:
        for thread in threads:
            theirs = _tuples(source, thread)
            assert theirs
            assert _tuples(imported, thread) == theirs, thread


def test_sqlite_threads_read_back_as_sqlite_saver_reads_them(tmp_path: Path) -> None:
    source = tmp_path / "langgraph.db"
    with _sqlite_saver(source) as saver:
        threads = _fill(saver)
    destination = f"sqlite:///{tmp_path}/flowpoint.db"
    first = flowpoint("import-langgraph", str(source), "--into", destination)
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    assert " 0 write(s)" not in first.stdout
    assert "tests.langgraph.graphs.Note" in first.stderr  # the classes to register, named
    with _sqlite_saver(source) as saver:
        _same_threads(saver, threads, destination)
        total = sum(len(_tuples(saver, thread)) for thread in threads)
    again = flowpoint("import-langgraph", f"sqlite:///{source}", "--into", destination, "--json")
    assert again.returncode == 0, again.stderr
    assert f'"skipped": {total}' in again.stdout
    assert '"checkpoints": 0' in again.stdout
    assert '"writes": 0' in again.stdout
    traces = flowpoint("traces", "--store", destination)
    assert traces.returncode == 0
    assert "c0-nested#inner" in traces.stdout


def test_postgres_threads_read_back_as_postgres_saver_reads_them(
    postgres_url: str, tmp_path: Path
) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(postgres_url) as saver:
        saver.setup()
        threads = _fill(saver)
    destination = f"sqlite:///{tmp_path}/flowpoint.db"
    done = flowpoint("import-langgraph", postgres_url, "--into", destination)
    assert done.returncode == 0, done.stderr
    with PostgresSaver.from_conn_string(postgres_url) as saver:
        _same_threads(saver, threads, destination)


def test_an_import_killed_midway_is_finished_by_the_next(tmp_path: Path) -> None:
    source = tmp_path / "langgraph.db"
    with _sqlite_saver(source) as saver:
        threads = _fill(saver, copies=12)
        total = sum(len(_tuples(saver, thread)) for thread in threads)
    target = tmp_path / "flowpoint.db"
    destination = f"sqlite:///{target}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowpoint.cli",
            "import-langgraph",
            str(source),
            "--into",
            destination,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        imported = _wait_for_some(target, total)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert 0 < imported < total
    finished = flowpoint("import-langgraph", str(source), "--into", destination, "--json")
    assert finished.returncode == 0, finished.stderr
    assert '"skipped": ' in finished.stdout
    with _sqlite_saver(source) as saver:
        _same_threads(saver, threads, destination)


def _wait_for_some(target: Path, total: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if target.exists():
            try:
                with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as conn:
                    (count,) = conn.execute("SELECT COUNT(*) FROM flowpoint_checkpoints").fetchone()
            except sqlite3.Error:
                count = 0
            if count >= total // 4:
                return int(count)
        time.sleep(0.01)
    raise AssertionError("the import wrote nothing within a minute")


def test_what_is_not_langgraphs_tables_is_refused(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello")
    destination = f"sqlite:///{tmp_path}/flowpoint.db"
    for source in (str(not_a_db), str(tmp_path / "missing.db"), "redis://127.0.0.1/0"):
        done = flowpoint("import-langgraph", source, "--into", destination)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: ")


def test_pickled_values_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "langgraph.db"
    with _sqlite_saver(source) as saver:
        _fill(saver)
    with closing(sqlite3.connect(source)) as conn:
        conn.execute("UPDATE checkpoints SET type = 'pickle' WHERE rowid = 1")
        conn.commit()
    done = flowpoint("import-langgraph", str(source), "--into", f"sqlite:///{tmp_path}/fp.db")
    assert done.returncode == 1
    assert "never unpickles" in done.stderr


def test_the_command_needs_only_its_own_extra() -> None:
    code = (
        "import sys; sys.modules['langgraph'] = None\n"
        "from flowpoint.cli._app import app\n"
        "import flowpoint\n"
        "try:\n"
        "    import flowpoint.langgraph\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'flowpoint[langgraph]'" in done.stdout
