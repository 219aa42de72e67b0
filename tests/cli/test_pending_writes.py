"""Pending writes (what parallel tasks saved against a checkpoint) in show, copy, export, import
and verify."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import operator
import os
import sqlite3
import struct
from contextlib import closing
from pathlib import Path
from typing import Annotated, TypedDict

import msgspec
import pytest

from flowpoint import KeyRing, open_store
from flowpoint.checkpoint import TaskWrite
from flowpoint.cli._archive import MAGIC, VERSION, ArchiveError, read_archive, scan_archive
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.ids import CheckpointId, TraceId
from tests.cli.conftest import (
    PARALLEL_TRACE,
    Parallel,
    blobs_of,
    flowpoint,
    invoke,
    make_parallel,
    one_line_error,
    sqlite_url,
    write_keyring,
    writes_of,
)


class Fan(TypedDict):
    """The state of the LangGraph graph below."""

    items: list[int]
    out: Annotated[list[str], operator.add]


@pytest.fixture
def parallel(tmp_path: Path) -> Parallel:
    return make_parallel(sqlite_url(tmp_path / "parallel.db"))


def _set_write_data(url: str, task_id: str, data: bytes) -> None:
    path = url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as conn, conn:
        updated = conn.execute(
            "UPDATE flowpoint_writes SET data = ? WHERE task_id = ?", (data, task_id)
        )
        assert updated.rowcount == 1


# -- show ----------------------------------------------------------------------------------


def test_show_lists_the_pending_writes_and_the_cursor(parallel: Parallel) -> None:
    result = invoke("show", str(parallel.with_writes), "--store", parallel.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    writes = {write["task_id"]: write for write in document["pending_writes"]}
    assert list(writes) == ["docs", "summarise#0", "summarise#1", "web"]
    assert writes["docs"] == {
        "task_id": "docs",
        "node": "docs",
        "index": -1,
        "channel": "__error__",
        "fields": None,
        "error": "builtins.RuntimeError: docs down",
        "value": {"type": "builtins.RuntimeError", "message": "docs down"},
    }
    assert writes["summarise#1"]["node"] == "summarise"
    assert writes["summarise#1"]["fields"] == ["summary2"]
    assert writes["web"]["value"] == {"web": "3 pages"}
    assert writes["web"]["error"] is None
    tasks = document["cursor"]["tasks"]
    assert [task["node"] for task in tasks] == ["docs", "summarise", "summarise", "web"]
    assert tasks[1] == {"node": "summarise", "send": 0, "arg": {"n": 1}}
    assert document["cursor"]["joins"] == []


def test_show_for_people(parallel: Parallel) -> None:
    done = flowpoint("show", str(parallel.with_writes), "--store", parallel.url)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert 'docs; summarise #0 with {"n": 1}; summarise #1 with {"n": 2}; web' in text
    assert "pending writes (4)" in text
    docs = next(line for line in text.splitlines() if line.startswith("docs "))
    assert "failed: builtins.RuntimeError: docs down" in docs
    web = next(line for line in text.splitlines() if line.startswith("web "))
    assert "update" in web
    assert "web" in web.split("update", 1)[1]


def test_show_without_writes_says_nothing_of_them(parallel: Parallel) -> None:
    first = str(parallel.ids[0])
    document = json.loads(invoke("show", first, "--store", parallel.url, "--json").stdout)
    assert document["pending_writes"] == []
    assert document["cursor"] == {}
    text = invoke("show", first, "--store", parallel.url).stdout
    assert "pending writes" not in text
    assert "next tasks" not in text


def test_show_a_damaged_write_exits_3(parallel: Parallel) -> None:
    _set_write_data(parallel.url, "web", b"\x89FPW garbage")
    result = invoke("show", str(parallel.with_writes), "--store", parallel.url)
    assert result.exit_code == 3
    assert "pending write 'web'" in one_line_error(result.stderr)


# -- copy ----------------------------------------------------------------------------------


def test_copy_copies_the_writes_byte_for_byte_and_a_rerun_skips_them(
    parallel: Parallel, tmp_path: Path
) -> None:
    target = sqlite_url(tmp_path / "target.db")
    done = flowpoint("copy", parallel.url, target)
    assert done.returncode == 0, done.stderr
    assert "4 pending write(s)" in done.stdout
    assert writes_of(target, parallel.with_writes) == writes_of(parallel.url, parallel.with_writes)
    assert blobs_of(target) == blobs_of(parallel.url)
    again = invoke("copy", parallel.url, target, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert (report["writes_copied"], report["writes_skipped"]) == (0, 4)
    assert writes_of(target, parallel.with_writes) == writes_of(parallel.url, parallel.with_writes)


def test_copy_into_a_file_store_and_back(parallel: Parallel, tmp_path: Path) -> None:
    files = f"file://{tmp_path / 'files'}"
    back = sqlite_url(tmp_path / "back.db")
    assert invoke("copy", parallel.url, files).exit_code == 0
    assert invoke("copy", files, back).exit_code == 0
    assert writes_of(back, parallel.with_writes) == writes_of(parallel.url, parallel.with_writes)


def test_copy_never_overwrites_a_different_write(parallel: Parallel, tmp_path: Path) -> None:
    target = sqlite_url(tmp_path / "target.db")
    assert invoke("copy", parallel.url, target).exit_code == 0
    mine = next(w for w in writes_of(target, parallel.with_writes) if w.task_id == "web")
    other = SerdeCheckpointCodec(dict).encode_write(
        TraceId(PARALLEL_TRACE),
        CheckpointId(parallel.with_writes),
        TaskWrite("web", 0, "update", {"web": "another answer"}),
    )
    _set_write_data(parallel.url, "web", other.data)  # the source now differs, intact
    result = invoke("copy", parallel.url, target)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert f"pending write 'web' 0 of checkpoint {parallel.with_writes}" in line
    assert "Nothing was overwritten" in line
    assert [w for w in writes_of(target, parallel.with_writes) if w.task_id == "web"] == [mine]


def test_copy_skip_corrupt_skips_a_damaged_write(parallel: Parallel, tmp_path: Path) -> None:
    _set_write_data(parallel.url, "web", b"garbage")
    stopped = invoke("copy", parallel.url, sqlite_url(tmp_path / "stopped.db"))
    assert stopped.exit_code == 3
    assert "pending write 'web'" in one_line_error(stopped.stderr)
    target = sqlite_url(tmp_path / "target.db")
    result = invoke("copy", parallel.url, target, "--skip-corrupt", "--json")
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert (report["copied"], report["writes_copied"], report["skipped_corrupt"]) == (2, 3, 1)
    assert report["corrupt"][0]["checkpoint_id"] == str(parallel.with_writes)
    assert [w.task_id for w in writes_of(target, parallel.with_writes)] == [
        "docs",
        "summarise#0",
        "summarise#1",
    ]


# -- export and import ---------------------------------------------------------------------


def test_export_and_import_keep_the_writes(parallel: Parallel, tmp_path: Path) -> None:
    archive = tmp_path / "out.fpa"
    exported = invoke("export", str(archive), "--store", parallel.url, "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["writes"] == 4
    assert archive.read_bytes()[8:10] == struct.pack(">H", VERSION)
    with archive.open("rb") as stream:
        summary = scan_archive(stream)
    assert (summary.checkpoints, summary.writes) == (2, 4)
    target = sqlite_url(tmp_path / "imported.db")
    done = flowpoint("import", str(archive), "--store", target)
    assert done.returncode == 0, done.stderr
    assert "4 pending write(s)" in done.stdout
    assert writes_of(target, parallel.with_writes) == writes_of(parallel.url, parallel.with_writes)
    assert blobs_of(target) == blobs_of(parallel.url)
    again = invoke("import", str(archive), "--store", target, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["writes_skipped"] == 4
    # The same store exported again gives the same bytes.
    second = tmp_path / "again.fpa"
    assert invoke("export", str(second), "--store", target).exit_code == 0
    assert second.read_bytes() == archive.read_bytes()


def _archive_records(data: bytes) -> tuple[bytes, list[dict[str, object]]]:
    """The prefix and the records (trailer included) of an archive, as plain maps."""
    prefix, rest, records = data[:10], data[10:], []
    while rest:
        (length,) = struct.unpack(">I", rest[:4])
        records.append(msgspec.msgpack.decode(rest[4 : 4 + length]))
        rest = rest[4 + length :]
    return prefix, records


def _pack_archive(version: int, records: list[dict[str, object]]) -> bytes:
    """An archive of ``records`` (the trailer's counts and checksum made right)."""
    body = struct.pack(">8sH", MAGIC, version)
    for record in records:
        encoded = msgspec.msgpack.encode(record)
        body += struct.pack(">I", len(encoded)) + encoded
    checkpoints = [record for record in records if record["type"] == "checkpoint"]
    trailer: dict[str, object] = {
        "type": "end",
        "traces": len({record["trace_id"] for record in checkpoints}),
        "checkpoints": len(checkpoints),
        "sha256": hashlib.sha256(body).digest(),
    }
    if version > 1:
        trailer["writes"] = len(records) - len(checkpoints)
    encoded = msgspec.msgpack.encode(trailer)
    return body + struct.pack(">I", len(encoded)) + encoded


def test_an_archive_of_version_1_still_imports(parallel: Parallel, tmp_path: Path) -> None:
    archive = tmp_path / "out.fpa"
    assert invoke("export", str(archive), "--store", parallel.url).exit_code == 0
    _, records = _archive_records(archive.read_bytes())
    checkpoints = [record for record in records if record["type"] == "checkpoint"]
    old = tmp_path / "old.fpa"
    old.write_bytes(_pack_archive(1, checkpoints))
    target = sqlite_url(tmp_path / "imported.db")
    result = invoke("import", str(old), "--store", target, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["copied"] == 2
    assert blobs_of(target) == blobs_of(parallel.url)
    assert writes_of(target, parallel.with_writes) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("write in a version 1 archive", "pending write in an archive of version 1"),
        ("write before its checkpoint", "not of the checkpoint before it"),
        ("write of another trace", "not of the checkpoint before it"),
        ("writes out of order", "out of order"),
        ("write with a bad task id", "impossible"),
    ],
)
def test_a_write_record_out_of_place_is_corruption(
    parallel: Parallel, tmp_path: Path, change: str, fragment: str
) -> None:
    archive = tmp_path / "out.fpa"
    assert invoke("export", str(archive), "--store", parallel.url).exit_code == 0
    _, records = _archive_records(archive.read_bytes())
    records = records[:-1]
    version = VERSION
    writes = [i for i, record in enumerate(records) if record["type"] == "write"]
    if change == "write in a version 1 archive":
        version = 1
    elif change == "write before its checkpoint":
        records.insert(0, records.pop(writes[0]))
    elif change == "write of another trace":
        records[writes[0]]["trace_id"] = "elsewhere"
    elif change == "writes out of order":
        records[writes[0]], records[writes[1]] = records[writes[1]], records[writes[0]]
    else:
        records[writes[0]]["task_id"] = ""
    damaged = _pack_archive(version, records)
    with pytest.raises(ArchiveError, match=fragment) as raised:
        scan_archive(io.BytesIO(damaged))
    assert raised.value.corrupt
    path = tmp_path / "damaged.fpa"
    path.write_bytes(damaged)
    target = tmp_path / "never.db"
    result = invoke("import", str(path), "--store", sqlite_url(target))
    assert result.exit_code == 3
    assert fragment in one_line_error(result.stderr)
    assert not target.exists()


