"""The SQL of the PostgreSQL store: its migrations, and every statement it runs.

Table and constraint names are filled in per store (``{checkpoints}``, ``{pkey}``,
...) by :class:`Statements`, from the store's schema and table prefix.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATIONS", "Statements"]

_MAX_IDENTIFIER_BYTES: Final = 63  # PostgreSQL cuts longer names silently
_TABLES: Final = frozenset(
    {"checkpoints", "writes", "migrations", "runs", "workers", "worker_graphs"}
)

# Migration N (1-based) is MIGRATIONS[N - 1]. Released migrations never change: add
# a new one instead.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the checkpoints table. COLLATE "C" sorts trace ids by code point, as
    # Python's sorted() does, whatever the database's default collation is.
    (
        """
        CREATE TABLE {checkpoints} (
            checkpoint_id uuid NOT NULL,
            trace_id      text COLLATE "C" NOT NULL,
            step          bigint NOT NULL,
            parent_id     uuid,
            graph_hash    bigint NOT NULL,
            created_at    timestamptz NOT NULL,
            current_node  text,
            metadata      jsonb NOT NULL,
            size          integer NOT NULL,
            data          bytea NOT NULL,
            CONSTRAINT {pkey} PRIMARY KEY (checkpoint_id),
            CONSTRAINT {trace_step} UNIQUE (trace_id, step)
        )
        """,
    ),
    # 2: pending writes, keyed as the interface keys them; by trace for delete_trace.
    (
        """
        CREATE TABLE {writes} (
            checkpoint_id uuid NOT NULL,
            task_id       text COLLATE "C" NOT NULL,
            idx           bigint NOT NULL,
            trace_id      text COLLATE "C" NOT NULL,
            data          bytea NOT NULL,
            CONSTRAINT {writes_pkey} PRIMARY KEY (checkpoint_id, task_id, idx)
        )
        """,
        "CREATE INDEX {writes_trace} ON {writes} (trace_id)",
    ),
    # 3: the run queue (flowpoint.queue): runs, and the workers that serve them with
    # the graphs each serves. Times are the database's clock. `seq` orders runs by
    # age; the index serves the claim's ORDER BY.
    (
        """
        CREATE TABLE {runs} (
            seq              bigint GENERATED ALWAYS AS IDENTITY,
            trace_id         text COLLATE "C" NOT NULL,
            graph_name       text NOT NULL,
            graph_hash       bigint NOT NULL,
            priority         integer NOT NULL,
            status           text NOT NULL,
            epoch            bigint NOT NULL,
            owner            text,
            lease_expires_at timestamptz,
            attempts         integer NOT NULL,
            max_attempts     integer NOT NULL,
            dedup_key        text,
            resume_update    bytea,
            update_step      bigint,
            error            text,
            submitted_at     timestamptz NOT NULL,
            updated_at       timestamptz NOT NULL,
            CONSTRAINT {runs_pkey} PRIMARY KEY (trace_id)
        )
        """,
        "CREATE INDEX {runs_queue} ON {runs} (status, priority DESC, seq)",
        """
        CREATE TABLE {workers} (
            worker_id  text NOT NULL,
            host       text NOT NULL,
            pid        integer NOT NULL,
            started_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            CONSTRAINT {workers_pkey} PRIMARY KEY (worker_id)
        )
        """,
        """
        CREATE TABLE {worker_graphs} (
            worker_id  text NOT NULL,
            graph_hash bigint NOT NULL,
            CONSTRAINT {worker_graphs_pkey} PRIMARY KEY (worker_id, graph_hash)
        )
        """,
    ),
)

_CREATE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {migrations} (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# created_at as seconds since the epoch (an exact numeric): psycopg's own timestamptz
# loader raises on 'infinity' and on years past 9999, which a damaged row may hold.
_HEADER: Final = (
    "checkpoint_id, trace_id, step, parent_id, graph_hash, "
    "extract(epoch FROM created_at), current_node, metadata::text"
)
_INSERT_SQL: Final = (
    "INSERT INTO {checkpoints} (checkpoint_id, trace_id, step, parent_id, graph_hash, "
    "created_at, current_node, metadata, size, data) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %b)"
)
# The VALUES of each row after the first of a many-row INSERT (group commit), and what
# ends it: a row that conflicts with a stored one, or with an earlier row of the batch,
# is left out, and the ids returned are the rows that went in.
_INSERT_ROW: Final = ", (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %b)"
_INSERT_BATCH_END: Final = " ON CONFLICT DO NOTHING RETURNING checkpoint_id"
_LOAD_SQL: Final = f"SELECT {_HEADER}, data FROM {{checkpoints}} WHERE checkpoint_id = %s"
_LATEST_SQL: Final = (
    f"SELECT {_HEADER}, data FROM {{checkpoints}} WHERE trace_id = %s ORDER BY step DESC LIMIT 1"
)
_STEPS_SQL: Final = (
    f"SELECT {_HEADER}, data FROM {{checkpoints}} "
    "WHERE trace_id = %s AND step BETWEEN %s AND %s ORDER BY step"
)
_HISTORY_SQL: Final = (
    f"SELECT {_HEADER}, size FROM {{checkpoints}} WHERE trace_id = %s ORDER BY step DESC LIMIT %s"
)
_HISTORY_BEFORE_SQL: Final = (
    f"SELECT {_HEADER}, size FROM {{checkpoints}} "
    "WHERE trace_id = %s AND step < %s ORDER BY step DESC LIMIT %s"
)
# A skip scan of the (trace_id, step) index: one index probe per trace, where
# SELECT DISTINCT would read every checkpoint's index entry.
_TRACES_SQL: Final = """
WITH RECURSIVE traces(trace_id) AS (
    (SELECT trace_id FROM {checkpoints} ORDER BY trace_id LIMIT 1)
    UNION ALL
    SELECT (SELECT c.trace_id FROM {checkpoints} c
            WHERE c.trace_id > traces.trace_id ORDER BY c.trace_id LIMIT 1)
    FROM traces WHERE traces.trace_id IS NOT NULL
)
SELECT trace_id FROM traces WHERE trace_id IS NOT NULL
"""
_IDS_FROM_SQL: Final = (
    "SELECT checkpoint_id FROM {checkpoints} WHERE checkpoint_id >= %s"
    " ORDER BY checkpoint_id LIMIT %s"
)
_IDS_BETWEEN_SQL: Final = (
    "SELECT checkpoint_id FROM {checkpoints} WHERE checkpoint_id >= %s AND checkpoint_id < %s"
    " ORDER BY checkpoint_id LIMIT %s"
)
# Each delete takes the writes along in the same statement, so atomically.
_TRACE_ROWS_SQL: Final = (
    "SELECT checkpoint_id, step FROM {checkpoints} WHERE trace_id = %s ORDER BY step"
)
_DELETE_MANY_SQL: Final = (
    "WITH writes AS (DELETE FROM {writes} WHERE checkpoint_id = ANY(%(ids)s))"
    " DELETE FROM {checkpoints} WHERE checkpoint_id = ANY(%(ids)s)"
)
_DELETE_TRACE_SQL: Final = (
    "WITH writes AS (DELETE FROM {writes} WHERE trace_id = %(trace)s)"
    " DELETE FROM {checkpoints} WHERE trace_id = %(trace)s"
)
_PRUNE_SQL: Final = "DELETE FROM {checkpoints} WHERE trace_id = %(trace)s"


def _prune_with_writes(prune: str) -> str:
    """``prune`` (a DELETE of checkpoints) taking their writes along, returning a count."""
    return (
        f"WITH gone AS ({prune} RETURNING checkpoint_id),"
        " writes AS (DELETE FROM {writes} WHERE checkpoint_id IN (SELECT checkpoint_id FROM gone))"
        " SELECT count(*) FROM gone"
    )


# Writes of one checkpoint are saved one call at a time (a transaction-level advisory
# lock on the checkpoint), so that the check of their trace holds until the commit.
_LOCK_WRITES_SQL: Final = "SELECT pg_advisory_xact_lock(%s, %s)"
_WRITES_TRACE_SQL: Final = "SELECT trace_id FROM {writes} WHERE checkpoint_id = %s LIMIT 1"
_INSERT_WRITES_SQL: Final = (
    "INSERT INTO {writes} (checkpoint_id, task_id, idx, trace_id, data)"
    " SELECT %s, task_id, idx, %s, data"
    " FROM unnest(%s::text[], %s::bigint[], %s::bytea[]) AS w(task_id, idx, data)"
)
_ON_CONFLICT_KEEP: Final = " ON CONFLICT (checkpoint_id, task_id, idx) DO NOTHING"
_ON_CONFLICT_REPLACE: Final = (
    " ON CONFLICT (checkpoint_id, task_id, idx) DO UPDATE SET data = EXCLUDED.data"
)
# The trace's latest id and data, and the writes saved against it: a row for each
# write, or one with NULL write columns when there is none.
_LATEST_WITH_WRITES_SQL: Final = (
    "SELECT c.checkpoint_id, c.data, w.task_id, w.idx, w.trace_id, w.data"
    " FROM (SELECT checkpoint_id, data FROM {checkpoints}"
    " WHERE trace_id = %s ORDER BY step DESC LIMIT 1) AS c"
    " LEFT JOIN {writes} AS w ON w.checkpoint_id = c.checkpoint_id"
)
_LOAD_WRITES_SQL: Final = (
    "SELECT task_id, idx, trace_id, data FROM {writes} WHERE checkpoint_id = %s"
)
# A fenced save (see flowpoint.stores._fenced): the run's row is locked FOR SHARE while
# the statement runs, so a claim or a requeue (which update the row) waits for it or,
# having committed first, makes the lease check find no row, and nothing is inserted.
# The casts type the values of the INSERT's SELECT, NULLs included.
_LEASE_HELD_SQL: Final = (
    "SELECT 1 FROM {runs} WHERE trace_id = %s AND epoch = %s AND status = 'running'"
    " AND lease_expires_at > clock_timestamp() FOR SHARE"
)
_INSERT_FENCED_SQL: Final = (
    "WITH lease AS (" + _LEASE_HELD_SQL + ")"
    " INSERT INTO {checkpoints} (checkpoint_id, trace_id, step, parent_id, graph_hash,"
    " created_at, current_node, metadata, size, data)"
    " SELECT %s::uuid, %s::text, %s::bigint, %s::uuid, %s::bigint, %s::timestamptz,"
    " %s::text, %s::jsonb, %s::integer, %b::bytea FROM lease"
)
_LOAD_WRITES_MANY_SQL: Final = (
    "SELECT checkpoint_id, task_id, idx, trace_id, data FROM {writes} WHERE checkpoint_id = ANY(%s)"
)
# Steps at or below the (keep+1)-th newest; NULL (so nothing) when the trace is shorter.
_PRUNE_KEEP_SQL: Final = (
    " AND step <= (SELECT step FROM {checkpoints} WHERE trace_id = %(trace)s"
    " ORDER BY step DESC LIMIT 1 OFFSET %(keep)s)"
)
_PRUNE_CUTOFF_SQL: Final = " AND created_at < %(cutoff)s"
# A rewrite replaces the data of the row whose whole header matches. jsonb's `=`
# holds 1 equal to 1.0, so metadata is compared as jsonb's canonical text (keys
# sorted, numbers as written): the store writes every value in one form.
_REWRITE_SQL: Final = (
    "UPDATE {checkpoints} SET size = %s, data = %b WHERE checkpoint_id = %s"
    " AND trace_id = %s AND step = %s AND parent_id IS NOT DISTINCT FROM %s"
    " AND graph_hash = %s AND created_at = %s AND current_node IS NOT DISTINCT FROM %s"
    " AND metadata::text = (%s::jsonb)::text"
)
_HEADER_FOR_UPDATE_SQL: Final = (
    f"SELECT {_HEADER}, size FROM {{checkpoints}} WHERE checkpoint_id = %s FOR UPDATE"
)
_REWRITE_BY_ID_SQL: Final = "UPDATE {checkpoints} SET size = %s, data = %b WHERE checkpoint_id = %s"


class Statements:
    """Every statement of one store, with its schema and table names filled in."""

    def __init__(self, schema: str, prefix: str) -> None:
        from psycopg import sql

        names = {
            "checkpoints": f"{prefix}checkpoints",
            "writes": f"{prefix}writes",
            "migrations": f"{prefix}schema_migrations",
            "pkey": f"{prefix}checkpoints_pkey",
            "trace_step": f"{prefix}checkpoints_trace_id_step_key",
            "writes_pkey": f"{prefix}writes_pkey",
            "writes_trace": f"{prefix}writes_trace_id_idx",
            "runs": f"{prefix}runs",
            "runs_pkey": f"{prefix}runs_pkey",
            "runs_queue": f"{prefix}runs_queue_idx",
            "workers": f"{prefix}workers",
            "workers_pkey": f"{prefix}workers_pkey",
            "worker_graphs": f"{prefix}worker_graphs",
            "worker_graphs_pkey": f"{prefix}worker_graphs_pkey",
        }
        for name in (schema, *names.values()):
            if len(name.encode()) > _MAX_IDENTIFIER_BYTES:
                raise ValueError(f"PostgreSQL names have at most 63 bytes: {name!r} is longer")
        self.pkey = names["pkey"]
        # Rendered once: identifiers are checked above to hold no '%', so the text
        # stays a valid query for psycopg's placeholders.
        identifiers = {
            key: (sql.Identifier(schema, value) if key in _TABLES else sql.Identifier(value))
            for key, value in names.items()
        }

        def render(template: str) -> str:
            return sql.SQL(template).format(**identifiers).as_string(None)

        self.render = render
        """A statement with the store's names filled in (``{runs}``, ``{checkpoints}``...)."""
        self.runs_channel = f"{schema}.{prefix}runs"
        """The channel the run queue notifies when a run becomes ready to claim."""

        self.migrations = tuple(
            tuple(render(statement) for statement in step) for step in MIGRATIONS
        )
        self.create_migrations_table = render(_CREATE_MIGRATIONS_TABLE)
        self.schema_version = render("SELECT max(version) FROM {migrations}")
        self.record_migration = render("INSERT INTO {migrations} (version) VALUES (%s)")
        self.insert = render(_INSERT_SQL)
        self.load = render(_LOAD_SQL)
        self.latest = render(_LATEST_SQL)
        self.steps = render(_STEPS_SQL)
        self.history = render(_HISTORY_SQL)
        self.history_before = render(_HISTORY_BEFORE_SQL)
        self.traces = render(_TRACES_SQL)
        self.trace_rows = render(_TRACE_ROWS_SQL)
        self.ids_from = render(_IDS_FROM_SQL)
        self.ids_between = render(_IDS_BETWEEN_SQL)
        self.delete_many = render(_DELETE_MANY_SQL)
        self.delete_trace = render(_DELETE_TRACE_SQL)
        self._prune = {
            (keep, cutoff): render(
                _prune_with_writes(
                    _PRUNE_SQL
                    + (_PRUNE_KEEP_SQL if keep else "")
                    + (_PRUNE_CUTOFF_SQL if cutoff else "")
                )
            )
            for keep in (False, True)
            for cutoff in (False, True)
        }
        self.insert_fenced = render(_INSERT_FENCED_SQL)
        self.lease_held = render(_LEASE_HELD_SQL)
        self.lock_writes = _LOCK_WRITES_SQL
        self.writes_trace = render(_WRITES_TRACE_SQL)
        self.insert_writes_keep = render(_INSERT_WRITES_SQL + _ON_CONFLICT_KEEP)
        self.insert_writes_replace = render(_INSERT_WRITES_SQL + _ON_CONFLICT_REPLACE)
        self.load_writes = render(_LOAD_WRITES_SQL)
        self.latest_with_writes = render(_LATEST_WITH_WRITES_SQL)
        self.load_writes_many = render(_LOAD_WRITES_MANY_SQL)
        self.rewrite = render(_REWRITE_SQL)
        self.header_for_update = render(_HEADER_FOR_UPDATE_SQL)
        self.rewrite_by_id = render(_REWRITE_BY_ID_SQL)
        self.create_schema = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))
        self.schema = schema

    def insert_batch(self, rows: int) -> str:
        """The INSERT of ``rows`` checkpoints at once, returning the ids of those that went in."""
        return self.insert + _INSERT_ROW * (rows - 1) + _INSERT_BATCH_END

    def prune(self, *, keep: bool, cutoff: bool) -> str:
        """The prune, by the rules given: ``%(trace)s``, ``%(keep)s``, ``%(cutoff)s``.

        It deletes the checkpoints with their writes, and returns how many it deleted.
        """
        return self._prune[keep, cutoff]
