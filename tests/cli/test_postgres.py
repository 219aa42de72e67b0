"""``copy`` moves a store from SQLite to PostgreSQL, and ``verify`` passes on both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowpoint.cli._demo import TRACE
from tests.cli.conftest import (
    flowpoint,
    invoke,
    make_parallel,
    make_store,
    one_line_error,
    run_demo_quietly,
    sqlite_url,
    writes_of,
)


def test_copy_sqlite_to_postgres_and_verify_both(tmp_path: Path, postgres_url: str) -> None:
    source = sqlite_url(tmp_path / "flowpoint.db")
    run_demo_quietly(source)
    make_store(source)
    copied = flowpoint("copy", source, postgres_url, "--json")
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert (report["traces"], report["copied"], report["verified"], report["skipped"]) == (
        3,
        17,
        17,
        0,
    )
    for url in (source, postgres_url):
        verified = flowpoint("verify", "--json", "--store", url)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] == 17
    # Rerun-safe: everything is there already.
    again = json.loads(invoke("copy", source, postgres_url, "--json").stdout)
    assert (again["copied"], again["skipped"]) == (0, 17)
    # The same checkpoints, byte for byte: both stores export the same archive.
    archives = []
    for name, url in (("sqlite", source), ("postgres", postgres_url)):
        path = tmp_path / f"{name}.fpa"
        assert invoke("export", str(path), "--store", url).exit_code == 0
        archives.append(path.read_bytes())
    assert archives[0] == archives[1]
    history = json.loads(
        invoke("history", TRACE, "--limit", "3", "--store", postgres_url, "--json").stdout
    )
    assert [row["step"] for row in history["checkpoints"]] == [11, 10, 9]


def test_pending_writes_go_to_postgres_and_read_only_commands_change_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    source = make_parallel(sqlite_url(tmp_path / "parallel.db"))
    copied = invoke("copy", source.url, postgres_url, "--json")
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["writes_copied"] == 4
    assert writes_of(postgres_url, source.with_writes) == writes_of(source.url, source.with_writes)
    verified = flowpoint("verify", "--json", "--store", postgres_url)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["writes"] == 4
    archives = []
    for name, url in (("sqlite", source.url), ("postgres", postgres_url)):
        path = tmp_path / f"{name}.fpa"
        assert invoke("export", str(path), "--store", url).exit_code == 0
        archives.append(path.read_bytes())
    assert archives[0] == archives[1]


def test_a_database_without_flowpoint_tables_is_named_and_left_alone(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")

    def tables() -> list[str]:
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        return sorted(name for (name,) in rows)

    for args in (["traces"], ["history", "t"], ["verify"]):
        done = flowpoint(*args, "--store", postgres_url)
        assert done.returncode == 1, (args, done.stderr)
        assert "is not a flowpoint store" in one_line_error(done.stderr)
    assert tables() == []
