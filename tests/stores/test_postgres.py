"""What only the PostgreSQL backend promises; the shared contract is in tests/conformance/."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from flowpoint import open_store
from flowpoint.blob import PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import new_checkpoint_id
from flowpoint.stores import _postgres_sql as postgres_sql
from flowpoint.stores._base import PruneRule
from flowpoint.stores.postgres import PostgresBlobStore
from tests.blobs import make_blob
from tests.harnesses.postgres import PostgresHarness, create_database, url_for
from tests.proxy import OutageProxy
from tests.stores import group_commit_child, upgrade
from tests.stores.damage import check_a_damaged_trace_id_is_reported

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def harness() -> AsyncIterator[PostgresHarness]:
    made = PostgresHarness(await create_database())
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def store(harness: PostgresHarness) -> PostgresBlobStore:
    return await harness.open()  # the harness closes it


# -- URLs and options -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
def test_open_store_takes_both_schemes(scheme: str) -> None:
    store = open_store(f"{scheme}://postgres@127.0.0.1:5432/test")
    assert isinstance(store, PostgresBlobStore)
    assert repr(store) == (
        f"PostgresBlobStore({scheme}://postgres@127.0.0.1:5432/test, "
        "schema='public', table_prefix='flowpoint_')"
    )


def test_options_come_from_the_url_and_keywords_override_them() -> None:
    url = (
        "postgresql://postgres@127.0.0.1/test?sslmode=disable&max_size=20&min_size=2"
        "&migrate=false&schema=runs&table_prefix=fp_&timeout=2.5&connect_timeout=3"
    )
    store = open_store(url)
    assert isinstance(store, PostgresBlobStore)
    pool = store._pool
    assert (pool.min_size, pool.max_size, pool.timeout) == (2, 20, 2.5)
    assert store._migrate is False
    assert "schema='runs', table_prefix='fp_'" in repr(store)
    # Only libpq's own parameters reach libpq.
    assert pool.conninfo == (
        "postgresql://postgres@127.0.0.1/test?sslmode=disable&connect_timeout=3"
    )
    overridden = PostgresBlobStore.from_url(url, max_size=5, migrate=True)
    assert (overridden._pool.max_size, overridden._migrate) == (5, True)


def test_the_password_never_shows() -> None:
    store = open_store("postgresql://me:s3cret@127.0.0.1/test")
    assert "s3cret" not in repr(store)
    assert "me:***@127.0.0.1" in repr(store)
    with pytest.raises(ValueError, match="unknown") as caught:
        open_store("postgresql://me:s3cret@127.0.0.1/test?nope=1")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("postgresql://h/db?nope=1", {}, "unknown PostgreSQL URL option 'nope'"),
        ("postgresql://h/db?poolsize=3", {}, "neither a flowpoint option"),
        ("postgresql://h/db?max_size=many", {}, "bad value 'many' for max_size"),
        ("postgresql://h/db?migrate=maybe", {}, "bad value 'maybe' for migrate"),
        ("postgresql://h/db?timeout=soon", {}, "bad value"),
        ("postgresql://h/db?max_size=1&max_size=2", {}, "given twice"),
        ("postgresql://h/db?min_size=5&max_size=2", {}, "max_size"),
        ("postgresql://h/db", {"max_size": 0}, "max_size"),
        ("postgresql://h/db", {"min_size": -1}, "min_size"),
        ("postgresql://h/db", {"timeout": 0}, "timeout"),
        ("postgresql://h/db", {"timeout": float("inf")}, "timeout"),
        ("postgresql://h/db?schema=a;b", {}, "schema"),
        ("postgresql://h/db", {"schema": 'x"y'}, "schema"),
        ("postgresql://h/db", {"table_prefix": "my-prefix"}, "table_prefix"),
        ("postgresql://h/db", {"table_prefix": "1x"}, "table_prefix"),
        ("postgresql://h/db", {"table_prefix": "p" * 60}, "63 bytes"),
        ("postgresql://h/d%zzb", {}, "not a valid PostgreSQL URL"),
        ("postgresql://[::1/db", {}, "IPv6"),
    ],
)
def test_bad_urls_and_options_are_value_errors(
    url: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        open_store(url, **kwargs)


def test_an_unknown_keyword_is_refused() -> None:
    with pytest.raises(TypeError):
        open_store("postgresql://h/db", pool_size=3)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with pytest.raises(ImportError, match=r"pip install 'flowpoint\[postgres\]'"):
        PostgresBlobStore.from_url("postgresql://h/db")


def test_the_module_imports_without_its_driver() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = sys.modules['psycopg_pool'] = None\n"
        "from flowpoint.stores.postgres import PostgresBlobStore\n"
        "try:\n"
        "    PostgresBlobStore.from_url('postgresql://h/db')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'flowpoint[postgres]'" in done.stdout


async def test_the_constructor_connects_to_nothing() -> None:
    # Nothing listens on port 9: only the first call finds out, as a StorageError.
    async with PostgresBlobStore.from_url(
        "postgresql://postgres@127.0.0.1:9/test", timeout=0.2
    ) as store:
        with pytest.raises(StorageError) as caught:
            await store.load_latest("t")
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


# -- schema and migrations --------------------------------------------------------------


async def test_setup_records_each_migration_once(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    await store.setup()
    await store.setup()
    async with await harness.open() as other:
        await other.setup()
    rows = await harness.execute("SELECT version FROM flowpoint_schema_migrations ORDER BY 1")
    assert rows == [(1,), (2,), (3,)] == [(n + 1,) for n in range(len(postgres_sql.MIGRATIONS))]


async def restore_release_dump(harness: PostgresHarness) -> None:
    """Load the database a store of the previous release wrote (see tests/stores/upgrade.py)."""
    dump = (Path(__file__).parent / "data" / "postgres-v1.sql").read_text()
    # psql's own commands (\restrict...) and comments are not SQL.
    script = "\n".join(line for line in dump.splitlines() if not line.startswith(("\\", "--")))
    await harness.execute(script)


async def test_a_database_of_the_previous_release_is_upgraded_in_place(
    harness: PostgresHarness,
) -> None:
    await restore_release_dump(harness)
    migrations = "SELECT version FROM flowpoint_schema_migrations ORDER BY 1"
    assert await harness.execute(migrations) == [(1,)]
    async with await harness.open() as store:
        await upgrade.check_upgraded(store)
    assert await harness.execute(migrations) == [(1,), (2,), (3,)]
    async with await harness.open() as store:
        assert len(await store.history(upgrade.TRACES[1])) == 3
    assert await harness.execute(migrations) == [(1,), (2,), (3,)]


async def test_concurrent_setups_are_serialised(harness: PostgresHarness) -> None:
    stores = [await harness.open() for _ in range(8)]
    await asyncio.gather(*(store.setup() for store in stores))
    assert await harness.execute("SELECT count(*) FROM flowpoint_schema_migrations") == [(3,)]


async def test_schema_and_table_prefix_name_the_tables(harness: PostgresHarness) -> None:
    async with PostgresBlobStore.from_url(harness.url, schema="Runs", table_prefix="fp_") as store:
        await store.save(make_blob())
        assert await store.traces() == ["trace"]
    rows = await harness.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema = 'Runs' ORDER BY 2"
    )
    assert rows == [
        ("Runs", "fp_checkpoints"),
        ("Runs", "fp_runs"),
        ("Runs", "fp_schema_migrations"),
        ("Runs", "fp_worker_graphs"),
        ("Runs", "fp_workers"),
        ("Runs", "fp_writes"),
    ]


async def test_a_newer_schema_version_is_refused(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    await store.save(make_blob())
    await harness.execute("INSERT INTO flowpoint_schema_migrations (version) VALUES (99)")
    async with await harness.open() as newer:
        with pytest.raises(StorageError, match="newer flowpoint"):
            await newer.load_latest("trace")
        # Nothing half-done is cached: every call refuses again.
        with pytest.raises(StorageError, match="schema version 99"):
            await newer.save(make_blob(step=1))
    assert await harness.execute("SELECT count(*) FROM flowpoint_checkpoints") == [(1,)]


async def test_migrate_false_leaves_the_database_alone(harness: PostgresHarness) -> None:
    async with PostgresBlobStore.from_url(harness.url, migrate=False) as store:
        with pytest.raises(StorageError) as caught:
            await store.load_latest("t")
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    assert await harness.execute("SELECT to_regclass('flowpoint_schema_migrations')") == [(None,)]


async def test_queries_use_the_trace_step_index(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    await store.setup()
    await harness.execute(
        "INSERT INTO flowpoint_checkpoints "
        "SELECT gen_random_uuid(), 't' || t, s, NULL, 0, now(), NULL, '{}', 1, 'x' "
        "FROM generate_series(0, 199) t, generate_series(0, 49) s"
    )
    await harness.execute(
        "INSERT INTO flowpoint_writes "
        "SELECT checkpoint_id, 'task' || i, 0, trace_id, 'x' "
        "FROM flowpoint_checkpoints, generate_series(0, 1) i"
    )
    await harness.execute("ANALYZE flowpoint_checkpoints")
    await harness.execute("ANALYZE flowpoint_writes")
    sql = store._sql
    some_id = new_checkpoint_id()
    cases: list[tuple[str, tuple[Any, ...] | dict[str, Any]]] = [
        (sql.latest, ("t7",)),
        (sql.history, ("t7", 20)),
        (sql.history_before, ("t7", 45, 20)),
        (sql.traces, ()),
        (sql.prune(keep=True, cutoff=True), {"trace": "t7", "keep": 3, "cutoff": 0}),
        (sql.delete_trace, {"trace": "t7"}),
    ]
    for query, params in cases:
        if isinstance(params, dict):
            params = {**params, "cutoff": datetime.now(UTC)}
        plan = "\n".join(
            row[0] for row in await harness.execute(f"EXPLAIN VERBOSE {query}", params)
        )
        assert "flowpoint_checkpoints_trace_id_step_key" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "Sort" not in plan, plan
        if query is not sql.latest:
            # Listings and deletes never read the data column.
            assert ".data" not in plan, plan
    writes_cases: list[tuple[str, Any, str]] = [
        (sql.load_writes, (some_id,), "flowpoint_writes_pkey"),
        (sql.load_writes_many, ([some_id, new_checkpoint_id()],), "flowpoint_writes_pkey"),
        (sql.writes_trace, (some_id,), "flowpoint_writes_pkey"),
        (sql.delete_many, {"ids": [some_id]}, "flowpoint_writes_pkey"),
        (sql.ids_between, (some_id, some_id, 2), "flowpoint_checkpoints_pkey"),
        (sql.delete_trace, {"trace": "t7"}, "flowpoint_writes_trace_id_idx"),
    ]
    for query, params, index in writes_cases:
        plan = "\n".join(
            row[0] for row in await harness.execute(f"EXPLAIN VERBOSE {query}", params)
        )
        assert index in plan, plan
        assert "Seq Scan" not in plan, plan
    assert len(await store.traces()) == 200


# -- how values are stored --------------------------------------------------------------


async def test_header_columns_round_trip(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    parent = new_checkpoint_id()
    metadata = {
        "s": "é '; --",
        "i": -(2**63),
        "big": 2**63 - 1,
        "f": 0.5,
        "whole": 3.0,
        "huge": 1e300,
        "e16": 1e16,
        "tiny": 5e-324,
        "neg": -1.25e-7,
        "b": True,
        "n": None,
    }
    blob = make_blob(
        step=7,
        parent_id=parent,
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        current_node=None,
        metadata=metadata,
        data=b"",
    )
    await store.save(blob)
    loaded = await store.load(blob.checkpoint_id)
    assert loaded == blob
    assert loaded is not None
    assert {k: type(v) for k, v in loaded.metadata.items()} == {
        k: type(v) for k, v in metadata.items()
    }
    assert loaded.created_at.tzinfo == UTC
    assert (await store.history("trace"))[0] == blob.info()
    assert await harness.execute(
        "SELECT graph_hash, created_at = '2026-01-02 01:04:05.678901+00', size, "
        "jsonb_typeof(metadata) FROM flowpoint_checkpoints"
    ) == [(-1, True, 0, "object")]


async def test_unique_violations_become_conflicts(store: PostgresBlobStore) -> None:
    first = make_blob()
    await store.save(first)
    with pytest.raises(CheckpointConflict) as same_step:
        await store.save(make_blob())
    assert isinstance(same_step.value.__cause__, psycopg.errors.UniqueViolation)
    assert (same_step.value.trace_id, same_step.value.step, same_step.value.detail) == (
        "trace",
        0,
        None,
    )
    with pytest.raises(CheckpointConflict, match=r"checkpoint id .* exists") as same_id:
        await store.save(make_blob("other", 5, checkpoint_id=first.checkpoint_id))
    assert (same_id.value.trace_id, same_id.value.step) == ("other", 5)
    assert await store.traces() == ["trace"]


async def test_the_latest_check_and_its_writes_are_one_query(store: PostgresBlobStore) -> None:
    latest = make_blob("t", 1)
    await store.save(make_blob("t", 0))
    await store.save(latest)
    writes = [PendingWrite("t", latest.checkpoint_id, "task", index, b"w") for index in (1, 0)]
    await store.save_writes(writes)
    queries: list[str] = []
    fetch = store._fetch

    async def counted(query: str, params: Any) -> Any:
        queries.append(query)
        return await fetch(query, params)

    store._fetch = counted  # type: ignore[method-assign]
    found = await store.writes_if_latest(latest)
    assert [(write.task_id, write.index) for write in found or ()] == [("task", 0), ("task", 1)]
    assert len(queries) == 1
    assert await store.writes_if_latest(dataclasses.replace(latest, data=b"other")) is None


async def test_saves_run_in_parallel_on_the_pool(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    await store.setup()
    async with await psycopg.AsyncConnection.connect(harness.url) as other:
        # An uncommitted row of (blocked, 0): a save of the same step waits for it.
        await other.execute(
            "INSERT INTO flowpoint_checkpoints VALUES "
            "(gen_random_uuid(), 'blocked', 0, NULL, 0, now(), NULL, '{}', 1, 'x')"
        )
        waiting = asyncio.create_task(store.save(make_blob("blocked")))
        while not await harness.execute(  # noqa: ASYNC110 - polling the server, in a test
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.01)
        # Meanwhile other saves go through on the pool's other connections.
        await asyncio.gather(*(store.save(make_blob(f"free-{n}")) for n in range(5)))
        assert not waiting.done()
        await other.rollback()
    await waiting
    assert len(await store.traces()) == 6


async def test_calls_beyond_the_pool_size_wait_at_most_the_timeout(
    harness: PostgresHarness,
) -> None:
    async with PostgresBlobStore.from_url(harness.url, max_size=1, timeout=0.3) as store:
        await store.setup()
        async with await psycopg.AsyncConnection.connect(harness.url) as other:
            await other.execute(
                "INSERT INTO flowpoint_checkpoints VALUES "
                "(gen_random_uuid(), 'blocked', 0, NULL, 0, now(), NULL, '{}', 1, 'x')"
            )
            # The only connection waits on the uncommitted row...
            waiting = asyncio.create_task(store.save(make_blob("blocked")))
            while not await harness.execute(  # noqa: ASYNC110 - polling the server, in a test
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.01)
            # ...so the next call gives up after the pool's timeout.
            with pytest.raises(StorageError, match="couldn't get a connection") as caught:
                await store.load_latest("free")
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            await other.commit()
        with pytest.raises(CheckpointConflict):
            await waiting
        assert await store.traces() == ["blocked"]


# -- group commit -------------------------------------------------------------------------


def record_batches(store: PostgresBlobStore) -> list[int]:
    """The number of rows of each batch the store's group commit sends from now on."""
    sizes: list[int] = []
    insert_batch = store._insert_batch

    async def recorded(rows: list[Any]) -> list[bool]:
        sizes.append(len(rows))
        return await insert_batch(rows)

    store._group_commit._commit = recorded
    return sizes


