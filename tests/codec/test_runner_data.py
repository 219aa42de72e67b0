"""What the runner stores besides states: a checkpoint's cursor, and pending writes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest
import xxhash
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CodecError,
    CorruptCheckpoint,
    InMemoryBlobStore,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
)
from flowpoint.blob import PendingWrite
from flowpoint.checkpoint import TaskWrite
from flowpoint.codec import KeyRing
from flowpoint.codec._envelope import EnvelopeHeader, encode_head, frame_head, seal_envelope
from flowpoint.codec._writes import WRITE_MAGIC, WriteHeader, seal_write
from flowpoint.ids import new_checkpoint_id

GRAPH = 0x0123456789ABCDEF
K1, K2 = bytes([1]) * 32, bytes([2]) * 32
TEXT = " ".join(f"word{n % 97} said the branch" for n in range(200))
CURSOR = {
    "tasks": [
        {"node": "docs"},
        {"node": "summarise", "send": 0, "arg": {"title": "a", "raw": b"\x00\xff"}},
        {"node": "summarise", "send": 1, "arg": [1.5, None, datetime(2026, 1, 2, tzinfo=UTC)]},
    ],
    "joins": [{"to": "write", "from": ["docs", "web"], "done": ["web"]}],
}


def ring(primary: str = "k1", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"k1": K1}, primary=primary)


def codec(**options: Any) -> SerdeCheckpointCodec[Any]:
    return SerdeCheckpointCodec(dict, **options)


def header_of(data: bytes) -> list[Any]:
    (length,) = struct.unpack_from(">I", data, 5)
    header: list[Any] = msgspec.msgpack.decode(data[9 : 9 + length])
    return header


def with_cursor(state: dict[str, Any], cursor: dict[str, Any] = CURSOR) -> Checkpoint[Any]:
    return Checkpoint.first("plan", {}).child("docs, summarise x2", state, cursor=cursor)


# -- the cursor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": None},
        {"format": "json"},
        {"encryption": ring()},
        {"format": "json", "encryption": ring(), "compression": None},
    ],
    ids=["default", "plain", "json", "encrypted", "json-encrypted-plain"],
)
@pytest.mark.parametrize("state", [{"n": 1}, {"text": TEXT}], ids=["small", "large"])
def test_a_cursor_comes_back_as_it_was_stored(options: dict[str, Any], state: Any) -> None:
    checkpoint = with_cursor(state)
    blob = codec(**options).serialize(checkpoint, GRAPH, "trace-1")
    back = codec(**options).deserialize(blob, GRAPH)
    assert back == checkpoint
    assert back.cursor == CURSOR
    assert isinstance(back.cursor["tasks"][1]["arg"]["raw"], bytes)
    assert header_of(blob.data)[13] > 0


def test_a_checkpoint_without_a_cursor_stores_none_and_reads_it_empty() -> None:
    checkpoint = Checkpoint.first("plan", {"n": 1})
    blob = codec().serialize(checkpoint, GRAPH, "trace-1")
    assert header_of(blob.data)[11:] == [None, None, None]
    assert codec().deserialize(blob, GRAPH).cursor == {}


def test_a_cursor_is_never_in_the_clear_when_encrypted() -> None:
    secret = {"tasks": [{"node": "n", "send": 0, "arg": "the-secret-argument"}]}
    blob = codec(encryption=ring(), compression=None).serialize(
        with_cursor({"n": 1}, secret), GRAPH, "t"
    )
    assert b"the-secret-argument" not in blob.data


def test_cursors_ride_along_deltas_and_their_rebase() -> None:
    async def run() -> None:
        blobs = InMemoryBlobStore()
        store = TypedCheckpointStore(blobs, codec())
        saved: list[Checkpoint[Any]] = []
        parent = Checkpoint.first("plan", {"text": TEXT, "n": 0})
        await store.save_with_trace("t", parent, GRAPH)
        saved.append(parent)
        for n in range(1, 6):
            cursor = {"tasks": [{"node": "x", "send": n, "arg": n}]} if n % 2 else {}
            parent = parent.child("x", {"text": TEXT, "n": n}, cursor=cursor)
            await store.save_with_trace("t", parent, GRAPH)
            saved.append(parent)
        stored = [await blobs.load(c.checkpoint_id) for c in saved]
        assert any(b is not None and "flowpoint.delta_of" in b.metadata for b in stored)
        # Read back by a fresh facade (no frames in memory) and by the one that saved.
        fresh = TypedCheckpointStore(blobs, codec())
        for checkpoint in saved:
            assert await fresh.load(checkpoint.checkpoint_id, GRAPH) == checkpoint
            assert await store.load(checkpoint.checkpoint_id, GRAPH) == checkpoint
        # Deleting a base makes the deltas on it whole: their cursors go with them.
        await store.delete(saved[1].checkpoint_id)
        for checkpoint in saved[2:]:
            assert await fresh.load(checkpoint.checkpoint_id, GRAPH) == checkpoint

    asyncio.run(run())


def _sealed(cursor_length: int, body: bytes, encryption: KeyRing | None = None) -> CheckpointBlob:
    """A whole-state checkpoint whose header claims a cursor of ``cursor_length`` bytes."""
    checkpoint = Checkpoint.first("plan", {})
    fields: dict[str, Any] = {
        "checkpoint_id": checkpoint.checkpoint_id,
        "trace_id": "t",
        "step": 0,
        "parent_id": None,
        "graph_hash": GRAPH,
        "created_at": checkpoint.created_at,
        "current_node": "plan",
        "metadata": {},
    }
    header = EnvelopeHeader(
        body_format="msgpack", compression=None, key_id=None, cursor_length=cursor_length, **fields
    )
    return CheckpointBlob(**fields, data=seal_envelope(encode_head(header), body))


@pytest.mark.parametrize(
    ("cursor_length", "body", "reason"),
    [
        (100, b"\x80", "a cursor of 100 bytes in a body of 1"),
        (1, b"\x80\x01", "not a map of str keys"),
        (3, b"\x80\x81\x01\x02", "not a map of str keys"),
        (2, b"\x80\xc1\xc1", "cursor"),
        (0, b"\x80", "a cursor of 0 bytes"),
        (-1, b"\x80", "a cursor of -1 bytes"),
    ],
)
def test_a_damaged_cursor_is_corrupt(cursor_length: int, body: bytes, reason: str) -> None:
    with pytest.raises(CorruptCheckpoint, match=reason):
        codec().deserialize(_sealed(cursor_length, body), GRAPH)


def test_a_cursor_that_cannot_be_stored_or_is_too_large() -> None:
    with pytest.raises(CodecError, match="cursor"):
        codec().serialize(with_cursor({}, {"tasks": [object()]}), GRAPH, "t")
    big = {"tasks": [{"node": "n", "arg": "x" * 2000}]}
    with pytest.raises(CodecError, match="with its cursor of"):
        codec(max_state_size=1500).serialize(with_cursor({"n": 1}, big), GRAPH, "t")


def test_a_cursor_must_be_a_map_of_str_keys() -> None:
    with pytest.raises(ValueError, match="cursor"):
        Checkpoint.first("plan", {}, cursor={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="cursor"):
        Checkpoint.first("plan", {}, cursor=["x"])  # type: ignore[arg-type]


# -- pending writes -----------------------------------------------------------------------

CHECKPOINT = new_checkpoint_id()


def write(value: Any = None, **fields: Any) -> TaskWrite:
    return TaskWrite(
        **{"task_id": "web", "index": 0, "channel": "update", "value": value, **fields}
    )


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": None}, {"encryption": ring()}, {"format": "json"}],
    ids=["default", "plain", "encrypted", "json-codec"],
)
@pytest.mark.parametrize(
    "value",
    [
        None,
        {"notes": ["a", "b"], "n": 3},
        {"raw": b"\x00\x01", "at": datetime(2026, 1, 1, tzinfo=UTC), "x": 1.5},
        {"text": TEXT},
    ],
    ids=["none", "dict", "binary", "large"],
)
def test_a_write_comes_back_as_plain_data(options: dict[str, Any], value: Any) -> None:
    original = write(value, task_path="~/split/3", channel="__error__", index=-1)
    stored = codec(**options).encode_write("trace-1", CHECKPOINT, original)
    assert (stored.trace_id, stored.checkpoint_id, stored.task_id, stored.index) == (
        "trace-1",
        CHECKPOINT,
        "web",
        -1,
    )
    assert stored.data.startswith(WRITE_MAGIC)
    assert codec(**options).decode_write(stored) == original
    if options.get("encryption"):
        assert b"notes" not in stored.data
        assert b"__error__" not in stored.data


def test_a_large_write_is_compressed() -> None:
    stored = codec().encode_write("t", CHECKPOINT, write({"text": TEXT}))
    assert len(stored.data) < len(TEXT) / 3
    assert header_of(stored.data)[0] == "zstd"


def test_typed_values_come_back_plain() -> None:
    @dataclasses.dataclass
    class Doc:
        title: str

    class Model(pydantic.BaseModel):
        n: int

    stored = codec().encode_write(
        "t", CHECKPOINT, write({"doc": Doc("a"), "model": Model(n=2), "tuple": (1, 2)})
    )
    back = codec().decode_write(stored)
    assert back.value == {"doc": {"title": "a"}, "model": {"n": 2}, "tuple": [1, 2]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trace_id": "trace-2"}, "trace_id"),
        ({"checkpoint_id": new_checkpoint_id()}, "checkpoint_id"),
        ({"task_id": "docs"}, "task_id"),
        ({"index": 1}, "index"),
    ],
)
def test_a_write_stored_under_another_key_is_caught(change: dict[str, Any], field: str) -> None:
    stored = codec().encode_write("trace-1", CHECKPOINT, write({"n": 1}))
    moved = dataclasses.replace(stored, **change)
    with pytest.raises(CorruptCheckpoint, match=f"belongs to another write: {field}") as caught:
        codec().decode_write(moved)
    assert caught.value.checkpoint_id == moved.checkpoint_id


def _stored(data: bytes) -> PendingWrite:
    return PendingWrite("trace-1", CHECKPOINT, "web", 0, data)


def test_damaged_writes_are_corrupt() -> None:
    good = codec().encode_write("trace-1", CHECKPOINT, write({"n": 1})).data
    flipped = bytearray(good)
    flipped[-12] ^= 0x01
    cases = {
        "checksum": bytes(flipped),
        "truncated": good[:6],
        "not a flowpoint write": b"\x89FPC" + good[4:],
        "format version": good[:4] + b"\x02" + good[5:],
        "header length": good[:5] + struct.pack(">I", 2**31) + good[9:],
    }
    for reason, data in cases.items():
        with pytest.raises(CorruptCheckpoint, match=reason):
            codec().decode_write(_stored(data))
    checkpoint_data = codec().serialize(Checkpoint.first("a", {}), GRAPH, "t").data
    with pytest.raises(CorruptCheckpoint, match="not a flowpoint write"):
        codec().decode_write(_stored(checkpoint_data))
    with pytest.raises(CorruptCheckpoint, match="max_payload_size"):
        codec(max_payload_size=20).decode_write(_stored(good))


def _resealed(header: WriteHeader, body: bytes, encrypt: Any = None) -> PendingWrite:
    return _stored(seal_write(header, body, encrypt))


def header(**change: Any) -> WriteHeader:
    fields = {
        "compression": None,
        "key_id": None,
        "trace_id": "trace-1",
        "checkpoint_id": CHECKPOINT,
        "task_id": "web",
        "index": 0,
        **change,
    }
    return WriteHeader(**fields)


def test_a_write_body_that_does_not_decode_is_corrupt() -> None:
    with pytest.raises(CorruptCheckpoint, match="unreadable body"):
        codec().decode_write(_resealed(header(), b"\xc1"))
    with pytest.raises(CorruptCheckpoint, match="unreadable body"):
        codec().decode_write(_resealed(header(), msgspec.msgpack.encode([1, 2])))
    broken = seal_envelope(frame_head(WRITE_MAGIC, 1, b"\x93\xc1\xc1\xc1", 4096), b"")
    with pytest.raises(CorruptCheckpoint, match="unreadable header"):
        codec().decode_write(_stored(broken))


def test_a_write_that_would_decompress_or_decode_to_too_much_is_refused() -> None:
    bomb = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(["update", "x" * 5000]))
    with pytest.raises(CorruptCheckpoint, match="max_state_size"):
        codec(max_state_size=1000).decode_write(_resealed(header(compression="zstd"), bomb))
    nested = msgspec.msgpack.encode(["update", [[]] * 100_000])
    with pytest.raises(CorruptCheckpoint, match="pending write"):
        codec(max_decoded_size=1_000_000).decode_write(_resealed(header(), nested))


def test_encryption_of_writes() -> None:
    stored = codec(encryption=ring()).encode_write("t", CHECKPOINT, write({"n": 1}))
    with pytest.raises(CodecError, match="no key ring"):
        codec().decode_write(stored)
    with pytest.raises(CodecError, match="does not hold"):
        codec(encryption=ring("k2", k2=K2)).decode_write(stored)
    plain = codec().encode_write("t", CHECKPOINT, write({"n": 1}))
    with pytest.raises(CodecError, match="not encrypted"):
        codec(encryption=ring()).decode_write(plain)
    assert codec(encryption=ring(), allow_unencrypted=True).decode_write(plain).value == {"n": 1}
    tampered = bytearray(stored.data[:-8])
    tampered[-20] ^= 0x01  # in the ciphertext; the checksum is made to match again
    forged = bytes(tampered) + struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(tampered)))
    with pytest.raises(CorruptCheckpoint, match="authentication"):
        codec(encryption=ring()).decode_write(dataclasses.replace(stored, data=forged))


def test_reseal_write_moves_a_write_to_the_primary_key() -> None:
    old = codec(encryption=ring()).encode_write("t", CHECKPOINT, write({"n": 1}))
    both = ring("k2", k1=K1, k2=K2)
    new = codec(encryption=both).reseal_write(old)
    assert codec(encryption=both).key_id_of_write(old) == "k1"
    assert codec(encryption=both).key_id_of_write(new) == "k2"
    assert codec(encryption=ring("k2", k2=K2)).decode_write(new).value == {"n": 1}
    with pytest.raises(TypeError, match="key ring"):
        codec().reseal_write(old)


def test_writes_that_cannot_be_stored() -> None:
    with pytest.raises(CodecError, match="cannot encode the write of task 'web'"):
        codec().encode_write("t", CHECKPOINT, write({"x": object()}))
    with pytest.raises(CodecError, match="SecretStr"):
        codec().encode_write("t", CHECKPOINT, write({"x": pydantic.SecretStr("s")}))
    kept = codec(encryption=ring()).encode_write(
        "t", CHECKPOINT, write({"x": pydantic.SecretStr("s")})
    )
    assert codec(encryption=ring()).decode_write(kept).value == {"x": "s"}
    with pytest.raises(CodecError, match="max_state_size"):
        codec(max_state_size=100).encode_write("t", CHECKPOINT, write("x" * 200))
    with pytest.raises(CodecError, match="max_payload_size"):
        codec(max_payload_size=50, compression=None).encode_write("t", CHECKPOINT, write("x" * 60))
    with pytest.raises(TypeError, match="TaskWrite"):
        codec().encode_write("t", CHECKPOINT, {"task_id": "web"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trace"):
        codec().encode_write("", CHECKPOINT, write())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task_id": ""}, "task id"),
        ({"task_id": "x\n"}, "printable"),
        ({"index": 2**63}, "64-bit"),
        ({"index": True}, "64-bit"),
        ({"channel": ""}, "channel"),
        ({"channel": "c" * 257}, "channel"),
        ({"task_path": 3}, "task_path"),
    ],
)
def test_a_task_write_checks_its_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write(**fields)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_decode_to_a_write_or_a_store_error(data: bytes, framed: bool) -> None:
    if framed:  # well framed, so that the damage reaches the header and the body
        data = seal_write(header(), data, None)
    with contextlib.suppress(CorruptCheckpoint, CodecError):  # and nothing else
        codec().decode_write(_stored(data))
