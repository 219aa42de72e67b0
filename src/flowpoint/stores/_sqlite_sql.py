"""The SQL of the SQLite store: its migrations, and every statement it runs.

``SCHEMA_VERSION`` is the version a file has once every migration is applied;
table ``flowpoint_schema`` records each one a file got. Listings select the
header columns and ``size``, never ``data`` (the last column, so its overflow
pages are not read).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CREATE_SCHEMA_TABLE",
    "DELETE",
    "DELETE_TRACE",
    "DELETE_TRACE_WRITES",
    "DELETE_WRITES",
    "HEADER",
    "HEADER_BY_ID",
    "HISTORY",
    "HISTORY_BEFORE",
    "IDS_BETWEEN",
    "IDS_FROM",
    "INSERT",
    "INSERT_WRITE",
    "LATEST",
    "LATEST_DATA",
    "LATEST_WITH_WRITES",
    "LEASE_HELD",
    "LOAD",
    "LOAD_WRITES",
    "LOAD_WRITES_MANY",
    "MIGRATIONS",
    "NOW",
    "PRUNE",
    "PRUNE_CUTOFF",
    "PRUNE_KEEP",
    "QUEUE_TABLES",
    "REWRITE",
    "REWRITE_BY_ID",
    "SCHEMA_VERSION",
    "STEPS",
    "TRACES",
    "TRACE_ROWS",
    "UPSERT_WRITE",
    "WRITES_TRACE",
    "insert_many",
]


CREATE_SCHEMA_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS flowpoint_schema (version INTEGER NOT NULL)"
)
# Migration N (1-based) is MIGRATIONS[N - 1]; a database records each one it got in
# flowpoint_schema. Released migrations never change: add a new one instead.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the checkpoints. `data` is the last column, so reading the header columns
    # (and `size`) of a row never touches the overflow pages that hold a large `data`.
    (
        """
        CREATE TABLE flowpoint_checkpoints (
            checkpoint_id BLOB PRIMARY KEY,
            trace_id      TEXT NOT NULL,
            step          INTEGER NOT NULL,
            parent_id     BLOB,
            graph_hash    INTEGER NOT NULL,
            created_at    INTEGER NOT NULL,
            current_node  TEXT,
            metadata      TEXT NOT NULL,
            size          INTEGER NOT NULL,
            data          BLOB NOT NULL,
            UNIQUE (trace_id, step)
        )
        """,
    ),
    # 2: pending writes, keyed as the interface keys them; by trace for delete_trace.
    (
        """
        CREATE TABLE flowpoint_writes (
            checkpoint_id BLOB NOT NULL,
            task_id       TEXT NOT NULL,
            idx           INTEGER NOT NULL,
            trace_id      TEXT NOT NULL,
            data          BLOB NOT NULL,
            PRIMARY KEY (checkpoint_id, task_id, idx)
        )
        """,
        "CREATE INDEX flowpoint_writes_trace ON flowpoint_writes (trace_id)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# The run queue's tables (flowpoint.queue): runs, and the workers that serve them with
# the graphs each serves. Times are seconds since the epoch by the database's clock
# (NOW). `seq` orders runs by age; the index serves the claim's ORDER BY. Not a
# migration: a queue makes them when it first opens the file, so a store that holds no
# queue keeps none of their pages. Each statement can run again.
QUEUE_TABLES: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS flowpoint_runs (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        trace_id         TEXT NOT NULL UNIQUE,
        graph_name       TEXT NOT NULL,
        graph_hash       INTEGER NOT NULL,
        priority         INTEGER NOT NULL,
        status           TEXT NOT NULL,
        epoch            INTEGER NOT NULL,
        owner            TEXT,
        lease_expires_at REAL,
        attempts         INTEGER NOT NULL,
        max_attempts     INTEGER NOT NULL,
        dedup_key        TEXT,
        resume_update    BLOB,
        update_step      INTEGER,
        error            TEXT,
        submitted_at     REAL NOT NULL,
        updated_at       REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS flowpoint_runs_queue"
    " ON flowpoint_runs (status, priority DESC, seq)",
    """
    CREATE TABLE IF NOT EXISTS flowpoint_workers (
        worker_id  TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        started_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS flowpoint_worker_graphs (
        worker_id  TEXT NOT NULL,
        graph_hash INTEGER NOT NULL,
        PRIMARY KEY (worker_id, graph_hash)
    )
    """,
)

NOW: Final = "((julianday('now') - 2440587.5) * 86400.0)"
"""The database's clock in SQL: seconds since the epoch, to the millisecond."""
# A fenced save's check, in its write transaction (see flowpoint.stores._fenced).
LEASE_HELD: Final = (
    "SELECT 1 FROM flowpoint_runs WHERE trace_id = ? AND epoch = ? AND status = 'running'"
    f" AND lease_expires_at > {NOW}"
)

HEADER: Final = (
    "checkpoint_id, trace_id, step, parent_id, graph_hash, created_at, current_node, metadata"
)
INSERT: Final = (
    f"INSERT INTO flowpoint_checkpoints ({HEADER}, size, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_many(count: int) -> str:
    """One INSERT of ``count`` checkpoint rows (their columns in :data:`INSERT`'s order)."""
    return INSERT + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (count - 1)


LOAD: Final = f"SELECT {HEADER}, data FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
# The trace's latest id and data, and the writes saved against it: a row for each
# write, or one with NULL write columns when there is none.
LATEST_WITH_WRITES: Final = (
    "SELECT c.checkpoint_id, c.data, w.task_id, w.idx, w.trace_id, w.data"
    " FROM (SELECT checkpoint_id, data FROM flowpoint_checkpoints"
    " WHERE trace_id = ? ORDER BY step DESC LIMIT 1) AS c"
    " LEFT JOIN flowpoint_writes AS w ON w.checkpoint_id = c.checkpoint_id"
)
LATEST_DATA: Final = (
    "SELECT checkpoint_id, data FROM flowpoint_checkpoints "
    "WHERE trace_id = ? ORDER BY step DESC LIMIT 1"
)
LATEST: Final = (
    f"SELECT {HEADER}, data FROM flowpoint_checkpoints "
    "WHERE trace_id = ? ORDER BY step DESC LIMIT 1"
)
STEPS: Final = (
    f"SELECT {HEADER}, data FROM flowpoint_checkpoints "
    "WHERE trace_id = ? AND step BETWEEN ? AND ? ORDER BY step"
)
HISTORY: Final = (
    f"SELECT {HEADER}, size FROM flowpoint_checkpoints "
    "WHERE trace_id = ? ORDER BY step DESC LIMIT ?"
)
HISTORY_BEFORE: Final = (
    f"SELECT {HEADER}, size FROM flowpoint_checkpoints "
    "WHERE trace_id = ? AND step < ? ORDER BY step DESC LIMIT ?"
)
# A rewrite replaces the data of the row whose whole header matches.
REWRITE: Final = (
    "UPDATE flowpoint_checkpoints SET size = ?, data = ? WHERE checkpoint_id = ?"
    " AND trace_id = ? AND step = ? AND parent_id IS ? AND graph_hash = ?"
    " AND created_at = ? AND current_node IS ? AND metadata = ?"
)
REWRITE_BY_ID: Final = "UPDATE flowpoint_checkpoints SET size = ?, data = ? WHERE checkpoint_id = ?"
HEADER_BY_ID: Final = f"SELECT {HEADER}, size FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
TRACES: Final = "SELECT DISTINCT trace_id FROM flowpoint_checkpoints ORDER BY trace_id"
TRACE_ROWS: Final = (
    "SELECT checkpoint_id, step FROM flowpoint_checkpoints WHERE trace_id = ? ORDER BY step"
)
IDS_FROM: Final = (
    "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE checkpoint_id >= ?"
    " ORDER BY checkpoint_id LIMIT ?"
)
IDS_BETWEEN: Final = (
    "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE checkpoint_id >= ?"
    " AND checkpoint_id < ? ORDER BY checkpoint_id LIMIT ?"
)
DELETE: Final = "DELETE FROM flowpoint_checkpoints WHERE checkpoint_id = ?"
DELETE_TRACE: Final = "DELETE FROM flowpoint_checkpoints WHERE trace_id = ?"
PRUNE: Final = "SELECT checkpoint_id FROM flowpoint_checkpoints WHERE trace_id = :trace"
WRITES_TRACE: Final = "SELECT trace_id FROM flowpoint_writes WHERE checkpoint_id = ? LIMIT 1"
INSERT_WRITE: Final = (
    "INSERT INTO flowpoint_writes (checkpoint_id, task_id, idx, trace_id, data)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (checkpoint_id, task_id, idx) DO NOTHING"
)
UPSERT_WRITE: Final = (
    "INSERT INTO flowpoint_writes (checkpoint_id, task_id, idx, trace_id, data)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (checkpoint_id, task_id, idx)"
    " DO UPDATE SET data = excluded.data"
)
LOAD_WRITES: Final = (
    "SELECT task_id, idx, trace_id, data FROM flowpoint_writes WHERE checkpoint_id = ?"
)
# The writes of many checkpoints: "?" placeholders, as many as ids, follow.
LOAD_WRITES_MANY: Final = (
    "SELECT checkpoint_id, task_id, idx, trace_id, data FROM flowpoint_writes"
    " WHERE checkpoint_id IN "
)
DELETE_WRITES: Final = "DELETE FROM flowpoint_writes WHERE checkpoint_id = ?"
DELETE_TRACE_WRITES: Final = "DELETE FROM flowpoint_writes WHERE trace_id = ?"
# Steps at or below the (keep+1)-th newest; NULL (so nothing) when the trace is shorter.
PRUNE_KEEP: Final = (
    " AND step <= (SELECT step FROM flowpoint_checkpoints WHERE trace_id = :trace"
    " ORDER BY step DESC LIMIT 1 OFFSET :keep)"
)
PRUNE_CUTOFF: Final = " AND created_at < :cutoff"
