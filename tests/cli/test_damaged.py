"""One damaged record does not hide the rest: listings, verify, copy and export go on past it."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from flowpoint.ids import CheckpointId
from tests.cli.conftest import (
    Seeded,
    blobs_of,
    damage_sqlite_metadata,
    flowpoint,
    invoke,
    one_line_error,
    seeded_file_store,
    sqlite_url,
)


@dataclass
class Damaged:
    """The seeded store with three records damaged underneath it, each differently."""

    url: str
    ids: dict[str, list[UUID]]
    bad_metadata: UUID
    bad_trace: UUID
    garbage: UUID

    @property
    def intact(self) -> set[UUID]:
        every = {one for ids in self.ids.values() for one in ids}
        return every - {self.bad_metadata, self.bad_trace, self.garbage}


@pytest.fixture
def damaged(seeded: Seeded) -> Damaged:
    bad_metadata, garbage = seeded.ids["alpha"][1], seeded.ids["alpha"][2]
    bad_trace = seeded.ids["beta/one"][1]
    damage_sqlite_metadata(seeded.path, bad_metadata)
    with closing(sqlite3.connect(seeded.path)) as conn, conn:
        conn.execute(
            "UPDATE flowpoint_checkpoints SET trace_id = ? WHERE checkpoint_id = ?",
            ("bad\x00trace", bad_trace.bytes),
        )
        conn.execute(
            "UPDATE flowpoint_checkpoints SET data = ? WHERE checkpoint_id = ?",
            (b"\x00garbage\xff" * 7, garbage.bytes),
        )
    return Damaged(seeded.url, seeded.ids, bad_metadata, bad_trace, garbage)


def _damaged_ids(document: dict[str, object]) -> set[str | None]:
    entries = document["damaged"]
    assert isinstance(entries, list)
    for entry in entries:
        assert set(entry) == {"checkpoint_id", "trace_id", "step", "reason"}
        assert entry["reason"]
    return {entry["checkpoint_id"] for entry in entries}


def test_traces_lists_every_trace_and_reports_the_damage(damaged: Damaged) -> None:
    result = invoke("traces", "--store", damaged.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    rows = {row["trace_id"]: row for row in document["traces"]}
    assert list(rows) == ["alpha", "beta/one"]
    assert rows["alpha"]["checkpoints"] == 2  # steps 0 and 2: step 1's header is damaged
    assert rows["beta/one"]["checkpoints"] == 1
    assert _damaged_ids(document) == {str(damaged.bad_metadata), str(damaged.bad_trace)}
    assert "2 damaged record(s)" in one_line_error(result.stderr)
    done = flowpoint("traces", "--store", damaged.url)
    assert done.returncode == 3
    assert "alpha" in done.stdout
    assert "beta/one" in done.stdout
    assert str(damaged.bad_metadata) in done.stdout
    assert str(damaged.bad_trace) in done.stdout
    assert "flowpoint verify" in one_line_error(done.stderr)


def test_history_lists_past_a_damaged_record(damaged: Damaged) -> None:
    result = invoke("history", "alpha", "--store", damaged.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert [info["step"] for info in document["checkpoints"]] == [2, 0]
    (entry,) = document["damaged"]
    assert (entry["checkpoint_id"], entry["trace_id"], entry["step"]) == (
        str(damaged.bad_metadata),
        "alpha",
        1,
    )
    assert "metadata" in entry["reason"]
    done = flowpoint("history", "alpha", "--store", damaged.url)
    assert done.returncode == 3
    row = next(line for line in done.stdout.splitlines() if str(damaged.bad_metadata) in line)
    assert "damaged" in row
    assert "1 damaged record(s)" in one_line_error(done.stderr)


def test_history_pages_through_a_damaged_record(damaged: Damaged) -> None:
    steps: list[int | None] = []
    before: list[str] = []
    while True:
        result = invoke(
            "history", "alpha", "--limit", "1", *before, "--store", damaged.url, "--json"
        )
        document = json.loads(result.stdout)
        steps += [info["step"] for info in document["checkpoints"]]
        steps += [entry["step"] for entry in document["damaged"]]
        if document["next_before"] is None:
            break
        before = ["--before", str(document["next_before"])]
    assert steps == [2, 1, 0]


def test_history_of_a_trace_whose_newest_record_is_damaged(seeded: Seeded) -> None:
    damage_sqlite_metadata(seeded.path, seeded.ids["beta/one"][1])
    result = invoke("history", "beta/one", "--store", seeded.url, "--json")
    assert result.exit_code == 3, result.output
    assert [info["step"] for info in json.loads(result.stdout)["checkpoints"]] == [0]
    verified = invoke("verify", "beta/one", "--store", seeded.url, "--json")
    assert verified.exit_code == 3
    assert json.loads(verified.stdout)["ok"] == 1


def test_verify_reports_each_damaged_record_and_checks_the_rest(damaged: Damaged) -> None:
    result = invoke("verify", "--store", damaged.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    problems = {problem["checkpoint_id"]: problem for problem in document["problems"]}
    assert set(problems) == {
        str(damaged.bad_metadata),
        str(damaged.bad_trace),
        str(damaged.garbage),
    }
    assert all(problem["kind"] == "corrupt" for problem in problems.values())
    assert problems[str(damaged.bad_trace)]["trace_id"] is None
    assert (document["ok"], document["corrupt"], document["checked"]) == (2, 3, 5)
    assert "3 corrupt" in one_line_error(result.stderr)


def test_verify_one_trace_with_a_damaged_record(damaged: Damaged) -> None:
    result = invoke("verify", "alpha", "--store", damaged.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert {problem["checkpoint_id"] for problem in document["problems"]} == {
        str(damaged.bad_metadata),
        str(damaged.garbage),
    }
    assert document["ok"] == 1


def test_copy_skip_corrupt_skips_damaged_records_and_copies_the_rest(
    damaged: Damaged, tmp_path: Path
) -> None:
    target = sqlite_url(tmp_path / "target.db")
    stopped = invoke("copy", damaged.url, target)
    assert stopped.exit_code == 3
    assert "--skip-corrupt" in one_line_error(stopped.stderr)
    done = flowpoint("copy", damaged.url, target, "--skip-corrupt", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert (report["copied"], report["skipped_corrupt"]) == (2, 3)
    assert {entry["checkpoint_id"] for entry in report["corrupt"]} == {
        str(damaged.bad_metadata),
        str(damaged.bad_trace),
        str(damaged.garbage),
    }
    source = blobs_of_intact(damaged)
    assert blobs_of(target) == source
    again = invoke("copy", damaged.url, target, "--skip-corrupt", "--json")
    assert again.exit_code == 3
    report = json.loads(again.stdout)
    assert (report["copied"], report["skipped"], report["skipped_corrupt"]) == (0, 2, 3)
    assert blobs_of(target) == source


def test_export_skip_corrupt_skips_damaged_records(damaged: Damaged, tmp_path: Path) -> None:
    archive = tmp_path / "out.fpa"
    stopped = invoke("export", str(archive), "--store", damaged.url)
    assert stopped.exit_code == 3
    assert not archive.exists()
    result = invoke("export", str(archive), "--skip-corrupt", "--store", damaged.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert (document["checkpoints"], document["skipped_corrupt"]) == (2, 3)
    target = sqlite_url(tmp_path / "imported.db")
    assert invoke("import", str(archive), "--store", target).exit_code == 0
    assert blobs_of(target) == blobs_of_intact(damaged)


def blobs_of_intact(damaged: Damaged) -> dict[UUID, object]:
    """The intact checkpoints of the damaged store, loaded as stored."""
    fresh = Path(damaged.url.removeprefix("sqlite:///")).with_name("fresh.db")
    shutil.copy(damaged.url.removeprefix("sqlite:///"), fresh)
    with closing(sqlite3.connect(fresh)) as conn, conn:
        conn.executemany(
            "DELETE FROM flowpoint_checkpoints WHERE checkpoint_id = ?",
            [(one.bytes,) for one in (damaged.bad_metadata, damaged.bad_trace, damaged.garbage)],
        )
    found = blobs_of(sqlite_url(fresh))
    assert set(found) == damaged.intact
    return dict(found)


def test_a_damaged_file_store_record_is_listed_and_skipped(tmp_path: Path) -> None:
    url, ids, harness = seeded_file_store(tmp_path)
    bad = CheckpointId(ids["alpha"][1])
    asyncio.run(harness.mangle_header(bad))
    listed = invoke("history", "alpha", "--store", url, "--json")
    assert listed.exit_code == 3, listed.output
    document = json.loads(listed.stdout)
    assert [info["step"] for info in document["checkpoints"]] == [2, 0]
    assert [entry["checkpoint_id"] for entry in document["damaged"]] == [str(bad)]
    verified = invoke("verify", "--store", url, "--json")
    assert verified.exit_code == 3
    report = json.loads(verified.stdout)
    assert (report["ok"], report["corrupt"]) == (4, 1)
    target = sqlite_url(tmp_path / "copy.db")
    copied = invoke("copy", url, target, "--skip-corrupt", "--json")
    assert copied.exit_code == 3
    assert json.loads(copied.stdout)["copied"] == 4


def test_a_store_that_cannot_list_past_damage_gives_the_trace_as_damaged(
    seeded: Seeded,
) -> None:
    from flowpoint.cli._damage import describe_damage, list_trace
    from flowpoint.ids import TraceId
    from flowpoint.stores.sqlite import SqliteBlobStore
    from tests.doubles import DelegatingBlobStore

    damage_sqlite_metadata(seeded.path, seeded.ids["alpha"][1])

    async def listing() -> tuple[object, object]:
        async with DelegatingBlobStore(SqliteBlobStore(seeded.path, read_only=True)) as store:
            return await list_trace(store, TraceId("alpha"))

    infos, (record,) = asyncio.run(listing())  # type: ignore[misc]
    assert infos == []
    assert (record.checkpoint_id, record.trace_id, record.step) == (None, "alpha", None)
    assert describe_damage(record).startswith("trace 'alpha' cannot be listed: ")