async def test_saves_in_flight_together_are_one_insert(store: PostgresBlobStore) -> None:
    await store.setup()
    batches = record_batches(store)
    blobs = [make_blob(f"trace-{n}", data=f"state {n}".encode()) for n in range(20)]
    await asyncio.gather(*(store.save(blob) for blob in blobs))
    assert batches == [20]
    for blob in blobs:
        assert await store.load(blob.checkpoint_id) == blob
    # One save alone is one INSERT of its own, as before.
    await store.save(make_blob("alone"))
    assert batches == [20]
    assert await store.load_latest("alone") is not None


async def test_each_conflict_in_a_batch_reaches_its_own_caller(store: PostgresBlobStore) -> None:
    stored = make_blob("stored", 0)
    await store.save(stored)
    batches = record_batches(store)
    shared_id = new_checkpoint_id()
    attempts = {
        "stored step": make_blob("stored", 0),
        "stored id": make_blob("elsewhere", 3, checkpoint_id=stored.checkpoint_id),
        "first of an id": make_blob("id-a", 0, checkpoint_id=shared_id),
        "second of an id": make_blob("id-b", 0, checkpoint_id=shared_id),
        "first of a step": make_blob("race", 0),
        "second of a step": make_blob("race", 0),
        "free": make_blob("free", 0),
    }
    outcomes = dict(
        zip(
            attempts,
            await asyncio.gather(
                *(store.save(blob) for blob in attempts.values()), return_exceptions=True
            ),
            strict=True,
        )
    )
    assert batches == [7]
    assert [name for name, outcome in outcomes.items() if outcome is None] == [
        "first of an id",
        "first of a step",
        "free",
    ]
    for name in ("stored step", "second of a step"):
        assert isinstance(outcomes[name], CheckpointConflict)
        assert "exists" not in str(outcomes[name])
    for name in ("stored id", "second of an id"):
        assert isinstance(outcomes[name], CheckpointConflict)
        assert re.search(r"checkpoint id .* exists", str(outcomes[name]))
    assert await store.load(shared_id) == attempts["first of an id"]
    assert await store.load_latest("race") == attempts["first of a step"]
    assert await store.traces() == ["free", "id-a", "race", "stored"]


