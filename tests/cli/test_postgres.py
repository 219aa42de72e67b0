"""``copy`` moves a store from SQLite to PostgreSQL, and ``verify`` passes on both."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from flowpoint.cli.demo import TRACE
from tests.cli.conftest import flowpoint, invoke, make_store, run_demo_quietly, sqlite_url
from tests.harnesses.base import unavailable

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 - after the driver is known to be there

ADMIN_URL = os.environ.get("FLOWPOINT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(statement: sql.Composed) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A scratch database, dropped afterwards."""
    name = f"flowpoint_cli_{secrets.token_hex(6)}"
    try:
        _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}")
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_copy_sqlite_to_postgres_and_verify_both(tmp_path: Path, postgres_url: str) -> None:
    source = sqlite_url(tmp_path / "flowpoint.db")
    run_demo_quietly(source)
    make_store(source)
    copied = flowpoint("copy", source, postgres_url, "--json")
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert (report["traces"], report["copied"], report["verified"], report["skipped"]) == (
        3,
        16,
        16,
        0,
    )
    for url in (source, postgres_url):
        verified = flowpoint("verify", "--json", "--store", url)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] == 16
    # Rerun-safe: everything is there already.
    again = json.loads(invoke("copy", source, postgres_url, "--json").stdout)
    assert (again["copied"], again["skipped"]) == (0, 16)
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
    assert [row["step"] for row in history["checkpoints"]] == [10, 9, 8]
