"""Where subjects keep their data: temp directories, SQLite files, PostgreSQL databases;
and how much they keep there (bytes at rest)."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Place:
    """A fresh, empty place for one subject's run: a directory, a database, or nothing."""

    directory: Path | None = None
    dsn: str | None = None


class Workspace:
    """A temp directory for the whole run; every subject's run gets its own subdirectory."""

    def __init__(self, parent: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flowpoint-bench-", dir=parent))
        self._counter = itertools.count()

    @contextmanager
    def directory(self, label: str) -> Iterator[Path]:
        path = self.root / f"{next(self._counter):04d}-{label}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """The PostgreSQL server: a database per subject run, created and dropped here."""

    def __init__(self, dsn: str = DEFAULT_PG_DSN) -> None:
        self.admin_dsn = dsn
        self._counter = itertools.count()
        self.unavailable: str | None = self._probe()

    def _probe(self) -> str | None:
        try:
            import psycopg
        except ImportError as exc:
            return f"psycopg is not installed: {exc}"
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            reason = " ".join(str(exc).split())
            return f"PostgreSQL at {self.admin_dsn} is unreachable: {type(exc).__name__}: {reason}"
        return None

    def info(self) -> dict[str, Any]:
        if self.unavailable:
            return {"available": False, "reason": self.unavailable}
        import psycopg

        with psycopg.connect(self.admin_dsn, connect_timeout=3, autocommit=True) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            }
        return {"available": True, "dsn": self.admin_dsn, **settings}

    def _dsn_for(self, database: str) -> str:
        """The admin DSN with another database: a URL stays a URL (store URLs are URLs)."""
        parts = urlsplit(self.admin_dsn)
        if parts.scheme in ("postgresql", "postgres"):
            return urlunsplit(parts._replace(path=f"/{database}"))
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.admin_dsn, dbname=database)

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        """A new, empty database for one run; dropped afterwards (also on failure)."""
        import psycopg

        name = f"fpbench_{os.getpid()}_{next(self._counter)}_{label}".lower()
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:60]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self._dsn_for(name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- bytes at rest ---------------------------------------------------------------------


def sqlite_bytes(path: Path) -> dict[str, Any]:
    """Database plus WAL, after ``PRAGMA wal_checkpoint(TRUNCATE)`` on a separate connection."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    db_bytes = path.stat().st_size
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return {
        "bytes": db_bytes + wal_bytes,
        "db_bytes": db_bytes,
        "wal_bytes": wal_bytes,
        "wal_checkpoint": {"busy": busy, "log": log_frames, "checkpointed": checkpointed},
    }


def sqlite_pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    """journal_mode and synchronous as read back from a connection (synchronous 2 = FULL)."""
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    return {"journal_mode": mode, "synchronous": sync, "synchronous_full": sync == 2}


def directory_bytes(root: Path) -> dict[str, Any]:
    """The sum of the sizes of the regular files under ``root`` (symlinks are counted apart)."""
    total = files = links = link_bytes = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                files += 1
            elif stat.S_ISLNK(st.st_mode):
                links += 1
                link_bytes += st.st_size
    return {"bytes": total, "files": files, "symlinks": links, "symlink_bytes": link_bytes}


def postgres_bytes(dsn: str) -> dict[str, Any]:
    """``pg_total_relation_size`` (table, TOAST and indexes) of every table in the database."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY c.relname"
        ).fetchall()
    tables = {name: int(size) for name, size in rows}
    return {"bytes": sum(tables.values()), "tables": tables}