@pytest.mark.parametrize(
    "refused",
    [
        {"current_node": "nul\x00byte"},  # psycopg refuses it before sending
        {"metadata": {"note": "nul\x00byte"}},  # the server refuses it
    ],
    ids=["client", "server"],
)
async def test_a_row_that_cannot_be_stored_fails_alone_in_its_batch(
    store: PostgresBlobStore, refused: dict[str, Any]
) -> None:
    await store.setup()
    batches = record_batches(store)
    good = [make_blob(f"good-{n}") for n in range(4)]
    bad = make_blob("bad", **refused)
    outcomes = await asyncio.gather(
        *(store.save(blob) for blob in (good[0], good[1], bad, good[2], good[3])),
        return_exceptions=True,
    )
    assert batches == [5]
    assert outcomes[:2] == [None, None]
    assert outcomes[3:] == [None, None]
    assert isinstance(outcomes[2], StorageError)
    assert isinstance(outcomes[2].__cause__, psycopg.DataError)
    assert await store.traces() == [f"good-{n}" for n in range(4)]


async def test_closing_waits_for_the_batch_in_flight(harness: PostgresHarness) -> None:
    store = PostgresBlobStore.from_url(harness.url)
    await store.setup()
    blobs = [make_blob(f"t{n}") for n in range(8)]
    saves = [asyncio.create_task(store.save(blob)) for blob in blobs]
    await asyncio.sleep(0)  # every save is queued
    await store.close()
    assert all(save.done() and save.exception() is None for save in saves)
    async with PostgresBlobStore.from_url(harness.url) as reopened:
        assert len(await reopened.traces()) == 8