def test_import_refuses_a_write_whose_data_is_damaged(parallel: Parallel, tmp_path: Path) -> None:
    archive = tmp_path / "out.fpa"
    assert invoke("export", str(archive), "--store", parallel.url).exit_code == 0
    _, records = _archive_records(archive.read_bytes())
    write = next(record for record in records if record["type"] == "write")
    data = bytearray(write["data"])  # type: ignore[arg-type]
    data[len(data) // 2] ^= 0xFF
    write["data"] = bytes(data)
    path = tmp_path / "damaged.fpa"
    path.write_bytes(_pack_archive(VERSION, records[:-1]))
    target = tmp_path / "never.db"
    result = invoke("import", str(path), "--store", sqlite_url(target))
    assert result.exit_code == 3
    assert "pending write" in one_line_error(result.stderr)
    assert not target.exists()  # checked before anything was written


def test_read_archive_yields_each_write_after_its_checkpoint(
    parallel: Parallel, tmp_path: Path
) -> None:
    archive = tmp_path / "out.fpa"
    assert invoke("export", str(archive), "--store", parallel.url).exit_code == 0
    with archive.open("rb") as stream:
        items = list(read_archive(stream))
    kinds = [type(item).__name__ for item in items]
    assert kinds == ["CheckpointBlob", "CheckpointBlob", *["PendingWrite"] * 4]
    assert items[2:] == writes_of(parallel.url, parallel.with_writes)


# -- verify --------------------------------------------------------------------------------


def test_verify_checks_every_write(parallel: Parallel) -> None:
    result = invoke("verify", "--store", parallel.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["ok"], document["writes"]) == (2, 4)
    done = flowpoint("verify", "--store", parallel.url)
    assert "4 pending write(s)" in done.stdout


def test_verify_names_a_damaged_write(parallel: Parallel) -> None:
    writes = writes_of(parallel.url, parallel.with_writes)
    web = next(write for write in writes if write.task_id == "web")
    data = bytearray(web.data)
    data[len(data) // 2] ^= 0xFF
    _set_write_data(parallel.url, "web", bytes(data))
    result = invoke("verify", "--store", parallel.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    (problem,) = document["problems"]
    assert problem["checkpoint_id"] == str(parallel.with_writes)
    assert problem["trace_id"] == PARALLEL_TRACE
    assert "pending write 'web'" in problem["reason"]
    assert (document["ok"], document["writes"]) == (2, 4)


def test_verify_names_a_write_filed_under_another_key(parallel: Parallel) -> None:
    writes = writes_of(parallel.url, parallel.with_writes)
    web = next(write for write in writes if write.task_id == "web")
    _set_write_data(parallel.url, "docs", web.data)  # web's data under docs's key
    result = invoke("verify", "--store", parallel.url, "--json")
    assert result.exit_code == 3
    (problem,) = json.loads(result.stdout)["problems"]
    assert "belongs to another write" in problem["reason"]


def test_verify_names_a_write_attached_to_a_checkpoint_of_another_trace(
    parallel: Parallel,
) -> None:
    codec = SerdeCheckpointCodec(dict)
    stray = codec.encode_write(
        TraceId("elsewhere"), CheckpointId(parallel.ids[0]), TaskWrite("web", 0, "update", {})
    )

    async def save() -> None:
        async with open_store(parallel.url) as store:
            await store.save_writes([stray])

    asyncio.run(save())
    result = invoke("verify", "--store", parallel.url, "--json")
    assert result.exit_code == 3, result.output
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["checkpoint_id"] == str(parallel.ids[0])
    assert "trace 'elsewhere'" in problem["reason"]


def test_verify_encrypted_writes_need_the_key_ring(tmp_path: Path) -> None:
    key = os.urandom(32)
    ring = KeyRing({"k1": key}, primary="k1")
    parallel = make_parallel(sqlite_url(tmp_path / "secret.db"), ring)
    keyring = write_keyring(tmp_path / "ring.json", {"k1": key}, "k1")
    keyless = invoke("verify", "--store", parallel.url, "--json")
    assert keyless.exit_code == 1, keyless.output
    problems = json.loads(keyless.stdout)["problems"]
    assert {problem["kind"] for problem in problems} == {"undecodable"}
    assert sum("pending write" in problem["reason"] for problem in problems) == 4
    result = invoke("verify", "--store", parallel.url, "--keyring", str(keyring), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["writes"] == 4
    shown = invoke(
        "show",
        str(parallel.with_writes),
        "--store",
        parallel.url,
        "--json",
        "--keyring",
        str(keyring),
    )
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)["pending_writes"]) == 4
    copied = sqlite_url(tmp_path / "copy.db")
    assert invoke("copy", parallel.url, copied).exit_code == 0  # no key needed
    assert writes_of(copied, parallel.with_writes) == writes_of(parallel.url, parallel.with_writes)


@pytest.mark.parametrize(
    ("cursor", "rows"),
    [
        ({}, []),
        (
            {
                "tasks": [{"node": "write"}, {"node": "sum", "send": 3, "arg": [1, "x"]}],
                "joins": [{"to": "write", "from": ["docs", "web"], "done": ["web"]}],
            },
            [
                ("next tasks", 'write; sum #3 with [1, "x"]'),
                ("joins", "write after docs, web (done: web)"),
            ],
        ),
        (
            {"tasks": [], "joins": [{"to": "w", "from": ["a"], "done": []}]},
            [("joins", "w after a (done: none)")],
        ),
        ({"tasks": "not a list of tasks"}, [("cursor", '{"tasks": "not a list of tasks"}')]),
        ({"tasks": [{"send": 1}]}, [("cursor", '{"tasks": [{"send": 1}]}')]),
        ({"joins": [7]}, [("cursor", '{"joins": [7]}')]),
    ],
)
def test_cursor_rows(cursor: dict[str, object], rows: list[tuple[str, str]]) -> None:
    from flowpoint.cli._pending import cursor_rows

    assert cursor_rows(cursor) == rows


def test_writes_of_other_channels_are_shown_as_they_are() -> None:
    from flowpoint.cli._pending import pending_json

    (shown,) = pending_json([TaskWrite("ask#12", -3, "__interrupt__", {"q": b"\x00"})])
    assert (shown["node"], shown["fields"], shown["error"]) == ("ask", None, None)
    assert shown["value"] == {"q": "AA=="}


def test_langgraph_threads_move_with_their_writes(tmp_path: Path) -> None:
    pytest.importorskip("langgraph")
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    from flowpoint.langgraph import FlowpointSaver

    def work(item: int) -> dict[str, list[str]]:
        if item == 2:
            raise RuntimeError("boom")
        return {"out": [str(item)]}

    builder = StateGraph(Fan).add_node("work", work).add_edge("work", END)
    builder.add_conditional_edges(START, lambda s: [Send("work", i) for i in s["items"]], ["work"])
    source = sqlite_url(tmp_path / "lg.db")
    with FlowpointSaver.from_url(source) as saver:
        graph = builder.compile(checkpointer=saver)
        with pytest.raises(RuntimeError, match="boom"):
            graph.invoke({"items": [1, 2, 3], "out": []}, {"configurable": {"thread_id": "t1"}})
    target = f"file://{tmp_path / 'files'}"
    copied = invoke("copy", source, target, "--json")
    assert copied.exit_code == 0, copied.output
    assert json.loads(copied.stdout)["writes_copied"] > 0
    verified = invoke("verify", "--store", target, "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["writes"] == json.loads(copied.stdout)["writes_copied"]
    for checkpoint_id in blobs_of(source):
        assert writes_of(target, checkpoint_id) == writes_of(source, checkpoint_id)
