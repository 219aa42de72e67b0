"""The saver's API over every backend, beyond LangGraph's conformance suite: what the
adapter promises of its own (latest is the newest id, channels kept from the parent,
headers that filter, copies that keep their ids, safe loading)."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base.id import uuid6

from flowpoint import Checkpoint as FlowpointCheckpoint
from flowpoint import InMemoryBlobStore, TypedCheckpointStore
from flowpoint.codec import KeyRing
from flowpoint.errors import (
    CheckpointConflict,
    CodecError,
    CorruptCheckpoint,
    InvalidTraceId,
    StorageError,
)
from flowpoint.langgraph import FlowpointSaver
from flowpoint.langgraph._layout import ADAPTER_GRAPH_HASH
from flowpoint.langgraph._threads import trace_for
from tests.harnesses.base import StoreHarness
from tests.langgraph.checkpoints import checkpoint, config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _put(
    saver: FlowpointSaver,
    thread: str,
    values: dict[str, Any],
    *,
    parent: dict[str, Any] | None = None,
    ns: str = "",
    new_versions: dict[str, Any] | None = None,
    versions: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    parent_id = None if parent is None else parent["configurable"]["checkpoint_id"]
    made = checkpoint(values, versions)
    return await saver.aput(
        config(thread, ns, parent_id),
        made,
        {"source": "loop", "step": 0, "parents": {}, **metadata},
        made["channel_versions"] if new_versions is None else new_versions,
    )


async def _ids(saver: FlowpointSaver, cfg: dict[str, Any] | None, **kwargs: Any) -> list[str]:
    return [t.checkpoint["id"] async for t in saver.alist(cfg, **kwargs)]


async def test_channels_not_in_new_versions_keep_what_the_parent_stored(
    saver: FlowpointSaver,
) -> None:
    first = await _put(saver, "t", {"a": "a1", "b": ["b1"]})
    second = await _put(
        saver,
        "t",
        {"a": "a2", "b": ["stale, not stored"]},
        parent=first,
        versions={"a": 2, "b": 1},
        new_versions={"a": 2},
    )
    got = await saver.aget_tuple(second)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"a": "a2", "b": ["b1"]}
    assert got.parent_config is not None
    assert (
        got.parent_config["configurable"]["checkpoint_id"] == first["configurable"]["checkpoint_id"]
    )
    third = await _put(
        saver,
        "t",
        {"a": "a3"},
        parent=second,
        versions={"a": 3, "c": 1},
        new_versions={"a": 3, "c": 1},
    )
    got = await saver.aget_tuple(third)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"a": "a3"}
    first_again = await saver.aget_tuple(first)
    assert first_again is not None
    assert first_again.checkpoint["channel_values"] == {"a": "a1", "b": ["b1"]}


async def test_the_newest_id_is_the_latest_and_older_ids_are_refused(
    saver: FlowpointSaver,
) -> None:
    older = checkpoint({"x": 1})
    first = await _put(saver, "t", {"x": 0})
    latest = await saver.aget_tuple(config("t"))
    assert latest is not None
    assert latest.config == first
    with pytest.raises(CheckpointConflict, match="not newer"):
        await saver.aput(config("t"), older, {}, {"x": 1})
    same = await saver.aget_tuple(first)
    assert same is not None
    # The newest saved again unchanged is a repeat, and is accepted; changed, it is not.
    repeated = dict(same.checkpoint)
    assert await saver.aput(config("t"), repeated, same.metadata, {}) == first
    changed = {**repeated, "channel_values": {"x": "changed"}}
    with pytest.raises(CheckpointConflict):
        await saver.aput(config("t"), changed, same.metadata, {"x": 1})


async def test_the_latest_is_read_again_when_another_saver_wrote_after_it(
    harness: StoreHarness, saver: FlowpointSaver
) -> None:
    # The saver keeps the newest checkpoint it wrote; another writer's (a second
    # process, over a store object of its own) must still win a later get_tuple.
    other = FlowpointSaver(await harness.open())
    try:
        first = await _put(saver, "t", {"messages": ["a"]})
        seen = await saver.aget_tuple(config("t"))
        assert seen is not None
        assert seen.config == first
        seen.checkpoint["channel_values"]["messages"].append("changed by the caller")
        again = await saver.aget_tuple(config("t"))
        assert again is not None
        assert again.checkpoint["channel_values"] == {"messages": ["a"]}

        second = await _put(other, "t", {"messages": ["a", "b"]}, parent=first)
        latest = await saver.aget_tuple(config("t"))
        assert latest is not None
        assert latest.config == second
        assert latest.checkpoint["channel_values"] == {"messages": ["a", "b"]}

        await other.adelete_thread("t")
        assert await saver.aget_tuple(config("t")) is None
        third = await _put(other, "t", {"messages": ["c"]})
        latest = await saver.aget_tuple(config("t"))
        assert latest is not None
        assert latest.config == third
    finally:
        await other.aclose()


async def test_listing_filters_and_pages_like_langgraphs_savers(saver: FlowpointSaver) -> None:
    made = []
    parent = None
    for step in range(5):
        parent = await _put(
            saver,
            "t",
            {"n": step},
            parent=parent,
            step=step,
            source="input" if step % 2 else "loop",
            nested={"k": step},
        )
        made.append(parent["configurable"]["checkpoint_id"])
    await _put(saver, "t", {"n": 0}, ns="sub:1")
    await _put(saver, "other", {"n": 0})
    assert await _ids(saver, config("t")) == made[::-1]
    assert await _ids(saver, config("t"), limit=2) == made[:2:-1]
    assert await _ids(saver, config("t"), before=config("t", checkpoint_id=made[3])) == made[2::-1]
    assert await _ids(saver, config("t"), filter={"source": "input"}) == [made[3], made[1]]
    assert await _ids(saver, config("t"), filter={"nested": {"k": 2}}) == [made[2]]
    assert await _ids(saver, config("t"), filter={"missing": None}, limit=1) == [made[4]]
    assert await _ids(saver, config("t", checkpoint_id=made[1])) == [made[1]]
    whole_thread = {"configurable": {"thread_id": "t"}}
    assert len(await _ids(saver, whole_thread)) == 6
    everything = await _ids(saver, None)
    assert len(everything) == 7
    assert everything == sorted(everything, reverse=True)
    listed = [t async for t in saver.alist(config("t", "sub:1"))]
    assert listed[0].config["configurable"]["checkpoint_ns"] == "sub:1"


async def test_copies_keep_their_ids_and_a_second_copy_adds_nothing(
    saver: FlowpointSaver,
) -> None:
    first = await _put(saver, "src", {"m": [HumanMessage("hi")]})
    second = await _put(saver, "src", {"m": [HumanMessage("hi"), AIMessage("yo")]}, parent=first)
    await _put(saver, "src", {"inner": 1}, ns="sub:1")
    await saver.acopy_thread("src", "dst")
    await saver.acopy_thread("src", "dst")
    assert await _ids(saver, config("dst")) == await _ids(saver, config("src"))
    copied = await saver.aget_tuple(
        config("dst", checkpoint_id=second["configurable"]["checkpoint_id"])
    )
    assert copied is not None
    assert copied.checkpoint["channel_values"]["m"] == [HumanMessage("hi"), AIMessage("yo")]
    assert copied.parent_config is not None
    assert copied.parent_config["configurable"]["thread_id"] == "dst"
    assert len(await _ids(saver, config("dst", "sub:1"))) == 1
    # The copy goes on as a thread of its own.
    await _put(saver, "dst", {"m": []}, parent=copied.config)
    assert len(await _ids(saver, config("dst"))) == 3
    assert len(await _ids(saver, config("src"))) == 2


async def test_prune_keeps_what_delta_channels_are_rebuilt_from(saver: FlowpointSaver) -> None:
    parent = await _put(saver, "t", {"log": "snapshot", "x": 0})
    snapshot = parent["configurable"]["checkpoint_id"]
    for step in range(1, 4):
        parent = await _put(
            saver,
            "t",
            {"x": step},
            parent=parent,
            versions={"x": step + 1},
            new_versions={"x": step + 1},
            counters_since_delta_snapshot={"log": [step, step]},
        )
    await _put(saver, "t", {"x": 0}, ns="sub:1")
    await _put(saver, "t", {"x": 1}, ns="sub:1")
    await saver.aprune(["t"], strategy="keep_latest")
    kept = await _ids(saver, config("t"))
    assert kept[0] == parent["configurable"]["checkpoint_id"]
    assert kept[-1] == snapshot
    assert len(kept) == 4  # the chain back to the checkpoint that stores "log"
    assert len(await _ids(saver, config("t", "sub:1"))) == 1
    await saver.aprune(["t"], strategy="delete")
    assert await _ids(saver, {"configurable": {"thread_id": "t"}}) == []
    with pytest.raises(ValueError, match="strategy"):
        await saver.aprune(["t"], strategy="everything")
    with pytest.raises(TypeError):
        await saver.aprune("t")


async def test_delete_for_runs_and_delete_thread(saver: FlowpointSaver) -> None:
    first = await _put(saver, "t", {"x": 1}, run_id="run-1")
    await _put(saver, "t", {"x": 2}, parent=first, run_id="run-2")
    await _put(saver, "u", {"x": 3}, run_id="run-1")
    await saver.adelete_for_runs(["run-1"])
    assert [t.metadata["run_id"] async for t in saver.alist(None)] == ["run-2"]
    await saver.adelete_thread("t")
    assert await _ids(saver, None) == []


async def test_a_thread_the_adapter_did_not_write_is_left_alone(harness: StoreHarness) -> None:
    store = await harness.open()
    typed = TypedCheckpointStore(store)
    await typed.save_with_trace("t", FlowpointCheckpoint.first("node", {"a": 1}), 0x1234)
    saver = FlowpointSaver(store)
    try:
        assert await saver.aget_tuple(config("t")) is None
        assert await _ids(saver, None) == []
        await saver.adelete_thread("t")
        await saver.aprune(["t"], strategy="delete")
        assert len(await typed.history("t")) == 1
    finally:
        await saver.aclose()


async def test_encrypted_metadata_stays_out_of_headers_and_filters_still_work(
    harness: StoreHarness,
) -> None:
    ring = KeyRing({"k": os.urandom(32)}, primary="k")
    saver = FlowpointSaver(await harness.open(), encryption=ring)
    try:
        first = await _put(saver, "t", {"secret": "sk-live-1"}, run_id="run-secret", user="ana")
        await _put(saver, "t", {"secret": "sk-live-2"}, parent=first, user="bob")
        history = await saver.store.history(trace_for("t", ""))
        assert all(
            "user" not in info.metadata and "run_id" not in info.metadata for info in history
        )
        data = await harness.read_data(history[0].checkpoint_id)
        assert b"bob" not in data
        assert b"sk-live" not in data
        assert await _ids(saver, config("t"), filter={"user": "ana"}) == [
            first["configurable"]["checkpoint_id"]
        ]
        await saver.adelete_for_runs(["run-secret"])
        assert len(await _ids(saver, config("t"))) == 1
    finally:
        await saver.aclose()


async def test_unencrypted_metadata_is_copied_flat_for_listings(
    memory_saver: FlowpointSaver,
) -> None:
    await _put(memory_saver, "t", {"x": 1}, run_id="r", step=3, long="y" * 5000)
    [info] = await memory_saver.store.history("t")
    assert info.metadata["run_id"] == "r"
    assert info.metadata["step"] == 3
    assert info.metadata["langgraph:uncopied"] == '["parents","long"]'
    assert await _ids(memory_saver, config("t"), filter={"long": "y" * 5000}) != []


async def test_metadata_keys_json_cannot_hold_are_stored_but_not_copied(
    memory_saver: FlowpointSaver,
) -> None:
    # A lone surrogate: kept in the body (tagged), but no header can name it.
    made = await _put(memory_saver, "t", {"x": 1}, run_id="r", **{"odd\ud800": 1})
    [info] = await memory_saver.store.history("t")
    assert "langgraph:uncopied" not in info.metadata
    assert "run_id" not in info.metadata  # no copy at all: filters decode the body
    found = await memory_saver.aget_tuple(made)
    assert found is not None
    assert found.metadata["odd\ud800"] == 1
    assert await _ids(memory_saver, config("t"), filter={"run_id": "r"}) == [
        made["configurable"]["checkpoint_id"]
    ]


async def test_unchanged_channels_are_not_stored_again(memory_saver: FlowpointSaver) -> None:
    big = {"profile": os.urandom(8000).hex(), "turn": 0}
    parent = await _put(memory_saver, "t", big)
    for turn in range(1, 4):
        parent = await _put(
            memory_saver,
            "t",
            {**big, "turn": turn},
            parent=parent,
            versions={"profile": 1, "turn": turn + 1},
            new_versions={"turn": turn + 1},
        )
    sizes = [info.size for info in await memory_saver.store.history("t")]
    assert max(sizes[:-1]) * 10 < sizes[-1], sizes


async def test_configs_that_name_no_thread_are_refused(memory_saver: FlowpointSaver) -> None:
    for bad in ({}, {"configurable": {}}, {"configurable": {"thread_id": ""}}, []):
        with pytest.raises(ValueError, match=r"thread_id|configurable"):
            await memory_saver.aget_tuple(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTraceId, match="shorter"):
        await memory_saver.aget_tuple(config("t" * 300))
    with pytest.raises(ValueError, match="id must be"):
        await memory_saver.aput(config("t"), {"id": 7}, {}, {})  # type: ignore[typeddict-item]
    with pytest.raises(CodecError, match="allowed_types"):
        await _put(memory_saver, "t", {"x": object()})
    assert await _ids(memory_saver, config("t")) == []


async def test_a_forged_checkpoint_is_refused_without_calling_what_it_names(
    memory_saver: FlowpointSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msgspec
    import ormsgpack

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("stored data called a function")

    monkeypatch.setattr(os, "system", never)
    good = await _put(memory_saver, "t", {"x": 1})
    stored = await memory_saver.aget_tuple(good)
    assert stored is not None
    typed = memory_saver.store
    [info] = await typed.history("t")
    read = await typed.load(info.checkpoint_id, ADAPTER_GRAPH_HASH)
    assert read is not None
    forged_value = ormsgpack.packb({"$type": "os.system", "$value": "echo forged"})

    async def store_forged(tagged: list[str]) -> None:
        state = {**read.state, "x": msgspec.Raw(forged_value)}
        state["$tagged"] = msgspec.Raw(ormsgpack.packb(tagged))
        await typed.delete_trace("t")
        forged = FlowpointCheckpoint(**{**_fields(read), "state": state})
        await typed.save_with_trace("t", forged, ADAPTER_GRAPH_HASH)

    # The field says it holds tagged values: the name is refused, nothing is called.
    await store_forged(["x"])
    with pytest.raises(CorruptCheckpoint, match=r"os\.system"):
        await memory_saver.aget_tuple(config("t"))
    with pytest.raises(CorruptCheckpoint):
        [t async for t in memory_saver.alist(config("t"))]
    # A field that says it is plain data is read as data: a "$type" key there names nothing.
    await store_forged([])
    got = await memory_saver.aget_tuple(config("t"))
    assert got is not None
    assert got.checkpoint["channel_values"]["x"] == {"$type": "os.system", "$value": "echo forged"}


def _fields(checkpoint: FlowpointCheckpoint[Any]) -> dict[str, Any]:
    return {
        "checkpoint_id": checkpoint.checkpoint_id,
        "step": checkpoint.step,
        "parent_id": checkpoint.parent_id,
        "current_node": checkpoint.current_node,
        "created_at": checkpoint.created_at,
        "metadata": checkpoint.metadata,
    }


def test_blocking_methods_work_from_threads_and_inside_a_running_loop(
    tmp_path: Any,
) -> None:
    with FlowpointSaver.from_url(f"sqlite:///{tmp_path}/t.db") as saver:
        made = checkpoint({"x": 1})
        saved = saver.put(config("t"), made, {"step": 0}, {"x": 1})

        async def inside_a_loop() -> Any:
            return saver.get_tuple(saved)

        assert asyncio.run(inside_a_loop()) is not None
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(saver.get_tuple(config("t"))))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4
        assert all(r.checkpoint["id"] == made["id"] for r in results)
        assert [t.checkpoint["id"] for t in saver.list(config("t"))] == [made["id"]]
    with pytest.raises(RuntimeError, match="closed"):
        saver.get_tuple(config("t"))
    saver.close()


async def test_async_with_closes_and_versions_follow_langgraphs_rules() -> None:
    async with FlowpointSaver(InMemoryBlobStore()) as saver:
        assert saver.get_next_version(None, None) == 1
        assert saver.get_next_version(1, None) == 2
        after = saver.get_next_version("00000000000000000000000000000005.0.123", None)
        assert isinstance(after, str)
        assert after > "00000000000000000000000000000005.9"
    with pytest.raises(RuntimeError, match="closed"):
        await saver.aget_tuple(config("t"))


def test_the_saver_refuses_formats_it_cannot_lay_out() -> None:
    with pytest.raises(ValueError, match="MessagePack"):
        FlowpointSaver(InMemoryBlobStore(), format="json")
    with pytest.raises(TypeError, match="BlobCheckpointStore"):
        FlowpointSaver("sqlite:///x.db")  # type: ignore[arg-type]


async def test_with_allowlist_adds_classes_of_loaded_modules(memory_saver: FlowpointSaver) -> None:
    import pydantic

    class Note(pydantic.BaseModel):
        text: str

    with pytest.raises(CodecError):
        await _put(memory_saver, "t", {"note": Note(text="x")})
    wider = memory_saver.with_allowlist([(__name__, "Missing"), ("no.such.module", "X"), Note])
    saved = await _put(wider, "t", {"note": Note(text="x")})
    got = await wider.aget_tuple(saved)
    assert got is not None
    assert got.checkpoint["channel_values"]["note"] == Note(text="x")
    with pytest.raises(CorruptCheckpoint, match="Note"):
        await memory_saver.aget_tuple(saved)


def test_new_ids_sort_after_older_ones() -> None:
    assert str(uuid6(clock_seq=-1)) < str(uuid6(clock_seq=-1))


async def test_a_given_store_stays_open_and_an_opened_one_is_closed(tmp_path: Any) -> None:
    store = InMemoryBlobStore()
    async with FlowpointSaver(store) as saver:
        await _put(saver, "t", {"x": 1})
    assert len(await store.history("t")) == 1
    opened = FlowpointSaver.from_url(f"sqlite:///{tmp_path}/t.db")
    blobs = opened.store.store
    opened.close()
    with pytest.raises(StorageError):
        await blobs.history("t")


async def test_writes_keep_the_first_regular_write_and_the_last_special_one(
    saver: FlowpointSaver,
) -> None:
    from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

    stored = await _put(saver, "t", {"x": 1})
    await saver.aput_writes(stored, [("a", 1), (ERROR, "first error")], "task-2", "~b")
    await saver.aput_writes(stored, [("a", 2), (ERROR, "second error")], "task-2", "~b")
    await saver.aput_writes(
        stored, [(INTERRUPT, {"why": "ask"}), ("b", [HumanMessage("x")])], "task-1", "~a"
    )
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert got.pending_writes == [
        ("task-1", INTERRUPT, {"why": "ask"}),
        ("task-1", "b", [HumanMessage("x")]),
        ("task-2", ERROR, "second error"),
        ("task-2", "a", 1),
    ]


async def test_writes_that_cannot_be_kept_are_refused(memory_saver: FlowpointSaver) -> None:
    stored = await _put(memory_saver, "t", {"x": 1})
    with pytest.raises(ValueError, match="checkpoint_id"):
        await memory_saver.aput_writes(config("t"), [("a", 1)], "task")
    with pytest.raises(CodecError, match="allowed_types"):
        await memory_saver.aput_writes(stored, [("a", object())], "task")
    with pytest.raises(ValueError, match="task id"):
        await memory_saver.aput_writes(stored, [("a", 1)], "")
    with pytest.raises(ValueError, match="channel"):
        await memory_saver.aput_writes(stored, [("c" * 300, 1)], "task")
    long_path = "~" + "p" * 400
    await memory_saver.aput_writes(stored, [("a", 1)], "task", long_path)
    got = await memory_saver.aget_tuple(stored)
    assert got is not None
    assert got.pending_writes == [("task", "a", 1)]


async def test_a_forged_write_is_refused(
    memory_saver: FlowpointSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ormsgpack

    from flowpoint import TaskWrite

    stored = await _put(memory_saver, "t", {"x": 1})
    [info] = await memory_saver.store.history("t")
    forged = ormsgpack.packb({"$type": "os.system", "$value": "echo forged"})
    await memory_saver.store.save_writes(
        "t", info.checkpoint_id, [TaskWrite("task", 0, "a", [True, forged])]
    )
    with pytest.raises(CorruptCheckpoint, match=r"os\.system"):
        await memory_saver.aget_tuple(stored)
    await memory_saver.store.save_writes(
        "t", info.checkpoint_id, [TaskWrite("other", 0, "a", "not a value")]
    )
    with pytest.raises(CorruptCheckpoint, match="holds no value"):
        await memory_saver.aget_tuple(stored)


async def test_a_listing_reads_each_pages_writes_at_once(saver: FlowpointSaver) -> None:
    parent = None
    for step in range(4):
        parent = await _put(saver, "t", {"n": step}, parent=parent, step=step)
        await saver.aput_writes(parent, [("a", step), ("b", [HumanMessage(str(step))])], "task")
    blobs = saver.store.store
    calls: list[int] = []
    real = blobs.load_writes_many

    async def counted(ids: Any) -> Any:
        ids = list(ids)
        calls.append(len(ids))
        return await real(ids)

    blobs.load_writes_many = counted  # type: ignore[method-assign]
    listed = [t async for t in saver.alist(config("t"), limit=3)]
    assert [t.pending_writes for t in listed] == [
        [("task", "a", step), ("task", "b", [HumanMessage(str(step))])] for step in (3, 2, 1)
    ]
    assert calls == [3]
    # Each one as get_tuple reads it alone.
    for found in listed:
        alone = await saver.aget_tuple(found.config)
        assert alone is not None
        assert alone.pending_writes == found.pending_writes