def _kill_after(url: str, saves: int) -> list[str]:
    """Run the group-commit child until it acknowledged ``saves`` saves, SIGKILL it; its lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "tests.stores.group_commit_child", url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        try:
            acknowledged = 0
            while acknowledged < saves:
                line = child.stdout.readline()
                assert line, f"the child ended on its own (exit code {child.wait()})"
                lines.append(line)
                acknowledged += line.startswith("saved ")
        finally:
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read()
    # A line cut short by the kill was not acknowledged in full: only whole lines count.
    lines += rest.splitlines(keepends=True)
    return [line.rstrip("\n") for line in lines if line.endswith("\n")]


@pytest.mark.slow
async def test_acknowledged_batched_saves_survive_a_killed_client(
    harness: PostgresHarness,
) -> None:
    rng = random.Random("group-commit-kill")
    lines: list[str] = []
    for _ in range(4):
        lines += await asyncio.to_thread(_kill_after, harness.url, rng.randint(50, 400))
    acknowledged = {line.removeprefix("saved ") for line in lines if line.startswith("saved ")}
    batches = [int(line.removeprefix("batch ")) for line in lines if line.startswith("batch ")]
    assert max(batches) > 1  # the saves went in batches
    async with PostgresBlobStore.from_url(harness.url) as store:
        stored: dict[str, Any] = {}
        for trace in await store.traces():
            step = None
            while page := await store.history(trace, limit=200, before_step=step):
                stored.update((info.checkpoint_id.hex, info) for info in page)
                step = page[-1].step
            # Each writer's steps run from 0 up, with none missing.
            steps = sorted(info.step for info in stored.values() if info.trace_id == trace)
            assert steps == list(range(len(steps)))
        assert acknowledged <= stored.keys()
        for info in stored.values():
            blob = await store.load(info.checkpoint_id)
            assert blob is not None
            assert blob.data == group_commit_child.data_of(info.trace_id, info.step)


# -- rewrites -----------------------------------------------------------------------------


async def test_a_rewrite_decides_by_decoded_metadata_when_the_text_differs(
    harness: PostgresHarness,
) -> None:
    # The one-statement UPDATE compares jsonb's text; metadata stored in another form
    # (0.50, as another writer may have put it) takes the locked read in Python. An
    # application pool (no autocommit, dict rows) runs that read in a savepoint.
    blob = make_blob(metadata={"ratio": 0.5, "attempt": 1})
    async with (
        AsyncConnectionPool(
            harness.url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}, open=False
        ) as pool,
        PostgresBlobStore(pool) as store,
    ):
        await store.save(blob)
        await harness.update(
            blob.checkpoint_id, "metadata = %s::jsonb", ('{"attempt": 1, "ratio": 0.50}',)
        )
        with pytest.raises(CheckpointConflict, match="another metadata"):
            await store.rewrite(
                dataclasses.replace(blob, metadata={"ratio": 0.5, "attempt": 1.0}, data=b"x")
            )
        assert await harness.read_data(blob.checkpoint_id) == b"payload"
        assert await store.rewrite(dataclasses.replace(blob, data=b"rewritten"))
        loaded = await store.load(blob.checkpoint_id)
        assert loaded is not None
        assert (loaded.data, loaded.metadata) == (b"rewritten", blob.metadata)
        assert [info.size for info in await store.history("trace")] == [9]
        assert await store.delete(blob.checkpoint_id)
        assert await store.rewrite(blob) is False


# -- damaged rows -----------------------------------------------------------------------

LOAD, LATEST, HISTORY, TRACES = "load", "load_latest", "history", "traces"
HEADER_READS = {LOAD, LATEST, HISTORY}


@pytest.mark.parametrize(
    ("column", "value", "raising"),
    [
        ("metadata", "'[1, 2]'", HEADER_READS),
        ("metadata", """'{"k": {"nested": 1}}'""", HEADER_READS),
        ("metadata", "'null'", HEADER_READS),
        ("metadata", "'\"text\"'", HEADER_READS),
        ("metadata", """'{"big": 1e999}'""", HEADER_READS),
        ("metadata", """'{"big": 99999999999999999999}'""", HEADER_READS),
        ("created_at", "'infinity'", HEADER_READS),
        ("created_at", "'-infinity'", HEADER_READS),
        ("created_at", "'20000-01-01'", HEADER_READS),
        ("created_at", "'0044-03-15 BC'", HEADER_READS),
        ("step", "-1", HEADER_READS),
        ("size", "-1", {HISTORY}),
        ("trace_id", "E'bad\\nid'", {LOAD, TRACES}),  # found by id, no longer by trace
        ("trace_id", "repeat('x', 300)", {LOAD, TRACES}),
    ],
)
async def test_a_value_of_the_wrong_kind_is_corrupt(
    harness: PostgresHarness, store: PostgresBlobStore, column: str, value: str, raising: set[str]
) -> None:
    blob = make_blob()
    await store.save(blob)
    await harness.update(blob.checkpoint_id, f"{column} = {value}", ())
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        LOAD: lambda: store.load(blob.checkpoint_id),
        LATEST: lambda: store.load_latest("trace"),
        HISTORY: lambda: store.history("trace"),
        TRACES: store.traces,
    }
    for name, call in calls.items():
        if name in raising:
            with pytest.raises(CorruptCheckpoint) as caught:
                await call()
            if name != TRACES:
                assert caught.value.checkpoint_id == blob.checkpoint_id, name
            assert column in caught.value.reason, name
        else:
            await call()  # the damage is in a column this call does not read


async def test_a_damaged_trace_id_is_reported_with_its_rows(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    async def damage(trace: str) -> None:
        sql = "UPDATE flowpoint_checkpoints SET trace_id = %s WHERE trace_id = %s"
        await harness.execute(sql, ("bell\x07", trace))

    await check_a_damaged_trace_id_is_reported(store, damage)


async def test_harness_reaches_under_the_store(harness: PostgresHarness) -> None:
    store = await harness.open()
    blob = make_blob()
    await store.save(blob)
    assert await harness.read_data(blob.checkpoint_id) == b"payload"
    await harness.write_data(blob.checkpoint_id, b"other")
    assert [info.size for info in await (await harness.open()).history("trace")] == [5]
    await harness.mangle_header(blob.checkpoint_id)
    with pytest.raises(CorruptCheckpoint, match="metadata"):
        await store.load(blob.checkpoint_id)


# -- pools and lifecycle ----------------------------------------------------------------


async def test_an_application_pool_is_used_and_left_open(harness: PostgresHarness) -> None:
    # Not autocommit, and rows as dicts: the store copes with the application's settings.
    async with AsyncConnectionPool(
        harness.url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}, open=False
    ) as pool:
        async with PostgresBlobStore(pool) as store:
            blob = make_blob()
            await store.save(blob)
            assert await store.load_latest("trace") == blob
            assert await store.prune("trace", PruneRule(keep_latest=0, older_than=None)) == 1
        await store.close()
        assert not pool.closed
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) AS n FROM flowpoint_checkpoints")
            row: Any = await cursor.fetchone()
            assert row == {"n": 0}
        with pytest.raises(StorageError, match="closed"):
            await store.traces()


async def test_closing_twice_is_harmless(harness: PostgresHarness) -> None:
    store = PostgresBlobStore.from_url(harness.url)
    await store.save(make_blob())
    await store.close()
    await store.close()
    await PostgresBlobStore.from_url(harness.url).close()  # never used, nothing opened


async def test_a_closed_store_refuses_setup(harness: PostgresHarness) -> None:
    # Every method of the interface is refused once closed (tests/conformance); and setup.
    store = PostgresBlobStore.from_url(harness.url)
    await store.close()
    with pytest.raises(StorageError, match="is closed"):
        await store.setup()
    assert await harness.execute("SELECT to_regclass('flowpoint_checkpoints')") == [(None,)]


async def test_an_owned_pool_belongs_to_one_event_loop(store: PostgresBlobStore) -> None:
    await store.save(make_blob())
    with pytest.raises(StorageError, match="another event loop"):
        await asyncio.to_thread(asyncio.run, store.load_latest("trace"))
    assert await store.load_latest("trace") is not None


async def test_an_outage_fails_calls_and_the_same_store_recovers(
    harness: PostgresHarness,
) -> None:
    proxy = OutageProxy("127.0.0.1", 5432)
    try:
        url = url_for(harness.database, f"postgresql://postgres@127.0.0.1:{proxy.port}/x")
        async with PostgresBlobStore.from_url(url, timeout=1.0, max_size=3) as store:
            before = [make_blob(step=n) for n in range(3)]
            for blob in before:
                await store.save(blob)
            proxy.cut()
            with pytest.raises(StorageError) as caught:
                await store.save(make_blob(step=3))
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            # Saves in one batch all meet the outage: whether it was stored is unknown.
            lost = await asyncio.gather(
                *(store.save(make_blob(f"batch-{n}")) for n in range(3)), return_exceptions=True
            )
            assert all(isinstance(outcome, StorageError) for outcome in lost)
            assert all(isinstance(outcome.__cause__, psycopg.OperationalError) for outcome in lost)
            with pytest.raises(StorageError):
                await store.load_latest("trace")
            proxy.restore()
            after = make_blob(step=3)
            await until_it_works(lambda: store.save(after))
            assert await store.load_latest("trace") == after
            assert await store.load(before[0].checkpoint_id) == before[0]
            assert [info.step for info in await store.history("trace")] == [3, 2, 1, 0]
    finally:
        proxy.close()


async def until_it_works(call: Callable[[], Awaitable[object]], patience: float = 30.0) -> None:
    """Retry ``call`` while it raises StorageError: the pool reconnects in the background."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await call()
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- a URL that cannot work, and read-only opening -------------------------------------------


