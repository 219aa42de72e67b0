"""``copy``, ``export`` and ``import``: untouched bytes, rerun safety, conflicts, exact archives."""

from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from flowpoint import KeyRing, SyncCheckpointStore, open_store
from flowpoint.blob import CheckpointBlob
from flowpoint.cli._archive import (
    MAGIC,
    ArchiveError,
    ArchiveWriter,
    read_archive,
    scan_archive,
)
from flowpoint.ids import CheckpointId, TraceId
from tests.cli.conftest import (
    GRAPH,
    TRACES,
    Seeded,
    blobs_of,
    damage_sqlite,
    damage_sqlite_metadata,
    flowpoint,
    flowpoint_bytes,
    invoke,
    make_store,
    one_line_error,
    sqlite_url,
    write_keyring,
)


def save_blob(url: str, item: CheckpointBlob) -> None:
    async def save() -> None:
        async with open_store(url) as store:
            await store.save(item)

    asyncio.run(save())


# -- copy ----------------------------------------------------------------------------------


def test_copy_sqlite_to_file_to_sqlite_keeps_every_byte(seeded: Seeded, tmp_path: Path) -> None:
    files = f"file://{tmp_path / 'files'}"
    back = sqlite_url(tmp_path / "back.db")
    first = invoke("copy", seeded.url, files, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["traces"], report["copied"], report["verified"], report["skipped"]) == (
        2,
        5,
        5,
        0,
    )
    done = flowpoint("copy", files, back)
    assert done.returncode == 0, done.stderr
    assert "copied 5 checkpoint(s) of 2 trace(s), verified 5" in done.stdout
    assert blobs_of(back) == blobs_of(seeded.url)
    for url in (files, back):
        assert invoke("verify", "--store", url).exit_code == 0


