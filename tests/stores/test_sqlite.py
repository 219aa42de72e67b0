"""What only the SQLite backend promises; the shared contract is in tests/conformance/."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flowpoint import open_store
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import new_checkpoint_id
from flowpoint.stores import _sqlite_sql as sqlite_sql
from flowpoint.stores import sqlite as sqlite_module
from flowpoint.stores._base import PruneRule
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.blobs import make_blob
from tests.harnesses.file import tree_snapshot
from tests.harnesses.sqlite import SqliteHarness
from tests.processes import run_processes
from tests.stores import upgrade
from tests.stores.damage import check_a_damaged_trace_id_is_reported


def connect(path: Path) -> closing[sqlite3.Connection]:
    """A plain connection of the test's own, closed on leaving the ``with``."""
    return closing(sqlite3.connect(path, timeout=10.0, isolation_level=None))


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    with connect(path) as conn:
        return conn.execute(sql, params).fetchall()


async def on_store_thread(store: SqliteBlobStore, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run ``fn`` with the store's own connection, on the store's own thread."""
    return await store._run("test", lambda conn, _: fn(conn), None)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteBlobStore]:
    async with SqliteBlobStore(db_path) as opened:
        yield opened


# -- connection settings ----------------------------------------------------------------


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
async def test_wal_mode_and_synchronous_level(
    db_path: Path, durability: Any, synchronous: int
) -> None:
    async with SqliteBlobStore(db_path, durability=durability, busy_timeout=2.5) as store:
        await store.traces()
        settings = await on_store_thread(
            store,
            lambda conn: [
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "busy_timeout", "wal_autocheckpoint")
            ],
        )
    assert settings == ["wal", synchronous, 2500, 200]
    assert execute(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_default_durability_is_full(db_path: Path) -> None:
    assert repr(SqliteBlobStore(db_path)).endswith("durability='full')")


@pytest.mark.parametrize(
    "kwargs",
    [{"durability": "fast"}, {"busy_timeout": -1}, {"busy_timeout": float("nan")}],
)
def test_bad_options_are_refused(db_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"durability|busy_timeout"):
        SqliteBlobStore(db_path, **kwargs)


@pytest.mark.parametrize("path", [":memory:", ""])
def test_an_in_memory_database_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="memory://"):
        SqliteBlobStore(path)


async def test_schema_is_versioned(store: SqliteBlobStore, db_path: Path) -> None:
    await store.traces()
    assert execute(db_path, "SELECT version FROM flowpoint_schema") == [(1,), (2,)]


async def test_a_file_of_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "release.db"
    shutil.copyfile(Path(__file__).parent / "data" / "sqlite-v1.db", path)
    assert execute(path, "SELECT version FROM flowpoint_schema") == [(1,)]
    async with SqliteBlobStore(path) as store:
        await upgrade.check_upgraded(store)
    assert execute(path, "SELECT version FROM flowpoint_schema") == [(1,), (2,)]
    # Upgraded once: a second opening finds it done.
    async with SqliteBlobStore(path) as store:
        assert len(await store.history(upgrade.TRACES[1])) == 3
    assert execute(path, "SELECT version FROM flowpoint_schema") == [(1,), (2,)]


# -- queries ----------------------------------------------------------------------------


def query_plan(path: Path, sql: str, params: tuple[object, ...] | dict[str, object]) -> str:
    with connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return "\n".join(row[-1] for row in rows)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        (sqlite_sql.LATEST, ("t",)),
        (sqlite_sql.HISTORY, ("t", 20)),
        (sqlite_sql.HISTORY_BEFORE, ("t", 10, 20)),
        (sqlite_sql.TRACES, ()),
        (sqlite_sql.LOAD, (b"0" * 16,)),
        (sqlite_sql.DELETE_TRACE, ("t",)),
        (sqlite_sql.IDS_BETWEEN, (b"0" * 16, b"1" * 16, 2)),
        (sqlite_sql.LOAD_WRITES, (b"0" * 16,)),
        (sqlite_sql.LOAD_WRITES_MANY + "(?, ?)", (b"0" * 16, b"1" * 16)),
        (sqlite_sql.WRITES_TRACE, (b"0" * 16,)),
        (sqlite_sql.DELETE_WRITES, (b"0" * 16,)),
        (sqlite_sql.DELETE_TRACE_WRITES, ("t",)),
        (
            sqlite_sql.PRUNE + sqlite_sql.PRUNE_KEEP + sqlite_sql.PRUNE_CUTOFF,
            {"trace": "t", "keep": 3, "cutoff": 0},
        ),
    ],
)
async def test_queries_use_an_index_and_never_sort(
    store: SqliteBlobStore, db_path: Path, sql: str, params: Any
) -> None:
    await store.traces()
    plan = query_plan(db_path, sql, params)
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    # A scan is only fine over a covering index (traces() reads the whole index).
    for line in plan.splitlines():
        assert not line.startswith("SCAN") or "COVERING INDEX" in line, plan


async def test_listings_never_read_data(store: SqliteBlobStore) -> None:
    for step in range(3):
        await store.save(make_blob(step=step, data=os.urandom(100_000)))
    reads: list[tuple[str | None, str | None]] = []

    def authorizer(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ:
            reads.append((arg1, arg2))
        return sqlite3.SQLITE_OK

    await on_store_thread(store, lambda conn: conn.set_authorizer(authorizer))
    assert [info.size for info in await store.history("trace")] == [100_000] * 3
    assert [info.step for info in await store.history("trace", before_step=2)] == [1, 0]
    assert await store.traces() == ["trace"]
    assert reads, "the authorizer saw no reads"
    assert ("flowpoint_checkpoints", "data") not in reads
    # The authorizer does see the column when a query reads it.
    await store.load_latest("trace")
    assert ("flowpoint_checkpoints", "data") in reads


async def test_blocking_work_runs_off_the_event_loop_thread(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    real_connect = sqlite3.connect

    def spy_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.add(threading.current_thread().name)
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda _: threads.add(threading.current_thread().name))
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy_connect)  # the module the store calls
    blob = make_blob()
    async with SqliteBlobStore(db_path) as store:
        await store.save(blob)
        await store.load(blob.checkpoint_id)
        await store.load_latest("trace")
        await store.history("trace")
        await store.traces()
        await store.prune("trace", PruneRule(keep_latest=1, older_than=None))
        await store.delete(blob.checkpoint_id)
        await store.delete_trace("trace")
    assert threads
    assert threading.current_thread().name not in threads
    assert all(name.startswith("flowpoint-sqlite") for name in threads), threads


# -- how values are stored --------------------------------------------------------------


async def test_header_columns_round_trip(store: SqliteBlobStore, db_path: Path) -> None:
    parent = new_checkpoint_id()
    blob = make_blob(
        step=7,
        parent_id=parent,
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        current_node=None,
        metadata={"s": "é", "i": -(2**63), "f": 0.5, "b": True, "n": None},
        data=b"",
    )
    await store.save(blob)
    loaded = await store.load(blob.checkpoint_id)
    assert loaded == blob
    assert loaded is not None
    assert loaded.created_at.tzinfo == UTC
    assert loaded.parent_id == parent
    assert execute(db_path, "SELECT graph_hash, created_at, size FROM flowpoint_checkpoints") == [
        (-1, 1_767_315_845_678_901, 0)
    ]


async def test_unique_violations_become_conflicts(store: SqliteBlobStore) -> None:
    first = make_blob()
    await store.save(first)
    with pytest.raises(CheckpointConflict) as same_step:
        await store.save(make_blob())
    assert isinstance(same_step.value.__cause__, sqlite3.IntegrityError)
    assert (same_step.value.trace_id, same_step.value.step) == ("trace", 0)
    with pytest.raises(CheckpointConflict, match=r"checkpoint id .* exists"):
        await store.save(make_blob("other", 5, checkpoint_id=first.checkpoint_id))
    assert await store.traces() == ["trace"]


# -- damaged rows -----------------------------------------------------------------------

LOAD, LATEST, HISTORY, TRACES = "load", "load_latest", "history", "traces"
HOLDS = "writes_if_latest"  # never raises: a damaged row is not the blob it is asked about
HEADER_READS = {LOAD, LATEST, HISTORY}


@pytest.mark.parametrize(
    ("column", "value", "raising"),
    [
        ("created_at", "yesterday", HEADER_READS),
        ("created_at", 1.5, HEADER_READS),
        ("created_at", 2**62, HEADER_READS),  # beyond datetime's range
        ("step", "three", HEADER_READS),
        ("step", -1, HEADER_READS),
        ("graph_hash", "0xdead", HEADER_READS),
        ("graph_hash", 0.5, HEADER_READS),
        ("parent_id", b"short", HEADER_READS),
        ("parent_id", 7, HEADER_READS),
        ("current_node", b"\x00node", HEADER_READS),
        ("metadata", "not json", HEADER_READS),
        ("metadata", "[1, 2]", HEADER_READS),
        ("metadata", 5, HEADER_READS),  # TEXT affinity turns it into '5'
        ("metadata", '{"nested": {"a": 1}}', HEADER_READS),
        ("metadata", '{"big": 1e999}', HEADER_READS),
        ("metadata", b"{}", HEADER_READS),
        ("checkpoint_id", b"too short", {LATEST, HISTORY}),
        ("checkpoint_id", "not bytes", {LATEST, HISTORY}),
        ("trace_id", b"trace", {LOAD, TRACES}),  # found by id, no longer by trace
        ("trace_id", "bad\nid", {LOAD, TRACES}),
        ("size", "big", {HISTORY}),
        ("size", -1, {HISTORY}),
        ("data", "not bytes", {LOAD, LATEST}),
        ("data", 42, {LOAD, LATEST}),
    ],
)
async def test_a_column_of_the_wrong_kind_is_corrupt(
    store: SqliteBlobStore, db_path: Path, column: str, value: object, raising: set[str]
) -> None:
    blob = make_blob()
    await store.save(blob)
    execute(
        db_path,
        f"UPDATE flowpoint_checkpoints SET {column} = ? WHERE checkpoint_id = ?",
        (value, blob.checkpoint_id.bytes),
    )
    calls = {
        LOAD: lambda: store.load(blob.checkpoint_id),
        LATEST: lambda: store.load_latest("trace"),
        HOLDS: lambda: store.writes_if_latest(blob),
        HISTORY: lambda: store.history("trace"),
        TRACES: store.traces,
    }
    for name, call in calls.items():
        if name in raising:
            with pytest.raises(CorruptCheckpoint) as caught:
                await call()
            if column != "checkpoint_id" and name != TRACES:
                assert caught.value.checkpoint_id == blob.checkpoint_id, name
            assert column in caught.value.reason, name
        else:
            await call()  # the damage is in a column this call does not read


async def test_harness_mangles_a_header_into_corruption() -> None:
    harness = SqliteHarness()
    try:
        store = await harness.open()
        blob = make_blob()
        await store.save(blob)
        assert await harness.read_data(blob.checkpoint_id) == b"payload"
        await harness.write_data(blob.checkpoint_id, b"other")
        assert [info.size for info in await (await harness.open()).history("trace")] == [5]
        await harness.mangle_header(blob.checkpoint_id)
        with pytest.raises(CorruptCheckpoint, match="created_at"):
            await store.load(blob.checkpoint_id)
    finally:
        await harness.cleanup()


@pytest.mark.parametrize("trace_id", ["tab\there", b"\x00bytes", "x" * 300])
async def test_a_damaged_trace_id_is_reported_with_its_rows(
    store: SqliteBlobStore, db_path: Path, trace_id: object
) -> None:
    async def damage(trace: str) -> None:
        sql = "UPDATE flowpoint_checkpoints SET trace_id = ? WHERE trace_id = ?"
        execute(db_path, sql, (trace_id, trace))

    await check_a_damaged_trace_id_is_reported(store, damage)


# -- failures of the database -----------------------------------------------------------


@pytest.mark.parametrize("version", [99, "one"])
async def test_an_unknown_schema_version_is_refused(db_path: Path, version: object) -> None:
    async with SqliteBlobStore(db_path) as store:
        await store.save(make_blob())
    execute(db_path, "UPDATE flowpoint_schema SET version = ?", (version,))
    async with SqliteBlobStore(db_path) as store:
        with pytest.raises(StorageError, match=r"newer flowpoint|unrecognised"):
            await store.load_latest("trace")
        # The refusal is not cached half-open: every call refuses again.
        with pytest.raises(StorageError, match="schema version"):
            await store.save(make_blob(step=1))
    assert execute(db_path, "SELECT count(*) FROM flowpoint_checkpoints") == [(1,)]


def _missing_directory(tmp_path: Path) -> Path:
    return tmp_path / "no" / "such" / "dir" / "x.db"


def _directory_is_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_bytes(b"")
    return tmp_path / "file" / "x.db"


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.mark.parametrize("make_path", [_missing_directory, _directory_is_a_file, _not_a_database])
async def test_a_path_that_cannot_hold_a_database_fails_as_storage_error(
    tmp_path: Path, make_path: Callable[[Path], Path]
) -> None:
    async with SqliteBlobStore(make_path(tmp_path)) as store:
        with pytest.raises(StorageError) as caught:
            await store.save(make_blob())
        assert isinstance(caught.value.__cause__, sqlite3.Error | OSError)
        with pytest.raises(StorageError):  # and again: nothing half-open was kept
            await store.load_latest("trace")


async def test_an_unwritable_location_fails_as_storage_error() -> None:
    # Nobody, not even root, may create files in /proc: this holds in CI, which runs as root.
    async with SqliteBlobStore("/proc/flowpoint-unwritable.db") as store:
        with pytest.raises(StorageError) as caught:
            await store.save(make_blob())
    assert isinstance(caught.value.__cause__, sqlite3.Error | OSError)


async def test_a_held_write_lock_times_out_as_storage_error(db_path: Path) -> None:
    async with SqliteBlobStore(db_path, busy_timeout=0.05) as store:
        await store.traces()
        with connect(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StorageError, match="locked") as caught:
                    await store.save(make_blob())
            finally:
                other.execute("ROLLBACK")
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        await store.save(make_blob())  # the store works again once the lock is gone


# -- lifecycle --------------------------------------------------------------------------


async def test_closing_twice_is_harmless(db_path: Path) -> None:
    store = SqliteBlobStore(db_path)
    await store.save(make_blob())
    await store.close()
    await store.close()
    await SqliteBlobStore(db_path).close()  # never used, nothing opened


async def test_a_call_made_before_close_finishes(db_path: Path) -> None:
    store = SqliteBlobStore(db_path)
    blob = make_blob()
    saving = asyncio.create_task(store.save(blob))
    await asyncio.sleep(0)  # the save is now queued on the store's thread
    await store.close()
    await saving
    async with SqliteBlobStore(db_path) as again:
        assert await again.load(blob.checkpoint_id) == blob


async def test_two_stores_on_one_file_see_each_others_writes(db_path: Path) -> None:
    async with SqliteBlobStore(db_path) as first, SqliteBlobStore(db_path) as second:
        assert await first.load_latest("trace") is None
        older, newer = make_blob(step=0), make_blob(step=1)
        await first.save(older)
        assert await second.load_latest("trace") == older
        await second.save(newer)
        assert await first.load_latest("trace") == newer
        with pytest.raises(CheckpointConflict):
            await first.save(make_blob(step=1))
        assert await first.delete(newer.checkpoint_id)
        assert await second.load_latest("trace") == older
        assert await second.traces() == ["trace"]


# -- several processes ------------------------------------------------------------------


def _initialise_after_barrier(paths: list[str], barrier: Any, results: Any, name: str) -> None:
    """Run in a child process: for each new file, wait for the other process, then save."""

    async def run(path: str) -> None:
        async with SqliteBlobStore(path, busy_timeout=30.0) as store:
            await store.save(make_blob(name))

    outcomes = []
    for path in paths:
        barrier.wait()
        try:
            asyncio.run(run(path))
            outcomes.append("saved")
        except BaseException as exc:
            outcomes.append(f"error: {exc!r}")
    results.put(outcomes)


@pytest.mark.slow
async def test_two_processes_setting_up_a_new_file_at_once_both_succeed(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"new-{i}.db") for i in range(20)]
    outcomes = await asyncio.to_thread(
        run_processes, _initialise_after_barrier, [(paths, "first"), (paths, "second")]
    )
    assert outcomes == [["saved"] * len(paths)] * 2
    for path in paths:
        assert execute(Path(path), "SELECT trace_id FROM flowpoint_checkpoints ORDER BY 1") == [
            ("first",),
            ("second",),
        ]
        assert execute(Path(path), "SELECT version FROM flowpoint_schema") == [(1,), (2,)]


# Group commit


async def queued(store: SqliteBlobStore, count: int) -> None:
    """Wait until ``count`` saves wait in the store's queue."""
    while len(store._queue) < count:  # noqa: ASYNC110 - polling private state, in a test
        await asyncio.sleep(0.001)


def occupy(store: SqliteBlobStore) -> threading.Event:
    """Keep the store's thread busy until the returned event is set."""
    release = threading.Event()
    store._work_thread.post(release.wait)
    return release


async def test_saves_queued_together_commit_in_one_transaction(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteBlobStore(db_path) as store:
        await store.traces()  # open the file
        batches: list[int] = []
        insert = sqlite_module._insert_rows

        def counting(conn: sqlite3.Connection, rows: list[Any]) -> list[Any]:
            batches.append(len(rows))
            return insert(conn, rows)

        monkeypatch.setattr(sqlite_module, "_insert_rows", counting)
        blobs = [make_blob(trace_id=f"t{n % 4}", step=n // 4) for n in range(32)]
        same_step = make_blob(trace_id="t0", step=0)
        same_id = make_blob(trace_id="other", step=0, checkpoint_id=blobs[5].checkpoint_id)
        # Each conflict in the middle of the batch: it undoes its own row only.
        order = [*blobs[:16], same_step, *blobs[16:24], same_id, *blobs[24:]]
        loop = asyncio.get_running_loop()
        wake_ups: list[object] = []
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
            wake_ups.append(callback)
            return call_soon_threadsafe(callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        # Keep the store's thread busy so every save is queued before the first commit.
        release = occupy(store)
        try:
            saves = asyncio.gather(*(store.save(blob) for blob in order), return_exceptions=True)
            await queued(store, 34)
        finally:
            release.set()
        outcomes = await saves
        # The batch's 34 callers, all on this loop, are told in one call.
        assert wake_ups.count(sqlite_module._settle) == 1
        refused = [order[n] for n, outcome in enumerate(outcomes) if outcome is not None]
        assert refused == [same_step, same_id]
        assert all(isinstance(outcomes[order.index(blob)], CheckpointConflict) for blob in refused)
        assert batches == [34]
        for n in range(4):
            assert [i.step for i in await store.history(f"t{n}")] == list(range(7, -1, -1))
        assert await store.history("other") == []
        stored = await store.load(blobs[0].checkpoint_id)
        assert stored is not None
        assert stored.data == blobs[0].data


async def test_a_batch_longer_than_one_insert_keeps_each_rows_outcome(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteBlobStore(db_path) as store:
        await store.traces()
        statements: list[str] = []
        insert = sqlite_module._insert_rows

        def traced(conn: sqlite3.Connection, rows: list[Any]) -> list[Any]:
            conn.set_trace_callback(statements.append)
            try:
                return insert(conn, rows)
            finally:
                conn.set_trace_callback(None)

        monkeypatch.setattr(sqlite_module, "_insert_rows", traced)
        blobs = [make_blob(trace_id=f"t{n % 5}", step=n // 5) for n in range(150)]
        conflict = make_blob(trace_id="t1", step=3)  # in the second INSERT's rows
        order = [*blobs[:100], conflict, *blobs[100:]]
        release = occupy(store)
        try:
            saves = asyncio.gather(*(store.save(blob) for blob in order), return_exceptions=True)
            await queued(store, len(order))
        finally:
            release.set()
        outcomes = await saves
        assert [n for n, outcome in enumerate(outcomes) if outcome is not None] == [100]
        assert isinstance(outcomes[100], CheckpointConflict)
        for n in range(5):
            assert [i.step for i in await store.history(f"t{n}")] == list(range(29, -1, -1))
        inserts = [s for s in statements if s.startswith("INSERT")]
        # 64 rows in one INSERT; the chunk with the conflict again row by row; the rest.
        assert len(inserts) == 1 + 1 + 64 + 1


async def test_a_failed_commit_fails_every_save_of_the_batch(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteBlobStore(db_path) as store:
        await store.traces()

        def broken(conn: sqlite3.Connection, rows: list[Any]) -> list[Any]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(sqlite_module, "_insert_rows", broken)
        outcomes = await asyncio.gather(
            *(store.save(make_blob(trace_id="t", step=n)) for n in range(5)), return_exceptions=True
        )
        assert all(isinstance(outcome, StorageError) for outcome in outcomes)
        assert all(isinstance(o.__cause__, sqlite3.OperationalError) for o in outcomes)
        assert await store.history("t") == []


async def test_a_cancelled_save_does_not_disturb_the_others(db_path: Path) -> None:
    async with SqliteBlobStore(db_path) as store:
        await store.traces()
        release = occupy(store)
        try:
            first = asyncio.ensure_future(store.save(make_blob(trace_id="t", step=0)))
            second = asyncio.ensure_future(store.save(make_blob(trace_id="t", step=1)))
            await queued(store, 2)
            first.cancel()
        finally:
            release.set()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        # The cancelled save was queued already: it commits with the other.
        assert [info.step for info in await store.history("t")] == [1, 0]


# -- read-only opening -------------------------------------------------------------------


async def test_read_only_reads_a_file_of_the_previous_release_without_upgrading_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "release.db"
    shutil.copyfile(Path(__file__).parent / "data" / "sqlite-v1.db", path)
    before = path.read_bytes()
    blobs = upgrade.release_blobs()
    async with SqliteBlobStore(path, read_only=True) as store:
        assert await store.traces() == sorted(upgrade.TRACES)
        assert await store.load(blobs[0].checkpoint_id) == blobs[0]
        assert await store.load_writes(blobs[0].checkpoint_id) == []  # no writes table yet
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["release.db"]
    assert execute(path, "SELECT version FROM flowpoint_schema") == [(1,)]


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    return path


def _another_applications_database(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    execute(path, "CREATE TABLE users (name TEXT)")
    return path


@pytest.mark.parametrize(
    ("make_path", "reason"),
    [
        (lambda tmp_path: tmp_path / "missing.db", "no such file"),
        (_missing_directory, "no such file"),
        (_empty_file, "no flowpoint tables"),
        (_another_applications_database, "no flowpoint tables"),
        (_not_a_database, "not a database"),
    ],
)
async def test_read_only_opening_refuses_what_is_not_a_store_and_creates_nothing(
    tmp_path: Path, make_path: Callable[[Path], Path], reason: str
) -> None:
    path = make_path(tmp_path)
    before = tree_snapshot(str(tmp_path))
    async with open_store(f"sqlite:///{path}", read_only=True) as store:
        with pytest.raises(StorageError, match=f"is not a flowpoint store: .*{reason}"):
            await store.traces()
        with pytest.raises(StorageError, match="not a flowpoint store"):
            await store.load_latest("t")  # and again: nothing half-open was kept
    assert tree_snapshot(str(tmp_path)) == before


async def test_a_read_only_store_reads_a_file_this_process_may_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints.db"
    async with SqliteBlobStore(path) as writer:
        await writer.save(make_blob())
    # The tests may run as root, whom permissions do not stop: say the file is not writable.
    monkeypatch.setattr(sqlite_module.os, "access", lambda path, mode: mode != os.W_OK)
    async with SqliteBlobStore(path, read_only=True) as store:
        assert [info.step for info in await store.history("trace")] == [0]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA query_only=OFF")  # only the open mode is left to refuse
            conn.execute("CREATE TABLE intruder (x)")

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await on_store_thread(store, write)