def _wrong_port(harness: PostgresHarness) -> str:
    parts = urlsplit(harness.url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:1"))


def _unknown_role(harness: PostgresHarness) -> str:
    parts = urlsplit(harness.url)
    return urlunsplit(
        parts._replace(netloc=f"nobody_{harness.database}@{parts.hostname}:{parts.port}")
    )


def _unknown_database(harness: PostgresHarness) -> str:
    return url_for(f"{harness.database}_missing")


@pytest.mark.parametrize(
    ("make_url", "reason"),
    [
        (_wrong_port, "Connection refused"),
        (_unknown_role, r'role "nobody_\w+" does not exist'),
        (_unknown_database, r'database "\w+_missing" does not exist'),
    ],
)
async def test_a_url_that_cannot_work_fails_with_the_servers_reason(
    harness: PostgresHarness, make_url: Callable[[PostgresHarness], str], reason: str
) -> None:
    # A pool that only retried would wait out its timeout (here far longer than the
    # test's limit) and then know only that it got no connection.
    async with asyncio.timeout(60):
        async with PostgresBlobStore.from_url(make_url(harness), timeout=600) as store:
            with pytest.raises(StorageError, match=reason) as caught:
                await store.traces()
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            with pytest.raises(StorageError, match=reason):  # every call says so again
                await store.load_latest("t")


async def test_read_only_opening_of_an_empty_database_says_it_is_not_a_store(
    harness: PostgresHarness,
) -> None:
    before = await harness.snapshot()
    async with open_store(harness.url, read_only=True) as store:
        with pytest.raises(StorageError, match="not a flowpoint store: there is no"):
            await store.traces()
    assert await harness.snapshot() == before == ([], {})


async def test_read_only_reads_the_previous_release_without_upgrading_it(
    harness: PostgresHarness,
) -> None:
    await restore_release_dump(harness)
    before = await harness.snapshot()
    blobs = upgrade.release_blobs()
    async with PostgresBlobStore.from_url(harness.url, read_only=True) as store:
        assert await store.traces() == sorted(upgrade.TRACES)
        assert await store.load(blobs[0].checkpoint_id) == blobs[0]
        assert await store.load_writes(blobs[0].checkpoint_id) == []  # no writes table yet
    assert await harness.snapshot() == before


async def test_a_read_only_stores_sessions_refuse_writes_on_the_server(
    harness: PostgresHarness, store: PostgresBlobStore
) -> None:
    await store.save(make_blob())
    async with PostgresBlobStore.from_url(harness.url, read_only=True) as reader:
        await reader.traces()
        async with reader._connection() as conn:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await conn.execute("DELETE FROM flowpoint_checkpoints")
    assert len(await store.history("trace")) == 1