def test_copy_one_trace(seeded: Seeded, tmp_path: Path) -> None:
    target = sqlite_url(tmp_path / "one.db")
    result = invoke("copy", seeded.url, target, "--trace", "beta/one", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["copied"] == 2
    with SyncCheckpointStore.open(target) as store:
        assert store.traces() == ["beta/one"]


def test_copy_a_missing_trace_exits_4(seeded: Seeded, tmp_path: Path) -> None:
    target = tmp_path / "none.db"
    result = invoke("copy", seeded.url, sqlite_url(target), "--trace", "nope")
    assert result.exit_code == 4
    assert "no trace 'nope'" in one_line_error(result.stderr)


def test_a_rerun_after_an_interruption_copies_the_rest(seeded: Seeded, tmp_path: Path) -> None:
    target = sqlite_url(tmp_path / "target.db")
    # The interrupted run got one whole trace across, and the first step of the other.
    assert invoke("copy", seeded.url, target, "--trace", "alpha").exit_code == 0
    first_beta = blobs_of(seeded.url)[seeded.ids["beta/one"][0]]
    save_blob(target, first_beta)
    rerun = flowpoint("copy", seeded.url, target, "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert (report["copied"], report["skipped"], report["verified"]) == (1, 4, 1)
    assert blobs_of(target) == blobs_of(seeded.url)
    again = json.loads(invoke("copy", seeded.url, target, "--json").stdout)
    assert (again["copied"], again["skipped"]) == (0, 5)


def test_copy_never_overwrites_a_conflicting_checkpoint(seeded: Seeded, tmp_path: Path) -> None:
    target = sqlite_url(tmp_path / "target.db")
    # Another run wrote its own step 0 of "alpha" into the destination.
    other = make_store(target, {"alpha": 1})
    result = invoke("copy", seeded.url, target)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "conflict" in line
    assert str(other["alpha"][0]) in line
    assert str(seeded.ids["alpha"][0]) in line
    assert "Nothing was overwritten" in line
    with SyncCheckpointStore.open(target) as store:
        assert [info.checkpoint_id for info in store.history("alpha")] == other["alpha"]


def test_copy_refuses_a_different_checkpoint_under_the_same_id(
    seeded: Seeded, tmp_path: Path
) -> None:
    target = sqlite_url(tmp_path / "target.db")
    assert invoke("copy", seeded.url, target).exit_code == 0
    damage_sqlite(tmp_path / "target.db", seeded.ids["beta/one"][1])
    result = invoke("copy", seeded.url, target)
    assert result.exit_code == 1
    assert f"another version of checkpoint {seeded.ids['beta/one'][1]}" in one_line_error(
        result.stderr
    )


def test_copy_stops_at_a_corrupt_source_checkpoint(seeded: Seeded, tmp_path: Path) -> None:
    damage_sqlite(seeded.path, seeded.ids["alpha"][2])
    done = flowpoint("copy", seeded.url, sqlite_url(tmp_path / "target.db"))
    assert done.returncode == 3
    assert str(seeded.ids["alpha"][2]) in one_line_error(done.stderr)


def test_copy_stops_at_corruption_and_says_how_to_go_on(seeded: Seeded, tmp_path: Path) -> None:
    damage_sqlite(seeded.path, seeded.ids["alpha"][1])
    result = invoke("copy", seeded.url, sqlite_url(tmp_path / "target.db"))
    assert result.exit_code == 3
    line = one_line_error(result.stderr)
    assert f"checkpoint {seeded.ids['alpha'][1]} (trace 'alpha', step 1) is corrupt" in line
    assert f"flowpoint verify --store {seeded.url}" in line
    assert "--skip-corrupt" in line


def test_copy_skip_corrupt_copies_the_rest_and_exits_3(seeded: Seeded, tmp_path: Path) -> None:
    damaged = seeded.ids["alpha"][1]
    damage_sqlite(seeded.path, damaged)
    target = sqlite_url(tmp_path / "target.db")
    done = flowpoint("copy", seeded.url, target, "--skip-corrupt")
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == (
        "copied 4 checkpoint(s) of 2 trace(s), verified 4 (read back byte for byte), "
        "skipped 0 (already there, identical), skipped 1 corrupt"
    )
    warning, error = done.stderr.strip().splitlines()
    assert warning.startswith(
        f"warning: skipped: checkpoint {damaged} (trace 'alpha', step 1) is corrupt: "
    )
    assert error == (
        f"error: 1 corrupt checkpoint(s) or trace(s) of {seeded.url} skipped; all the rest was done"
    )
    source = blobs_of(seeded.url)
    del source[damaged]
    assert blobs_of(target) == source
    # Run again, in JSON: the rest is there already; the damage is still reported.
    again = invoke("copy", seeded.url, target, "--skip-corrupt", "--json")
    assert again.exit_code == 3
    report = json.loads(again.stdout)
    assert (report["copied"], report["skipped"], report["skipped_corrupt"]) == (0, 4, 1)
    (corrupt,) = report["corrupt"]
    assert (corrupt["checkpoint_id"], corrupt["trace_id"], corrupt["step"]) == (
        str(damaged),
        "alpha",
        1,
    )
    assert corrupt["reason"]
    assert "warning:" not in again.stderr  # the document lists the damage


def test_copy_skip_corrupt_skips_a_damaged_header_row_only(seeded: Seeded, tmp_path: Path) -> None:
    bad = seeded.ids["beta/one"][0]
    damage_sqlite_metadata(seeded.path, bad)
    target = sqlite_url(tmp_path / "target.db")
    stopped = invoke("copy", seeded.url, target)
    assert stopped.exit_code == 3
    assert f"checkpoint {bad} (trace 'beta/one', step 0) is corrupt" in one_line_error(
        stopped.stderr
    )
    result = invoke("copy", seeded.url, target, "--skip-corrupt", "--json")
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["copied"], report["skipped_corrupt"]) == (4, 1)
    assert report["corrupt"][0]["trace_id"] == "beta/one"
    assert report["corrupt"][0]["checkpoint_id"] == str(bad)
    with SyncCheckpointStore.open(target) as store:
        assert store.traces() == ["alpha", "beta/one"]
        assert [info.step for info in store.history("beta/one")] == [1]


def test_skip_corrupt_without_damage_is_a_plain_success(seeded: Seeded, tmp_path: Path) -> None:
    archive = tmp_path / "store.fpa"
    exported = invoke("export", str(archive), "--skip-corrupt", "--store", seeded.url)
    assert exported.exit_code == 0, exported.output
    copied = invoke("copy", seeded.url, sqlite_url(tmp_path / "t.db"), "--skip-corrupt", "--json")
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["skipped_corrupt"] == 0


def test_copy_into_a_missing_directory_says_so(seeded: Seeded, tmp_path: Path) -> None:
    result = invoke("copy", seeded.url, sqlite_url(tmp_path / "no" / "such" / "dir.db"))
    assert result.exit_code == 1
    assert f"no directory {tmp_path / 'no' / 'such'}" in one_line_error(result.stderr)


def test_copy_moves_encrypted_data_without_a_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    source = sqlite_url(tmp_path / "secret.db")
    target = f"file://{tmp_path / 'secret-files'}"
    ids = make_store(source, {"private": 2}, ring=KeyRing({"k1": key}, primary="k1"))
    assert invoke("copy", source, target).exit_code == 0
    assert blobs_of(target) == blobs_of(source)
    ring = write_keyring(tmp_path / "ring.json", {"k1": key}, "k1")
    shown = invoke("show", str(ids["private"][1]), "--store", target, "--keyring", str(ring))
    assert shown.exit_code == 0, shown.output


def test_copy_into_itself_is_refused(seeded: Seeded) -> None:
    result = invoke("copy", seeded.url, seeded.url)
    assert result.exit_code == 1
    assert "same store" in one_line_error(result.stderr)


def test_copy_from_a_bad_url(tmp_path: Path) -> None:
    done = flowpoint("copy", "nosuch://x", sqlite_url(tmp_path / "t.db"))
    assert done.returncode == 1
    assert "unknown store URL" in one_line_error(done.stderr)


# -- export / import -----------------------------------------------------------------------


def test_export_import_round_trips_exactly_across_backends(seeded: Seeded, tmp_path: Path) -> None:
    archive = tmp_path / "store.fpa"
    exported = invoke("export", str(archive), "--store", seeded.url, "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["checkpoints"] == 5
    files = f"file://{tmp_path / 'files'}"
    imported = flowpoint("import", str(archive), "--store", files, "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert (report["traces"], report["copied"], report["verified"]) == (2, 5, 5)
    again = tmp_path / "again.fpa"
    assert invoke("export", str(again), "--store", files).exit_code == 0
    assert again.read_bytes() == archive.read_bytes()
    assert blobs_of(files) == blobs_of(seeded.url)


def test_import_is_rerun_safe_and_refuses_conflicts(seeded: Seeded, tmp_path: Path) -> None:
    archive = tmp_path / "store.fpa"
    assert invoke("export", str(archive), "--store", seeded.url).exit_code == 0
    rerun = invoke("import", str(archive), "--store", seeded.url, "--json")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["skipped"] == 5
    other = sqlite_url(tmp_path / "other.db")
    make_store(other, {"beta/one": 1})
    conflict = invoke("import", str(archive), "--store", other)
    assert conflict.exit_code == 1
    assert "conflict" in one_line_error(conflict.stderr)


def test_export_to_stdout_and_import_from_stdin(seeded: Seeded, tmp_path: Path) -> None:
    exported = flowpoint_bytes("export", "-", "--store", seeded.url)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(MAGIC)
    assert b"exported 5 checkpoint(s)" in exported.stderr
    target = sqlite_url(tmp_path / "piped.db")
    imported = flowpoint_bytes("import", "-", "--store", target, input=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    assert blobs_of(target) == blobs_of(seeded.url)


def test_export_one_trace_in_process_to_stdout(seeded: Seeded) -> None:
    result = invoke("export", "-", "--trace", "alpha", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    summary = scan_archive(io.BytesIO(result.stdout_bytes))
    assert (summary.traces, summary.checkpoints) == (1, 3)


def test_a_damaged_archive_is_refused_before_anything_is_written(
    seeded: Seeded, tmp_path: Path
) -> None:
    archive = tmp_path / "store.fpa"
    assert invoke("export", str(archive), "--store", seeded.url).exit_code == 0
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))
    target = tmp_path / "target.db"
    done = flowpoint("import", str(archive), "--store", sqlite_url(target))
    assert done.returncode == 3
    assert "archive" in one_line_error(done.stderr)
    assert not target.exists() or blobs_of(sqlite_url(target)) == {}


def test_importing_something_else_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"PK\x03\x04 not an archive")
    result = invoke("import", str(junk), "--store", sqlite_url(tmp_path / "t.db"))
    assert result.exit_code == 1
    assert "not a flowpoint archive" in one_line_error(result.stderr)
    missing = invoke("import", str(tmp_path / "nope.fpa"), "--store", "memory://")
    assert missing.exit_code == 1
    assert "cannot read the archive" in one_line_error(missing.stderr)


def test_export_stops_at_a_corrupt_checkpoint_and_leaves_no_file(
    seeded: Seeded, tmp_path: Path
) -> None:
    damage_sqlite(seeded.path, seeded.ids["beta/one"][0])
    archive = tmp_path / "store.fpa"
    result = invoke("export", str(archive), "--store", seeded.url)
    assert result.exit_code == 3
    assert str(seeded.ids["beta/one"][0]) in one_line_error(result.stderr)
    assert list(tmp_path.glob("*.fpa*")) == []


def test_export_skip_corrupt_writes_the_rest(seeded: Seeded, tmp_path: Path) -> None:
    damaged = seeded.ids["beta/one"][0]
    damage_sqlite(seeded.path, damaged)
    archive = tmp_path / "store.fpa"
    done = flowpoint("export", str(archive), "--skip-corrupt", "--store", seeded.url)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == (
        f"exported 4 checkpoint(s) of 2 trace(s) to {archive}, skipped 1 corrupt"
    )
    assert f"warning: skipped: checkpoint {damaged}" in done.stderr
    assert one_line_error(done.stderr.splitlines()[-1]).endswith("all the rest was done")
    target = sqlite_url(tmp_path / "back.db")
    assert invoke("import", str(archive), "--store", target).exit_code == 0
    source = blobs_of(seeded.url)
    del source[damaged]
    assert blobs_of(target) == source
    piped = flowpoint_bytes("export", "-", "--skip-corrupt", "--json", "--store", seeded.url)
    assert piped.returncode == 3
    assert scan_archive(io.BytesIO(piped.stdout)).checkpoints == 4
    document = json.loads(piped.stderr.decode().rsplit("\nerror: ", 1)[0])
    assert (document["checkpoints"], document["skipped_corrupt"]) == (4, 1)
    assert document["corrupt"][0]["checkpoint_id"] == str(damaged)


# -- the archive format --------------------------------------------------------------------


def blob(trace: str, step: int, data: bytes = b"data", **metadata: object) -> CheckpointBlob:
    return CheckpointBlob(
        checkpoint_id=CheckpointId(UUID(int=step + 1000 * len(trace))),
        trace_id=TraceId(trace),
        step=step,
        parent_id=None if step == 0 else CheckpointId(UUID(int=step + 999 * len(trace))),
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        current_node=None if step == 1 else "next",
        metadata=dict(metadata),
        data=data,
    )


def archive_of(*blobs: CheckpointBlob) -> bytes:
    stream = io.BytesIO()
    writer = ArchiveWriter(stream)
    for item in blobs:
        writer.write(item)
    writer.finish()
    return stream.getvalue()


def test_the_archive_keeps_every_header_field_and_value_type() -> None:
    originals = [
        blob("a", 0, b"", one=1, real=1.0, flag=True, none=None, text="x"),
        blob("a", 1, bytes(range(256))),
        blob("b/ü", 0),
    ]
    raw = archive_of(*originals)
    assert raw.startswith(MAGIC)
    reader = read_archive(io.BytesIO(raw))
    assert list(reader) == originals
    back = next(iter(read_archive(io.BytesIO(raw))))
    kinds = {key: type(value) for key, value in back.metadata.items()}
    assert kinds == {"one": int, "real": float, "flag": bool, "none": type(None), "text": str}
    assert scan_archive(io.BytesIO(raw)).checkpoints == 3


def test_the_writer_keeps_archive_order() -> None:
    writer = ArchiveWriter(io.BytesIO())
    writer.write(blob("b", 0))
    with pytest.raises(ValueError, match="order"):
        writer.write(blob("a", 0))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw[:40], "truncated"),
        (lambda raw: raw + b"\x00", "follow"),
        (lambda raw: raw.replace(b"\xc4\x04data", b"\xc4\x04dbta", 1), "checksum"),
        (lambda raw: raw[:30] + bytes([raw[30] ^ 0x20]) + raw[31:], None),
    ],
)
def test_damage_anywhere_is_corruption(damage: object, fragment: str | None) -> None:
    raw = archive_of(blob("a", 0), blob("a", 1))
    assert callable(damage)
    with pytest.raises(ArchiveError, match=fragment) as caught:
        scan_archive(io.BytesIO(damage(raw)))
    assert caught.value.corrupt


def test_a_bad_magic_or_version_is_not_corruption() -> None:
    raw = archive_of(blob("a", 0))
    for other in (b"", b"not an archive at all", raw[:8] + b"\x00\x03" + raw[10:]):
        with pytest.raises(ArchiveError) as caught:
            scan_archive(io.BytesIO(other))
        assert not caught.value.corrupt


def test_an_empty_store_exports_an_empty_archive(tmp_path: Path) -> None:
    result = invoke("export", "-", "--store", "memory://")
    assert result.exit_code == 0, result.output
    summary = scan_archive(io.BytesIO(result.stdout_bytes))
    assert (summary.traces, summary.checkpoints) == (0, 0)


def test_the_seeded_traces_are_what_the_tests_think(seeded: Seeded) -> None:
    assert {trace: len(ids) for trace, ids in seeded.ids.items()} == TRACES
    assert all(info.graph_hash == GRAPH for info in blobs_of(seeded.url).values())
