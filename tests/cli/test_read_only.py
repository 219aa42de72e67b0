"""Commands that only read never change a store, nor take something else for one."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.cli.conftest import Seeded, flowpoint, invoke, one_line_error, sqlite_url

ANY_ID = str(uuid.UUID(int=0x01A2_4326_CFA4_7A8E_B8F1_B64F_A24F_5D77))


def _reads(url: str, out: Path) -> list[list[str]]:
    """Each command that only reads the store at ``url``."""
    return [
        ["traces", "--store", url],
        ["history", "alpha", "--store", url],
        ["show", ANY_ID, "--store", url],
        ["diff", ANY_ID, ANY_ID, "--store", url],
        ["verify", "--store", url],
        ["export", str(out), "--store", url],
        ["copy", url, sqlite_url(out.with_suffix(".db"))],
        ["prune", "--all", "--keep-latest", "1", "--dry-run", "--store", url],
    ]


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _another_apps_database(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")


def _text(path: Path) -> None:
    path.write_text("just some text\n", encoding="utf-8")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(directory: Path) -> set[str]:
    return {child.name for child in directory.iterdir()}


@pytest.mark.parametrize("make", [_empty, _another_apps_database, _text])
def test_a_file_that_is_not_a_store_is_named_and_left_alone(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "other.db"
    make(path)
    before, around = _digest(path), _files(tmp_path)
    for args in _reads(sqlite_url(path), tmp_path / "out.fpa"):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        line = one_line_error(result.stderr)
        assert "is not a flowpoint store" in line, (args, line)
        assert _digest(path) == before, args
        assert _files(tmp_path) == around, args  # no archive, no copy, no WAL files


def test_as_subprocesses_too(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _another_apps_database(path)
    before = _digest(path)
    for args in _reads(sqlite_url(path), tmp_path / "out.fpa")[:5]:
        done = flowpoint(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert "is not a flowpoint store" in one_line_error(done.stderr)
    assert _digest(path) == before
    with closing(sqlite3.connect(path)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"notes"}


def test_a_directory_that_is_not_a_file_store_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "notes.txt").write_text("mine", encoding="utf-8")
    for args in _reads(f"file://{root}", tmp_path / "out.fpa"):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "is not a flowpoint store" in one_line_error(result.stderr), args
        assert _files(root) == {"notes.txt"}, args


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_a_path_that_does_not_exist_is_not_made(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "typo"
    url = sqlite_url(path) if scheme == "sqlite" else f"file://{path}"
    for args in _reads(url, tmp_path / "out.fpa"):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "does not exist" in one_line_error(result.stderr), args
        assert _files(tmp_path) == set(), args


def test_reading_a_store_leaves_its_bytes_as_they_were(seeded: Seeded, tmp_path: Path) -> None:
    alpha = [str(one) for one in seeded.ids["alpha"]]
    (tmp_path / "out").mkdir()
    before, around = _digest(seeded.path), _files(seeded.path.parent)
    for args in [
        ["traces", "--store", seeded.url],
        ["history", "alpha", "--store", seeded.url],
        ["show", alpha[1], "--store", seeded.url],
        ["diff", alpha[0], alpha[2], "--store", seeded.url],
        ["verify", "--store", seeded.url],
        ["export", str(tmp_path / "out" / "out.fpa"), "--store", seeded.url],
        ["prune", "alpha", "--keep-latest", "1", "--dry-run", "--store", seeded.url],
    ]:
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert _digest(seeded.path) == before, args
        assert _files(seeded.path.parent) == around, args


def test_a_store_this_user_may_only_read_can_be_inspected(seeded: Seeded) -> None:
    seeded.path.chmod(0o444)
    seeded.path.parent.chmod(0o555)
    try:
        result = invoke("verify", "--store", seeded.url, "--json")
        traces = invoke("traces", "--store", seeded.url)
    finally:
        seeded.path.parent.chmod(0o755)
        seeded.path.chmod(0o644)
    assert result.exit_code == 0, result.output
    assert traces.exit_code == 0, traces.output
