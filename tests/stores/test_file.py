"""What only the file store does: its layout, its record format, its crash and race rules.

The general contract is the conformance suite's; these tests reach under the store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flowpoint import open_store
from flowpoint.blob import CheckpointBlob, DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id
from flowpoint.stores.file import FileBlobStore, trace_dir_name
from tests.harnesses.file import (
    CRC,
    MAGIC,
    PREFIX,
    WRITES,
    FileHarness,
    join_record,
    split_record,
    tree_snapshot,
)

STEP_FILE = re.compile(r"[0-9]{20}\.ckpt")


def make_blob(
    trace_id: str,
    step: int,
    *,
    data: bytes = b"opaque codec bytes",
    checkpoint_id: CheckpointId | None = None,
    **fields: Any,
) -> CheckpointBlob:
    values: dict[str, Any] = {
        "checkpoint_id": checkpoint_id or new_checkpoint_id(),
        "trace_id": TraceId(trace_id),
        "step": step,
        "parent_id": None,
        "graph_hash": 0x0123456789ABCDEF,
        "created_at": datetime.now(UTC),
        "current_node": "plan",
        "metadata": {"source": "test"},
        "data": data,
    }
    values.update(fields)
    return CheckpointBlob(**values)


def record_path(root: Path, checkpoint_id: CheckpointId) -> Path:
    hex_id = checkpoint_id.hex
    link = root / "ids" / hex_id[-2:] / hex_id
    return link.parent / os.readlink(link)


def all_names(root: Path) -> list[str]:
    return [name for _, dirs, files in os.walk(root) for name in dirs + files]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> FileBlobStore:
    return FileBlobStore(root)


# Layout


async def test_layout_is_readable_with_ls(root: Path, store: FileBlobStore) -> None:
    blobs = [make_blob("user-42/session-7", step) for step in range(3)]
    for blob in blobs:
        await store.save(blob)

    assert sorted(os.listdir(root)) == ["ids", "traces"]
    [trace_dir] = os.listdir(root / "traces")
    assert re.fullmatch(r"user-42%2Fsession-7~[0-9a-f]{16}", trace_dir)
    assert sorted(os.listdir(root / "traces" / trace_dir)) == [
        "00000000000000000000.ckpt",
        "00000000000000000001.ckpt",
        "00000000000000000002.ckpt",
    ]
    for blob in blobs:
        hex_id = blob.checkpoint_id.hex
        link = root / "ids" / hex_id[-2:] / hex_id
        assert link.is_symlink()
        assert os.readlink(link) == f"../../traces/{trace_dir}/{blob.step:020d}.ckpt"
        assert link.resolve() == (root / "traces" / trace_dir / f"{blob.step:020d}.ckpt")


async def test_writes_are_one_record_per_call_under_the_trace(
    root: Path, store: FileBlobStore
) -> None:
    blob = make_blob("user-42/session-7", 0)
    await store.save(blob)
    first = [PendingWrite(blob.trace_id, blob.checkpoint_id, "web", 0, b"w0")]
    second = [PendingWrite(blob.trace_id, blob.checkpoint_id, "docs", -3, b"error")]
    await store.save_writes(first)
    await store.save_writes(first)  # stores nothing new: no record
    await store.save_writes(second, overwrite=True)
    trace_dir = trace_dir_name("user-42/session-7")
    hex_id = blob.checkpoint_id.hex
    writes_dir = root / "writes" / trace_dir / hex_id
    assert sorted(os.listdir(writes_dir)) == ["00000000000000000000.wr", "00000000000000000001.wr"]
    link = root / "ids" / hex_id[-2:] / f"{hex_id}.w"
    assert os.readlink(link) == f"../../writes/{trace_dir}/{hex_id}"
    header, data = split_record((writes_dir / "00000000000000000001.wr").read_bytes(), WRITES)
    assert header == {
        "trace_id": "user-42/session-7",
        "checkpoint_id": str(blob.checkpoint_id),
        "overwrite": True,
        "writes": [["docs", -3, 5]],
        "data_length": 5,
    }
    assert data == b"error"
    assert await store.delete(blob.checkpoint_id)
    assert not writes_dir.exists()
    assert not link.is_symlink()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-1],
        lambda raw: raw[:10],
        lambda raw: raw.replace(b'"web"', b'"w\\t"'),
        lambda raw: b"FPFILE1\n" + raw[8:],
    ],
)
async def test_a_damaged_writes_record_is_corrupt(
    root: Path, store: FileBlobStore, damage: Callable[[bytes], bytes]
) -> None:
    checkpoint_id = new_checkpoint_id()
    await store.save_writes([PendingWrite("t", checkpoint_id, "web", 0, b"w0")])
    [path] = (root / "writes").glob("*/*/*.wr")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptCheckpoint):
        await store.load_writes(checkpoint_id)
    assert await store.delete_trace("t") == 0  # damaged writes are deleted all the same
    assert await store.load_writes(checkpoint_id) == []


async def test_a_claim_of_another_trace_without_records_is_taken_over(
    root: Path, store: FileBlobStore
) -> None:
    # A call that died after it claimed the checkpoint's writes for trace "a".
    checkpoint_id = new_checkpoint_id()
    hex_id = checkpoint_id.hex
    (root / "ids" / hex_id[-2:]).mkdir(parents=True)
    target = f"../../writes/{trace_dir_name('a')}/{hex_id}"
    os.symlink(target, root / "ids" / hex_id[-2:] / f"{hex_id}.w")
    write = PendingWrite("b", checkpoint_id, "t", 0, b"x")
    assert await store.save_writes([write]) == 1
    assert await store.load_writes(checkpoint_id) == [write]


def test_trace_dir_name_is_a_slug_and_a_hash() -> None:
    assert trace_dir_name("user-42/session-7").startswith("user-42%2Fsession-7~")
    assert trace_dir_name("..").startswith("..~")
    assert trace_dir_name("%2F").startswith("%252F~")
    emoji = trace_dir_name("\U0001f600" * 256)
    slug, _, digest = emoji.rpartition("~")
    assert len(digest) == 16
    assert len(slug) <= 120
    # The slug is cut between characters, never inside a %XX escape or a UTF-8 sequence.
    assert slug == "%F0%9F%98%80" * (len(slug) // 12)
    cut = trace_dir_name("a" * 119 + "/b")
    assert cut.rpartition("~")[0] == "a" * 119


AWKWARD_TRACE_IDS = [
    "..",
    ".",
    "../../etc",
    "a/b",
    "a%2Fb",
    "%2F",
    "/abs",
    "/",
    "\\windows\\path",
    "with spaces  ",
    " leading space",
    "-rf",
    "~tilde~",
    "ünïcödé/日本語",
    "\U0001f600" * 256,
    "\U0001f600" * 255 + "\U0001f601",
    "x" * 256,
    "x" * 255 + "y",
    "Trace",
    "trace",
    "TRACE",
    "CON",
    "nul",
]


async def test_awkward_trace_ids_stay_inside_the_root_and_apart(
    root: Path, store: FileBlobStore
) -> None:
    for trace_id in AWKWARD_TRACE_IDS:
        await store.save(make_blob(trace_id, 0, data=trace_id.encode()))

    traces_dir = root / "traces"
    names = os.listdir(traces_dir)
    assert len(names) == len(AWKWARD_TRACE_IDS)
    # Distinct even on a case-insensitive file system, and short enough for any.
    assert len({name.casefold() for name in names}) == len(names)
    assert all(len(name.encode()) < 200 for name in names)
    for name in names:
        assert (traces_dir / name).resolve().parent == traces_dir.resolve()
    # Nothing was written outside traces/ and ids/.
    assert sorted(os.listdir(root)) == ["ids", "traces"]
    assert sorted(os.listdir(root.parent)) == ["store"]

    assert await store.traces() == sorted(AWKWARD_TRACE_IDS)
    for trace_id in AWKWARD_TRACE_IDS:
        latest = await store.load_latest(trace_id)
        assert latest is not None
        assert latest.trace_id == trace_id
        assert latest.data == trace_id.encode()


async def test_header_round_trips_exactly(store: FileBlobStore) -> None:
    parent = new_checkpoint_id()
    blob = make_blob(
        "t",
        2**63 - 1,
        parent_id=parent,
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5))),
        current_node=None,
        metadata={"f": 1.0, "i": 1, "b": True, "n": None, "s": "ünï\n", "big": -(2**63)},
        data=b"",
    )
    await store.save(blob)
    loaded = await store.load(blob.checkpoint_id)
    assert loaded is not None
    assert loaded == blob
    assert loaded.created_at.tzinfo == UTC
    assert type(loaded.metadata["f"]) is float
    assert type(loaded.metadata["i"]) is int
    [info] = await store.history("t")
    assert info == blob.info()


async def test_a_record_as_the_previous_release_wrote_it_reads(
    root: Path, store: FileBlobStore
) -> None:
    blob = make_blob("t", 3, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    await store.save(blob)
    # Its header as flowpoint 0.1.0 wrote it: the time in isoformat with an offset.
    header = {
        "checkpoint_id": str(blob.checkpoint_id),
        "trace_id": "t",
        "step": 3,
        "parent_id": None,
        "graph_hash": blob.graph_hash,
        "created_at": "2026-01-02T03:04:05.000000+00:00",
        "current_node": "plan",
        "metadata": {"source": "test"},
        "data_length": len(blob.data),
    }
    record_path(root, blob.checkpoint_id).write_bytes(join_record(header, blob.data))
    assert await store.load(blob.checkpoint_id) == blob
    assert await store.history("t") == [blob.info()]


# Temp files and crashes


async def test_no_temp_file_is_left_after_saves_or_a_conflict(
    root: Path, store: FileBlobStore
) -> None:
    winner = make_blob("t", 0)
    await store.save(winner)
    await store.save(make_blob("t", 1))
    loser = make_blob("t", 0)
    with pytest.raises(CheckpointConflict) as caught:
        await store.save(loser)
    assert (caught.value.trace_id, caught.value.step) == ("t", 0)

    assert not [name for name in all_names(root) if name.startswith(".tmp-")]
    # The loser's id link is gone, and it stays absent.
    hex_id = loser.checkpoint_id.hex
    assert not (root / "ids" / hex_id[-2:] / hex_id).is_symlink()
    assert await store.load(loser.checkpoint_id) is None
    assert await store.load(winner.checkpoint_id) == winner


async def test_a_reused_checkpoint_id_conflicts(root: Path, store: FileBlobStore) -> None:
    first = make_blob("t", 0)
    await store.save(first)
    with pytest.raises(CheckpointConflict, match="exists"):
        await store.save(make_blob("other", 5, checkpoint_id=first.checkpoint_id))
    assert await store.load(first.checkpoint_id) == first
    assert await store.traces() == ["t"]
    assert not [name for name in all_names(root) if name.startswith(".tmp-")]


async def test_dangling_symlink_loads_as_none(root: Path, store: FileBlobStore) -> None:
    # What a crash between claiming the id and publishing the record leaves behind.
    blob = make_blob("t", 0)
    await store.save(blob)
    record_path(root, blob.checkpoint_id).unlink()

    assert await store.load(blob.checkpoint_id) is None
    assert await store.delete(blob.checkpoint_id) is False
    assert await store.load_latest("t") is None
    assert await store.traces() == []


async def test_symlink_to_another_checkpoints_record_loads_as_none(
    root: Path, store: FileBlobStore
) -> None:
    # A crashed save of `ghost` at step 0, whose step another writer then took.
    owner = make_blob("t", 0)
    await store.save(owner)
    ghost = new_checkpoint_id()
    shard = root / "ids" / ghost.hex[-2:]
    shard.mkdir(exist_ok=True)
    os.symlink(
        os.readlink(root / "ids" / owner.checkpoint_id.hex[-2:] / owner.checkpoint_id.hex),
        shard / ghost.hex,
    )

    assert await store.load(ghost) is None
    assert await store.delete(ghost) is False
    assert await store.load(owner.checkpoint_id) == owner


async def test_temp_files_and_foreign_names_are_ignored(root: Path, store: FileBlobStore) -> None:
    blob = make_blob("t", 3)
    await store.save(blob)
    trace_dir = root / "traces" / trace_dir_name("t")
    (trace_dir / ".tmp-9-deadbeef").write_bytes(b"half a record")
    (trace_dir / "99999999999999999999.ckpt.bak").write_bytes(b"junk")
    (trace_dir / "notes.txt").write_bytes(b"junk")
    (root / "traces" / "stray-directory").mkdir()

    assert await store.load_latest("t") == blob
    assert [info.step for info in await store.history("t")] == [3]
    assert await store.traces() == ["t"]
    # delete_trace leaves what it does not own, and so keeps the directory.
    assert await store.delete_trace("t") == 1
    assert sorted(os.listdir(trace_dir)) == [
        ".tmp-9-deadbeef",
        "99999999999999999999.ckpt.bak",
        "notes.txt",
    ]
    assert await store.traces() == []


async def test_records_deleted_after_the_listing_are_skipped(
    store: FileBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = [make_blob("t", step) for step in range(2)]
    for blob in blobs:
        await store.save(blob)
    real_steps = store._steps
    stale = iter([[0, 1, 5], [0, 1, 5]])

    def steps(dir_name: str) -> list[int]:
        # The first listings still show step 5, deleted by someone else since.
        return next(stale, None) or real_steps(dir_name)

    monkeypatch.setattr(store, "_steps", steps)
    assert await store.load_latest("t") == blobs[1]
    assert [info.step for info in await store.history("t")] == [1, 0]


async def test_delete_trace_removes_records_links_and_directory(
    root: Path, store: FileBlobStore
) -> None:
    kept = make_blob("keep", 0)
    await store.save(kept)
    for step in range(5):
        await store.save(make_blob("a/b", step))

    assert await store.delete_trace("a/b") == 5
    assert os.listdir(root / "traces") == [trace_dir_name("keep")]
    links = [name for _, _, files in os.walk(root / "ids") for name in files]
    assert links == [kept.checkpoint_id.hex]
    assert await store.delete_trace("a/b") == 0


async def test_delete_removes_the_record_and_its_link(root: Path, store: FileBlobStore) -> None:
    blobs = [make_blob("t", step) for step in range(2)]
    for blob in blobs:
        await store.save(blob)
    assert await store.delete(blobs[1].checkpoint_id) is True
    hex_id = blobs[1].checkpoint_id.hex
    assert hex_id not in os.listdir(root / "ids" / hex_id[-2:])
    assert sorted(os.listdir(root / "traces" / trace_dir_name("t"))) == [
        "00000000000000000000.ckpt"
    ]
    assert await store.load_latest("t") == blobs[0]


# Damaged records


def _rewrite_header(**changes: object) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        header, data = split_record(raw)
        header.update(changes)
        return join_record(header, data)

    return damage


def _raw_header(header_json: bytes) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        return join_record({}, split_record(raw)[1], header_json=header_json)

    return damage


def _drop_field(name: str) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        header, data = split_record(raw)
        del header[name]
        return join_record(header, data)

    return damage


def _flip_header_byte(raw: bytes) -> bytes:
    at = PREFIX.size + 5
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


def _crc_offset(raw: bytes) -> int:
    return PREFIX.size + PREFIX.unpack_from(raw)[1]


def _zero_crc(raw: bytes) -> bytes:
    at = _crc_offset(raw)
    return raw[:at] + b"\0" * CRC.size + raw[at + CRC.size :]


def _header_length(length: int) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        return PREFIX.pack(MAGIC, length) + raw[PREFIX.size :]

    return damage


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty file": lambda raw: b"",
    "truncated in the magic": lambda raw: raw[:5],
    "truncated after the prefix": lambda raw: raw[: PREFIX.size],
    "truncated in the header": lambda raw: raw[: PREFIX.size + 10],
    "truncated in the crc": lambda raw: raw[: _crc_offset(raw) + 2],
    "truncated in the data": lambda raw: raw[:-1],
    "data longer than the header says": lambda raw: raw + b"x",
    "bad magic": lambda raw: b"FPFILE9\n" + raw[8:],
    "bad crc": _flip_header_byte,
    "crc bytes damaged": _zero_crc,
    "header length zero": _header_length(0),
    "header length past the end": _header_length(2**32 - 1),
    "header is not json": _raw_header(b"not json at all"),
    "header is not utf-8": _raw_header(b'{"trace_id":"\xff\xfe"}'),
    "header is a list": _raw_header(b"[1, 2, 3]"),
    "header is an empty object": _raw_header(b"{}"),
    "header has an unknown field": _rewrite_header(extra=1),
    "header misses a field": _drop_field("created_at"),
    "step is a string": _rewrite_header(step="0"),
    "step is negative": _rewrite_header(step=-1),
    "step disagrees with the file name": _rewrite_header(step=7),
    "graph hash is a string": _rewrite_header(graph_hash="0x1"),
    "graph hash is above 64 bits": _rewrite_header(graph_hash=2**64),
    "graph hash is a float": _rewrite_header(graph_hash=1.5),
    "checkpoint id is not a uuid": _rewrite_header(checkpoint_id="not-a-uuid"),
    "parent id is a number": _rewrite_header(parent_id=7),
    "trace id of another directory": _rewrite_header(trace_id="another trace"),
    "trace id is empty": _rewrite_header(trace_id=""),
    "trace id holds a control character": _rewrite_header(trace_id="t\n"),
    "created_at is not a date": _rewrite_header(created_at="yesterday"),
    "created_at is naive": _rewrite_header(created_at="2026-01-01T00:00:00.000000"),
    "current node is a number": _rewrite_header(current_node=3),
    "metadata is nested": _rewrite_header(metadata={"a": {"b": 1}}),
    "metadata is a list": _rewrite_header(metadata=[1]),
    "metadata int above 64 bits": _rewrite_header(metadata={"a": 2**70}),
    "data length is negative": _rewrite_header(data_length=-1),
    "data length is too large": _rewrite_header(data_length=10**6),
    "data length is a bool": _rewrite_header(data_length=True),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
async def test_damaged_record_raises_corrupt_checkpoint(
    root: Path, store: FileBlobStore, damage: Callable[[bytes], bytes]
) -> None:
    blob = make_blob("t", 0)
    await store.save(blob)
    path = record_path(root, blob.checkpoint_id)
    path.write_bytes(damage(path.read_bytes()))

    with pytest.raises(CorruptCheckpoint) as caught:
        await store.load(blob.checkpoint_id)
    assert caught.value.checkpoint_id == blob.checkpoint_id
    with pytest.raises(CorruptCheckpoint):
        await store.load_latest("t")
    with pytest.raises(CorruptCheckpoint):
        await store.history("t")
    [report] = await store.history_entries("t")
    assert isinstance(report, DamagedRecord)
    assert (report.trace_id, report.step) == ("t", 0)
    assert report.checkpoint_id in (blob.checkpoint_id, None)  # where the header shows it
    assert await store.traces() == ["t"]  # the directory's name says which trace it is
    # A damaged record can still be removed.
    assert await store.delete(blob.checkpoint_id) is True
    assert await store.load(blob.checkpoint_id) is None


async def test_a_trace_named_by_damaged_records_only_is_reported(
    root: Path, store: FileBlobStore
) -> None:
    long_trace = "ü" * 200  # its directory's name is cut: only a header names the trace
    blob = make_blob(long_trace, 0)
    await store.save(blob)
    await store.save(make_blob("fine", 0))
    path = record_path(root, blob.checkpoint_id)
    path.write_bytes(_rewrite_header(graph_hash="0x1")(path.read_bytes()))
    with pytest.raises(CorruptCheckpoint):
        await store.traces()
    fine, report = await store.trace_entries()
    assert fine == "fine"
    assert isinstance(report, DamagedRecord)
    assert report.checkpoint_id == blob.checkpoint_id
    assert report.trace_id is None
    assert "no record in" in report.reason


async def test_damaged_record_is_removed_by_delete_trace(root: Path, store: FileBlobStore) -> None:
    blob = make_blob("t", 0)
    await store.save(blob)
    await store.save(make_blob("t", 1))
    record_path(root, blob.checkpoint_id).write_bytes(b"garbage")
    assert await store.delete_trace("t") == 2
    assert await store.traces() == []
    assert await store.load(blob.checkpoint_id) is None


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "../../../outside/00000000000000000000.ckpt",
        "../../traces/../../00000000000000000000.ckpt",
        "../../traces/t/00000000000000000000.ckpt",
        "../../traces/t~0123456789abcdef/0.ckpt",
        "",
    ],
)
async def test_id_link_pointing_elsewhere_is_corrupt_and_never_followed(
    root: Path, store: FileBlobStore, target: str
) -> None:
    await store.save(make_blob("t", 0))
    checkpoint_id = new_checkpoint_id()
    shard = root / "ids" / checkpoint_id.hex[-2:]
    shard.mkdir(exist_ok=True)
    if target:
        os.symlink(target, shard / checkpoint_id.hex)
    else:
        (shard / checkpoint_id.hex).write_bytes(b"a file, not a symlink")

    with pytest.raises(CorruptCheckpoint):
        await store.load(checkpoint_id)
    with pytest.raises(CorruptCheckpoint):
        await store.delete(checkpoint_id)


async def test_invalid_metadata_is_refused_before_anything_is_written(
    root: Path, store: FileBlobStore
) -> None:
    with pytest.raises(ValueError, match="metadata"):
        await store.save(make_blob("t", 0, metadata={"nested": {"no": 1}}))
    with pytest.raises(ValueError, match="cannot store"):
        await store.save(make_blob("t", 0, current_node=3))
    assert os.listdir(root.parent) == []


# Storage failures


async def test_an_unwritable_location_raises_storage_error(tmp_path: Path) -> None:
    # Nobody, not even root, may create entries in /proc: this holds in CI, which runs as root.
    store = FileBlobStore("/proc/flowpoint-unwritable-store")
    with pytest.raises(StorageError) as caught:
        await store.save(make_blob("t", 0))
    assert isinstance(caught.value.__cause__, OSError)
    assert await store.load_latest("t") is None


@pytest.mark.parametrize("call", ["fsync", "link"])
async def test_a_failed_save_leaves_nothing_behind(
    root: Path, store: FileBlobStore, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    await store.save(make_blob("t", 0))
    blob = make_blob("t", 1)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, call, fail)
        with pytest.raises(StorageError) as caught:
            await store.save(blob)
    assert isinstance(caught.value.__cause__, OSError)

    assert not [name for name in all_names(root) if name.startswith(".tmp-")]
    assert blob.checkpoint_id.hex not in all_names(root / "ids")
    assert await store.load(blob.checkpoint_id) is None
    # The id was released: saving the same blob again works.
    await store.save(blob)
    assert await store.load_latest("t") == blob


async def test_root_that_is_a_file_raises_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-directory"
    path.write_bytes(b"")
    store = FileBlobStore(path)

    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: store.save(make_blob("t", 0)),
        lambda: store.load(new_checkpoint_id()),
        lambda: store.load_latest("t"),
        lambda: store.history("t"),
        store.traces,
        lambda: store.delete(new_checkpoint_id()),
        lambda: store.delete_trace("t"),
    ]
    for operation in operations:
        with pytest.raises(StorageError) as caught:
            await operation()
        assert isinstance(caught.value.__cause__, OSError)


async def test_nothing_is_created_until_the_first_save(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    store = FileBlobStore(str(root))
    assert repr(store) == f"FileBlobStore({str(root)!r})"
    assert await store.traces() == []
    assert await store.load_latest("t") is None
    assert await store.history("t") == []
    assert await store.load(new_checkpoint_id()) is None
    assert await store.delete_trace("t") == 0
    assert os.listdir(tmp_path) == []
    await store.save(make_blob("t", 0))
    assert sorted(os.listdir(root)) == ["ids", "traces"]


# The harness the conformance suite uses


async def test_harness_tampers_with_data_but_not_with_the_header() -> None:
    harness = FileHarness()
    try:
        store = await harness.open()
        blob = make_blob("t", 0, data=b"original")
        await store.save(blob)
        assert await harness.read_data(blob.checkpoint_id) == b"original"
        await harness.write_data(blob.checkpoint_id, b"swapped, and longer")
        loaded = await (await harness.open()).load(blob.checkpoint_id)
        assert loaded is not None
        assert loaded.data == b"swapped, and longer"
        await harness.mangle_header(blob.checkpoint_id)
        with pytest.raises(CorruptCheckpoint):
            await store.load(blob.checkpoint_id)
        with pytest.raises(CorruptCheckpoint):
            await store.load_latest("t")
    finally:
        await harness.cleanup()
    assert os.path.basename(harness.root) not in os.listdir(os.path.dirname(harness.root))


# Read-only opening


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda root: None, "no such directory"),
        (lambda root: root.mkdir(), "holds no traces/ or ids/"),
        (lambda root: (root.mkdir(), (root / "notes.txt").write_text("x")), "holds no traces/"),
        (lambda root: root.write_text("a file"), "no such directory"),
    ],
)
async def test_read_only_opening_refuses_what_is_not_a_store_and_creates_nothing(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    root = tmp_path / "store"
    make(root)
    before = tree_snapshot(str(tmp_path))
    async with open_store(f"file://{root}", read_only=True) as store:
        with pytest.raises(StorageError, match=f"not a flowpoint store: .*{reason}"):
            await store.traces()
        with pytest.raises(StorageError, match="not a flowpoint store"):
            await store.load(new_checkpoint_id())
    assert tree_snapshot(str(tmp_path)) == before


async def test_a_store_whose_traces_were_all_deleted_is_still_a_store(
    root: Path, store: FileBlobStore
) -> None:
    await store.save(make_blob("t", 0))
    await store.delete_trace("t")
    async with FileBlobStore(root, read_only=True) as reader:
        assert await reader.traces() == []


async def test_a_short_range_of_steps_is_read_by_name_without_listing_the_trace(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowpoint.stores._files as files_module

    store = FileBlobStore(root)
    saved = [make_blob("t", step) for step in (0, 1, 2, 4, 7)]
    for blob in saved:
        await store.save(blob)
    listed: list[str] = []
    real = files_module.names

    def counted(directory: str) -> list[str]:
        listed.append(directory)
        return real(directory)

    monkeypatch.setattr(files_module, "names", counted)
    found = await store.load_steps("t", 1, 6)
    assert [blob.checkpoint_id for blob in found] == [b.checkpoint_id for b in saved[1:4]]
    assert found[2].data == saved[3].data
    assert listed == []  # each step's file opened by its name
    assert await store.load_steps("unknown", 0, 3) == []
    # A range longer than a chain can be lists the directory once instead.
    found = await store.load_steps("t", 2, 2**40)
    assert [blob.step for blob in found] == [2, 4, 7]
    assert len(listed) == 1
