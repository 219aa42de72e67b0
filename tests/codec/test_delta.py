"""Checkpoints stored as deltas, at the codec level: fields, diffs, chains and forgeries.

A delta is only as good as its base: every test here reads a delta back from the
frame of the checkpoint it names, and checks that a wrong base, a damaged chain or
a forged delta is refused with a flowpoint error, never read as some other state.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

import msgspec
import pytest
import xxhash
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CodecError,
    CorruptCheckpoint,
    GraphMismatch,
    SerdeCheckpointCodec,
)
from flowpoint.blob import MAX_METADATA_KEYS
from flowpoint.codec import KeyRing
from flowpoint.codec._delta import (
    Delta,
    Frame,
    Rebuild,
    diff_fields,
    fields_hash,
    join_fields,
    split_fields,
    state_size,
)
from flowpoint.codec._envelope import MAGIC
from flowpoint.codec._serde import DELTA_BASE_KEY
from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id

GRAPH = 0x5EED5EED5EED5EED
TRACE = TraceId("delta-trace")
EXAMPLES = int(os.environ.get("FLOWPOINT_FUZZ_EXAMPLES", "100"))
KEYS = KeyRing({"k1": bytes([1]) * 32}, primary="k1")
# Random letters: zstd cannot shrink them to nothing, so a delta pays against the whole.
TEXT = "".join(random.Random(7).choices("abcdefghijklmnopqrstuvwxyz0123456789 ", k=2048))
BIG = 2**30

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_header_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")


# -- helpers ---------------------------------------------------------------------------------


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic model
        return value.model_dump()
    raise TypeError(f"cannot encode {type(value).__name__}")


def enc(value: Any) -> bytes:
    return msgspec.msgpack.encode(value, enc_hook=_dump)


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(enc(value))


def fields_of(state: Any) -> dict[str, bytes]:
    fields = split_fields(enc(state))
    assert fields is not None
    return fields


def apply_delta(base: Frame, delta: Delta, max_state_size: int) -> dict[str, bytes]:
    """``base`` changed by ``delta`` alone, as the codec reads a chain of one delta."""
    rebuild = Rebuild(base, max_state_size)
    rebuild.apply(delta)
    return rebuild.finish(delta.state_hash)


def frame_of(state: Any, step: int = 0, checkpoint_id: CheckpointId | None = None) -> Frame:
    """A keyframe of ``state``, as the codec would make it."""
    return Frame(
        checkpoint_id or new_checkpoint_id(),
        TRACE,
        step,
        fields_of(state),
        chain_start=step,
        chain_length=0,
        chain_size=0,
        keyframe_size=len(enc(state)),
    )


def round_trip(old: Any, new: Any) -> Delta:
    """Diff ``old`` to ``new``, apply the delta (through its encoding) and check the result."""
    base = frame_of(old)
    fields = fields_of(new)
    elements: dict[str, list[msgspec.Raw]] = {}
    delta = diff_fields(base, fields, elements)
    # The delta travels encoded: decode it as the codec would.
    sent = msgspec.msgpack.decode(enc(delta), type=Delta)
    rebuilt = apply_delta(frame_of(old, checkpoint_id=base.checkpoint_id), sent, BIG)
    assert list(rebuilt.items()) == list(fields.items())
    assert join_fields(rebuilt) == enc(new)
    back = msgspec.msgpack.decode(join_fields(rebuilt))
    assert back == new
    assert list(back) == list(new)
    for key, split in elements.items():  # arrays split while diffing are the new ones
        assert [enc(x) for x in msgspec.msgpack.decode(fields[key])] == [bytes(e) for e in split]
    return delta


def chat(turn: int, text: str = TEXT) -> dict[str, Any]:
    """A chat state: a history growing by one message per turn, a constant text, the turn."""
    messages = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"message {n} " * 3}
        for n in range(turn)
    ]
    return {"messages": messages, "text": text, "turn": turn}


class Saved(NamedTuple):
    checkpoint: Checkpoint[Any]
    blob: CheckpointBlob
    frame: Frame | None


def save_chain(
    codec: SerdeCheckpointCodec[Any],
    states: Sequence[Any],
    *,
    metadata: dict[str, Any] | None = None,
    trace: TraceId = TRACE,
) -> list[Saved]:
    """Encode ``states`` as the steps of one trace, each on the frame of the one before."""
    saved: list[Saved] = []
    parent: Checkpoint[Any] | None = None
    frame: Frame | None = None
    for state in states:
        checkpoint = (
            Checkpoint.first("n", state, metadata=metadata)
            if parent is None
            else parent.child("n", state, metadata=metadata)
        )
        blob, frame = codec.encode(checkpoint, GRAPH, trace, frame)
        saved.append(Saved(checkpoint, blob, frame))
        parent = checkpoint
    return saved


def frame_facts(frame: Frame) -> tuple[Any, ...]:
    return (
        frame.checkpoint_id,
        frame.trace_id,
        frame.step,
        list(frame.fields.items()),
        frame.chain_start,
        frame.chain_length,
        frame.chain_size,
        frame.keyframe_size,
    )


def read_chain(codec: SerdeCheckpointCodec[Any], saved: Sequence[Saved]) -> list[Frame]:
    """Decode every blob from the frame decoded before it; check state, checkpoint and frame."""
    frames: list[Frame] = []
    previous: Frame | None = None
    for item in saved:
        base = codec.base_of(item.blob)
        if base is not None:
            assert previous is not None
            assert base == (previous.checkpoint_id, previous.chain_start)
        checkpoint, frame = codec.decode(item.blob, GRAPH, previous if base else None)
        assert checkpoint == item.checkpoint
        assert type(checkpoint.state) is type(item.checkpoint.state)
        assert enc(checkpoint.state) == enc(item.checkpoint.state)  # key order, all the way
        assert DELTA_BASE_KEY not in checkpoint.metadata
        assert item.frame is not None
        assert frame is not None
        assert frame_facts(frame) == frame_facts(item.frame)
        read = codec.read_frame(item.blob, previous if base else None)
        assert read is not None
        assert frame_facts(read) == frame_facts(frame)
        frames.append(frame)
        previous = frame
    return frames


def head_and_body(blob: CheckpointBlob) -> tuple[list[Any], bytes]:
    (length,) = struct.unpack_from(">I", blob.data, 5)
    header: list[Any] = msgspec.msgpack.decode(blob.data[9 : 9 + length])
    return header, blob.data[9 + length : -8]


def reseal(
    blob: CheckpointBlob, *, header: list[Any] | None = None, body: bytes | None = None
) -> CheckpointBlob:
    """``blob`` with its envelope header or body replaced, behind a valid checksum."""
    old_header, old_body = head_and_body(blob)
    encoded = _header_encoder.encode(old_header if header is None else header)
    framed = (
        MAGIC
        + b"\x01"
        + struct.pack(">I", len(encoded))
        + encoded
        + (old_body if body is None else body)
    )
    return dataclasses.replace(
        blob, data=framed + struct.pack(">Q", xxhash.xxh3_64_intdigest(framed))
    )


def is_delta(blob: CheckpointBlob) -> bool:
    return bool(head_and_body(blob)[0][0] == "delta")


def plain_codec(**options: Any) -> SerdeCheckpointCodec[Any]:
    return SerdeCheckpointCodec(dict, **options)


# -- delta.py: fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        enc(1),
        enc("text"),
        enc([1, 2, 3]),
        enc(None),
        enc({1: "int key"}),
        enc({b"bytes": 1}),
        enc({"a": 1, 2: "mixed"}),
        b"",
        b"\xc1",
        b"\x81\xa1a",  # a map cut short
        enc({"a": 1}) + b"\x00",  # trailing bytes
        b"\x81\xa1a" + b"\x91" * 200_000 + b"\x00",  # nested past any recursion limit
    ],
    ids=lambda data: data[:12].hex() or "empty",
)
def test_split_fields_refuses_anything_but_a_map_of_str_keys(data: bytes) -> None:
    assert split_fields(data) is None


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"a": 1},
        {"nested": {"x": [1, {"y": None}]}, "b": b"\x00\xff", "f": 1.5, "s": "é" * 40},
        {f"key{n}": n for n in range(20)},  # a map16 header
        {"z": 1, "a": 2, "m": 3},  # order is kept, not sorted
    ],
)
def test_join_fields_undoes_split_fields(state: dict[str, Any]) -> None:
    data = enc(state)
    fields = split_fields(data)
    assert fields is not None
    assert split_fields(memoryview(data)) == fields
    assert list(fields) == list(state)
    assert fields == {key: enc(value) for key, value in state.items()}
    joined = join_fields(fields)
    assert joined == data
    back = msgspec.msgpack.decode(joined)
    assert back == state
    assert list(back) == list(state)
    assert state_size(fields) == len(data)
    assert fields_hash(fields) == xxhash.xxh3_64_intdigest(data)


def test_fields_hash_depends_on_order_keys_and_values() -> None:
    one = fields_of({"a": 1, "b": 2})
    assert fields_hash(one) != fields_hash(fields_of({"b": 2, "a": 1}))
    assert fields_hash(one) != fields_hash(fields_of({"a": 1, "c": 2}))
    assert fields_hash(one) != fields_hash(fields_of({"a": 1, "b": 3}))


# -- delta.py: diff and apply ------------------------------------------------------------------

SCALARS = {"count": 1, "note": "hello", "flag": True, "nested": {"x": 1, "y": [1, 2]}}


def test_an_unchanged_state_is_an_empty_delta() -> None:
    delta = round_trip(SCALARS, dict(SCALARS))
    assert (delta.keys, delta.replaced, delta.appended, delta.patched) == (None, {}, {}, {})


def test_a_replaced_scalar() -> None:
    delta = round_trip(SCALARS, {**SCALARS, "count": 2})
    assert set(delta.replaced) == {"count"}
    assert delta.keys is None


def test_a_new_field() -> None:
    delta = round_trip(SCALARS, {**SCALARS, "added": [1, 2]})
    assert set(delta.replaced) == {"added"}
    assert delta.keys == [*SCALARS, "added"]


def test_a_removed_field() -> None:
    new = {key: value for key, value in SCALARS.items() if key != "note"}
    delta = round_trip(SCALARS, new)
    assert delta.replaced == {}
    assert delta.keys == list(new)


def test_every_field_removed() -> None:
    delta = round_trip(SCALARS, {})
    assert delta.keys == []


@pytest.mark.parametrize(
    "order",
    [["nested", "flag", "note", "count"], ["note", "count", "flag", "nested"]],
)
def test_reordered_fields_keep_their_new_order(order: list[str]) -> None:
    new = {key: SCALARS[key] for key in order}
    delta = round_trip(SCALARS, new)
    assert delta.keys == order
    assert delta.replaced == {}


def test_reordered_and_changed_fields() -> None:
    new = {"flag": False, "count": 1, "nested": {"y": [1, 2], "x": 1}, "other": "x"}
    round_trip(SCALARS, new)


def test_nested_dicts_change_as_whole_fields() -> None:
    old = {"a": {"b": {"c": [1, 2, {"d": "e"}]}, "f": 1}, "g": 2}
    new = {"a": {"b": {"c": [1, 2, {"d": "E"}]}, "f": 1}, "g": 2}
    delta = round_trip(old, new)
    assert set(delta.replaced) == {"a"}


@pytest.mark.parametrize(
    ("old_length", "new_length"),
    [
        (0, 1),
        (3, 10),
        (10, 15),
        (15, 16),  # fixarray to array16
        (14, 40),
        (100, 101),
        (65_530, 65_535),
        (65_535, 65_536),  # array16 to array32
        (65_000, 70_000),
        (70_000, 70_001),
    ],
)
def test_appends_to_lists_of_every_header_size(old_length: int, new_length: int) -> None:
    old = {"before": 1, "items": list(range(old_length)), "after": "x"}
    new = {"before": 1, "items": list(range(new_length)), "after": "x"}
    delta = round_trip(old, new)
    assert set(delta.appended) == {"items"}
    count, tail = delta.appended["items"]
    assert count == new_length - old_length
    assert tail == b"".join(enc(n) for n in range(old_length, new_length))


def test_appended_dicts() -> None:
    old = chat(3)
    new = chat(4)
    delta = round_trip(old, new)
    assert set(delta.appended) == {"messages"}
    assert set(delta.replaced) == {"turn"}


@pytest.mark.parametrize("length", [20, 300, 70_000])
def test_elements_changed_in_place_in_a_long_list_are_patched(length: int) -> None:
    items: list[dict[str, Any]] = [{"id": n, "done": False} for n in range(length)]
    old = {"items": items, "n": 1}
    changed = [dict(item) for item in items]
    changed[0]["done"] = True
    changed[length // 2]["done"] = True
    changed[-1] = {"id": -1}
    new = {"items": changed, "n": 1}
    delta = round_trip(old, new)
    assert set(delta.patched) == {"items"}
    patched_length, changes = delta.patched["items"]
    assert patched_length == length
    assert sorted(changes) == [0, length // 2, length - 1]
    assert len(enc(delta)) < 200


def test_a_long_list_changed_in_place_and_appended_to() -> None:
    old = {"items": list(range(100))}
    new = {"items": [*range(99), -1, 100, 101]}
    delta = round_trip(old, new)
    assert delta.patched["items"][0] == 102
    assert sorted(delta.patched["items"][1]) == [99, 100, 101]


@pytest.mark.parametrize(("old_length", "new_length"), [(40, 30), (70_000, 65_535), (20, 16)])
def test_a_long_list_truncated_is_patched_to_its_length(old_length: int, new_length: int) -> None:
    delta = round_trip({"items": list(range(old_length))}, {"items": list(range(new_length))})
    assert delta.patched == {"items": (new_length, {})}


@pytest.mark.parametrize(("old_length", "new_length"), [(40, 3), (5, 0), (16, 15)])
def test_a_list_truncated_short_is_replaced(old_length: int, new_length: int) -> None:
    delta = round_trip({"items": list(range(old_length))}, {"items": list(range(new_length))})
    assert set(delta.replaced) == {"items"}


def test_a_list_changed_everywhere_is_replaced() -> None:
    delta = round_trip({"items": list(range(40))}, {"items": list(range(1, 41))})
    assert set(delta.replaced) == {"items"}


@pytest.mark.parametrize("replacement", ["text", 5, None, {"0": 1}, b"bytes"])
def test_a_list_replaced_by_a_non_list(replacement: Any) -> None:
    for length in (3, 40):
        delta = round_trip({"items": list(range(length)), "k": 1}, {"items": replacement, "k": 1})
        assert set(delta.replaced) == {"items"}
        round_trip({"items": replacement, "k": 1}, {"items": list(range(length)), "k": 1})


def test_a_frame_splits_array_fields_only() -> None:
    frame = frame_of({"items": list(range(20)), "n": 3})
    assert [bytes(e) for e in frame.elements("items") or []] == [enc(n) for n in range(20)]
    assert frame.elements("n") is None
    assert frame.size == len(enc({"items": list(range(20)), "n": 3}))


def test_apply_delta_refuses_a_state_over_the_limit() -> None:
    base = frame_of({"a": "x" * 100})
    delta = diff_fields(base, fields_of({"a": "y" * 200}), {})
    with pytest.raises(ValueError, match="over 150"):
        apply_delta(base, delta, 150)
    assert apply_delta(base, delta, delta.state_size) == fields_of({"a": "y" * 200})


def test_apply_delta_refuses_another_base() -> None:
    delta = diff_fields(frame_of({"a": 1, "b": "x"}), fields_of({"a": 2, "b": "x"}), {})
    with pytest.raises(ValueError, match="wrong base"):
        apply_delta(frame_of({"a": 1, "b": "y"}), delta, BIG)


# -- the codec: chains -----------------------------------------------------------------------


def test_a_chat_is_stored_as_deltas_after_its_first_step() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(turn) for turn in range(8)], metadata={"who": "me"})
    first = saved[0]
    assert codec.base_of(first.blob) is None
    assert DELTA_BASE_KEY not in first.blob.metadata
    for previous, item in itertools.pairwise(saved):
        assert previous.frame is not None
        assert item.frame is not None
        assert is_delta(item.blob)
        assert item.blob.metadata == {
            "who": "me",
            DELTA_BASE_KEY: str(previous.checkpoint.checkpoint_id),
        }
        assert codec.base_of(item.blob) == (previous.checkpoint.checkpoint_id, 0)
        assert (item.frame.chain_start, item.frame.chain_length) == (0, item.checkpoint.step)
        # A message's worth of bytes, not the 2 KB text again.
        assert len(item.blob.data) < len(first.blob.data) / 3
    read_chain(codec, saved)


def test_a_delta_without_its_base_points_to_the_typed_store() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(0), chat(1)])
    with pytest.raises(CodecError, match="TypedCheckpointStore"):
        codec.deserialize(saved[1].blob, GRAPH)
    with pytest.raises(CodecError, match="TypedCheckpointStore"):
        codec.decode(saved[1].blob, GRAPH, None)
    with pytest.raises(CodecError, match="TypedCheckpointStore"):
        codec.read_frame(saved[1].blob, None)


def test_a_delta_read_on_the_frame_of_another_checkpoint_is_refused() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(turn) for turn in range(4)])
    delta = saved[2].blob
    other = save_chain(codec, [chat(0)], trace=TraceId("other"))[0].frame
    for wrong in (saved[0].frame, saved[2].frame, saved[3].frame, other):
        with pytest.raises(CodecError, match="TypedCheckpointStore"):
            codec.decode(delta, GRAPH, wrong)
        with pytest.raises(CodecError):
            codec.read_frame(delta, wrong)


def _impostor(
    frame: Frame, *, trace: TraceId = TRACE, step: int | None = None, state: Any = None
) -> Frame:
    """A frame claiming to be ``frame``'s checkpoint, with something else wrong."""
    return Frame(
        frame.checkpoint_id,
        trace,
        frame.step if step is None else step,
        frame.fields if state is None else fields_of(state),
        chain_start=frame.chain_start,
        chain_length=frame.chain_length,
        chain_size=frame.chain_size,
        keyframe_size=frame.keyframe_size,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": chat(1, text="Y" + TEXT[1:])}, "wrong base"),  # same size, other bytes
        ({"state": chat(0)}, "delta"),
        ({"state": {**chat(1), "extra": 1}}, "delta"),
        ({"state": {"text": TEXT, "messages": [], "turn": 1}}, "delta"),  # other order
        ({"trace": TraceId("elsewhere")}, "its base"),
        ({"step": 2}, "its base"),
        ({"step": 5}, "its base"),
    ],
)
def test_a_frame_impersonating_the_base_is_caught(change: dict[str, Any], message: str) -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(0), chat(1), chat(2)])
    base = saved[1].frame
    assert base is not None
    with pytest.raises(CorruptCheckpoint, match=message):
        codec.decode(saved[2].blob, GRAPH, _impostor(base, **change))


def test_graph_mismatch_is_raised_for_a_delta_given_its_base() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(0), chat(1)])
    with pytest.raises(GraphMismatch) as caught:
        codec.decode(saved[1].blob, GRAPH + 1, saved[0].frame)
    assert (caught.value.expected, caught.value.actual) == (GRAPH + 1, GRAPH)
    # Any graph is fine for tools that pass None.
    assert codec.decode(saved[1].blob, None, saved[0].frame)[0].state == chat(1)


def test_the_reserved_metadata_key_is_refused() -> None:
    codec = plain_codec()
    first = Checkpoint.first("n", chat(0))
    blob, frame = codec.encode(first, GRAPH, TRACE, None)
    forged = first.child("n", chat(1), metadata={DELTA_BASE_KEY: str(first.checkpoint_id)})
    with pytest.raises(ValueError, match="reserved"):
        codec.encode(forged, GRAPH, TRACE, frame)
    with pytest.raises(ValueError, match="reserved"):
        codec.encode(forged, GRAPH, TRACE, None)
    with pytest.raises(ValueError, match="reserved"):
        codec.serialize(Checkpoint.first("n", {}, metadata={DELTA_BASE_KEY: 1}), GRAPH, TRACE)
    assert codec.decode(blob, GRAPH, None)[0] == first


def test_metadata_with_no_room_for_the_base_id_is_stored_whole() -> None:
    codec = plain_codec()
    metadata = {f"k{n}": n for n in range(MAX_METADATA_KEYS)}
    saved = save_chain(codec, [chat(0), chat(1), chat(2)], metadata=metadata)
    for item in saved:
        assert codec.base_of(item.blob) is None
        assert item.blob.metadata == metadata
    read_chain(codec, saved)


def test_max_delta_chain_zero_never_writes_a_delta() -> None:
    codec = plain_codec(max_delta_chain=0)
    saved = save_chain(codec, [chat(turn) for turn in range(6)])
    for item in saved:
        assert codec.base_of(item.blob) is None
        assert not is_delta(item.blob)
        assert item.frame is not None
        assert (item.frame.chain_length, item.frame.chain_start) == (0, item.checkpoint.step)
    read_chain(codec, saved)


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_max_delta_chain_cuts_the_chain(limit: int) -> None:
    codec = plain_codec(max_delta_chain=limit, compression=None)
    saved = save_chain(codec, [chat(turn) for turn in range(14)])
    lengths = []
    for item in saved:
        assert item.frame is not None
        lengths.append(item.frame.chain_length)
        whole = item.frame.chain_length == 0
        assert (codec.base_of(item.blob) is None) == whole
        assert item.frame.chain_start == item.checkpoint.step - item.frame.chain_length
    assert lengths == [step % (limit + 1) for step in range(14)]
    read_chain(codec, saved)


def test_a_chain_is_cut_once_its_deltas_outweigh_twice_its_keyframe() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [chat(turn) for turn in range(60)])
    read_chain(codec, saved)
    cuts = 0
    keyframe_size, chain_size = len(saved[0].blob.data), 0
    for previous, item in itertools.pairwise(saved):
        assert previous.frame is not None
        assert item.frame is not None
        # What the delta body would be: the rule weighs it against the chain so far.
        body = len(enc(diff_fields(previous.frame, fields_of(item.checkpoint.state), {})))
        over = previous.frame.chain_size + body > 2 * previous.frame.keyframe_size
        if codec.base_of(item.blob) is None:
            cuts += 1
            assert over
            keyframe_size, chain_size = len(item.blob.data), 0
        else:
            assert not over
            chain_size += len(item.blob.data)
        assert (item.frame.keyframe_size, item.frame.chain_size) == (keyframe_size, chain_size)
    assert cuts >= 2  # far below the 64 deltas max_delta_chain allows


def test_json_never_writes_deltas() -> None:
    writer = plain_codec()
    base = save_chain(writer, [chat(0)])[0]
    codec = plain_codec(format="json")
    first = base.checkpoint.child("n", chat(1))
    blob, frame = codec.encode(first, GRAPH, TRACE, base.frame)
    assert frame is None
    assert codec.base_of(blob) is None
    assert head_and_body(blob)[0][0] == "json"
    saved = save_chain(codec, [chat(turn) for turn in range(4)])
    for item in saved:
        assert item.frame is None
        assert codec.base_of(item.blob) is None
        assert codec.decode(item.blob, GRAPH, None) == (item.checkpoint, None)


def test_a_json_codec_reads_a_chain_a_msgpack_codec_wrote() -> None:
    # Either codec reads either format: a JSON codec writes no deltas, but reads them.
    saved = save_chain(plain_codec(), [chat(0), chat(1)])
    reader = plain_codec(format="json")
    frame = reader.read_frame(saved[0].blob, None)
    assert frame is not None
    assert reader.decode(saved[1].blob, GRAPH, frame)[0] == saved[1].checkpoint


@pytest.mark.parametrize(
    ("state_type", "state"),
    [(list[str], [TEXT, "more"]), (dict[int, str], {0: TEXT, 1: "more"}), (str, TEXT)],
)
def test_states_that_cannot_be_split_are_stored_whole(state_type: Any, state: Any) -> None:
    base = save_chain(plain_codec(), [chat(0)])[0]
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type)
    checkpoint = base.checkpoint.child("n", state)
    blob, frame = codec.encode(checkpoint, GRAPH, TRACE, base.frame)
    assert frame is None
    assert codec.base_of(blob) is None
    assert codec.decode(blob, GRAPH, None) == (checkpoint, None)


def test_a_state_that_changes_completely_is_stored_whole() -> None:
    codec = plain_codec()
    other = "".join(reversed(TEXT))
    saved = save_chain(
        codec,
        [chat(5), chat(6, text=other), {"something": "else", "entirely": list(range(500))}],
    )
    for item in saved:
        assert codec.base_of(item.blob) is None
    read_chain(codec, saved)


def test_a_base_of_another_trace_or_a_later_step_is_not_used() -> None:
    codec = plain_codec()
    base = save_chain(codec, [chat(0), chat(1)])[1]
    assert base.frame is not None
    same = base.checkpoint.child("n", chat(2))
    blob, _ = codec.encode(same, GRAPH, TraceId("other"), base.frame)
    assert codec.base_of(blob) is None
    earlier = Checkpoint.first("n", chat(2))  # step 0, below the base's step 1
    blob, _ = codec.encode(earlier, GRAPH, TRACE, base.frame)
    assert codec.base_of(blob) is None
    blob, _ = codec.encode(same, GRAPH, TRACE, base.frame)
    assert codec.base_of(blob) == (base.checkpoint.checkpoint_id, 0)


@dataclasses.dataclass
class DataclassMessage:
    role: str
    content: str


@dataclasses.dataclass
class DataclassChat:
    messages: list[DataclassMessage]
    text: str
    turn: int


class StructMessage(msgspec.Struct):
    role: str
    content: str


class StructChat(msgspec.Struct):
    messages: list[StructMessage]
    text: str
    turn: int


def _typed_chats(kind: str) -> tuple[Any, Callable[[int], Any]]:
    message_type: Any
    chat_type: Any
    if kind == "dataclass":
        message_type, chat_type = DataclassMessage, DataclassChat
    elif kind == "struct":
        message_type, chat_type = StructMessage, StructChat
    else:
        pydantic = pytest.importorskip("pydantic")
        message_type = pydantic.create_model("Message", role=(str, ...), content=(str, ...))
        chat_type = pydantic.create_model(
            "Chat", messages=(list[message_type], ...), text=(str, ...), turn=(int, ...)
        )

    def make(turn: int) -> Any:
        state = chat(turn)
        messages = [message_type(**message) for message in state["messages"]]
        return chat_type(messages=messages, text=state["text"], turn=turn)

    return chat_type, make


@pytest.mark.parametrize("kind", ["dataclass", "struct", "pydantic"])
def test_typed_states_are_stored_as_deltas(kind: str) -> None:
    state_type, make = _typed_chats(kind)
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type)
    saved = save_chain(codec, [make(turn) for turn in range(6)])
    assert [codec.base_of(item.blob) is not None for item in saved] == [False] + [True] * 5
    read_chain(codec, saved)
    assert all(type(item.checkpoint.state) is state_type for item in saved)


def test_encrypted_compressed_deltas_round_trip() -> None:
    codec = plain_codec(encryption=KEYS, compression="zstd")
    # Each step appends 600 bytes that compress well: the delta bodies are compressed too.
    states = [{**chat(turn), "log": [TEXT[:100] * 6] * turn} for turn in range(6)]
    saved = save_chain(codec, states)
    assert all(codec.base_of(item.blob) is not None for item in saved[1:])
    for item in saved:
        header, _ = head_and_body(item.blob)
        assert (header[1], header[2]) == ("zstd", "k1")
        assert TEXT[:100].encode() not in item.blob.data
    read_chain(codec, saved)
    with pytest.raises(CodecError, match="no key ring"):
        plain_codec().decode(saved[1].blob, GRAPH, saved[0].frame)


@pytest.mark.parametrize("encrypted", [True, False])
def test_a_delta_moved_under_another_base_fails(encrypted: bool) -> None:
    codec = plain_codec(encryption=KEYS if encrypted else None, compression=None)
    saved = save_chain(codec, [chat(turn) for turn in range(4)])
    header, _ = head_and_body(saved[3].blob)
    assert header[0] == "delta"
    for target in (saved[0], saved[1]):
        assert target.frame is not None
        header[11] = target.checkpoint.checkpoint_id.bytes
        moved = reseal(saved[3].blob, header=header)
        assert codec.base_of(moved) == (target.checkpoint.checkpoint_id, 0)
        message = "authentication" if encrypted else "delta"
        with pytest.raises(CorruptCheckpoint, match=message):
            codec.decode(moved, GRAPH, target.frame)
        with pytest.raises(CorruptCheckpoint, match=message):
            codec.read_frame(moved, target.frame)


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": None}, {"encryption": KEYS}],
    ids=["zstd", "plain", "encrypted"],
)
def test_rebase_makes_a_delta_whole_with_the_same_header(options: dict[str, Any]) -> None:
    codec = plain_codec(**options)
    saved = save_chain(codec, [chat(turn) for turn in range(4)], metadata={"who": "me", "n": 2})
    frames = read_chain(codec, saved)
    for index in range(1, len(saved)):
        item, frame = saved[index], frames[index]
        whole = codec.rebase(item.blob, frame)
        for field in dataclasses.fields(CheckpointBlob):
            if field.name != "data":
                assert getattr(whole, field.name) == getattr(item.blob, field.name), field.name
        # The header is the delta's: its metadata still names the old base (decode hides it).
        assert whole.metadata[DELTA_BASE_KEY] == str(saved[index - 1].checkpoint.checkpoint_id)
        header, _ = head_and_body(whole)
        assert header[0] == "msgpack"
        assert header[11:] == [None, None, None]  # no base, no chain, no cursor
        assert header[2] == ("k1" if options.get("encryption") else None)
        assert codec.base_of(whole) is None
        checkpoint, rebuilt = codec.decode(whole, GRAPH, None)
        assert checkpoint == item.checkpoint
        assert DELTA_BASE_KEY not in checkpoint.metadata
        assert rebuilt is not None
        assert list(rebuilt.fields.items()) == list(frame.fields.items())
        assert (rebuilt.chain_length, rebuilt.chain_start) == (0, item.checkpoint.step)
    with pytest.raises(ValueError, match="is not"):
        codec.rebase(saved[2].blob, frames[1])


# -- hostile deltas --------------------------------------------------------------------------

HOSTILE_BASE = {
    "count": 1,
    "items": list(range(20)),
    "note": "hello",
    "nested": {"x": 1},
    "text": TEXT,
}
HOSTILE_KEYS = list(HOSTILE_BASE)


class Hostile(NamedTuple):
    codec: SerdeCheckpointCodec[Any]
    base: Frame
    delta: CheckpointBlob
    state: dict[str, Any]


@functools.cache
def hostile() -> Hostile:
    """A keyframe and a real delta on it, plain and uncompressed: its body is what we forge."""
    codec = plain_codec(compression=None)
    next_state = {**HOSTILE_BASE, "count": 2}
    saved = save_chain(codec, [HOSTILE_BASE, next_state])
    base = saved[0].frame
    assert base is not None
    assert is_delta(saved[1].blob)
    return Hostile(codec, base, saved[1].blob, next_state)


def forge(body: Delta | bytes) -> CheckpointBlob:
    return reseal(hostile().delta, body=body if isinstance(body, bytes) else enc(body))


def claims(state: dict[str, Any]) -> dict[str, int]:
    """The size and hash a delta rebuilding ``state`` would carry."""
    fields = fields_of(state)
    return {"state_size": state_size(fields), "state_hash": fields_hash(fields)}


BASE_CLAIMS = claims(HOSTILE_BASE)


def test_a_forged_delta_that_fits_is_read() -> None:
    """The forging works: a hand-made, consistent delta decodes to its state."""
    h = hostile()
    assert h.codec.decode(h.delta, GRAPH, h.base)[0].state == h.state
    target = {**HOSTILE_BASE, "items": [*range(20), 20, 21], "note": "bye"}
    size, digest = claims(target).values()
    delta = Delta(
        state_size=size,
        state_hash=digest,
        replaced={"note": raw("bye")},
        appended={"items": (2, enc(20) + enc(21))},
    )
    assert h.codec.decode(forge(delta), GRAPH, h.base)[0].state == target
    # No change at all: just the size and the hash.
    assert (
        h.codec.decode(forge(enc([*BASE_CLAIMS.values()])), GRAPH, h.base)[0].state == HOSTILE_BASE
    )


def _patched(length: int, changes: dict[int, Any]) -> dict[str, Any]:
    return {"patched": {"items": (length, {index: raw(value) for index, value in changes.items()})}}


HOSTILE_DELTAS: list[tuple[str, dict[str, Any], str]] = [
    ("append to an int", {"appended": {"count": (1, enc(2))}}, "not an array"),
    ("append to a str", {"appended": {"note": (1, enc(2))}}, "not an array"),
    ("append to a map", {"appended": {"nested": (1, enc(2))}}, "not an array"),
    (
        "append to a missing field",
        {"keys": [*HOSTILE_KEYS, "ghost"], "appended": {"ghost": (1, enc(2))}},
        "lacks",
    ),
    ("append a negative count", {"appended": {"items": (-1, b"")}}, "appends -1"),
    ("append past the array limit", {"appended": {"items": (2**32 - 20, b"")}}, "appends"),
    ("patch an int", {"patched": {"count": (1, {0: raw(1)})}}, "not an array"),
    (
        "patch a missing field",
        {"keys": [*HOSTILE_KEYS, "ghost"], "patched": {"ghost": (1, {0: raw(1)})}},
        "lacks",
    ),
    ("patch past the end", _patched(20, {20: 1}), "patches element 20 of 20"),
    ("patch a negative index", _patched(20, {-1: 1}), "patches element -1"),
    ("patch with a hole", _patched(22, {0: 1, 21: 1}), "hole"),
    # Indices are applied in order, so this fills 20 and 21: then the claimed size is wrong.
    ("patch out of order", _patched(22, {21: 1, 20: 1}), "the delta says"),
    ("patch past base and changes", _patched(25, {20: 1}), "impossible length"),
    ("patch a negative length", _patched(-1, {}), "impossible length"),
    ("patch short of its length", _patched(21, {0: 1}), "short of its length"),
    ("a field named twice", {"keys": ["count", *HOSTILE_KEYS]}, "twice"),
    (
        "a field changed twice",
        {"replaced": {"items": raw([])}, "appended": {"items": (1, enc(20))}},
        "twice",
    ),
    (
        "a field patched and appended",
        {"appended": {"items": (1, enc(20))}, **_patched(20, {0: 1})},
        "twice",
    ),
    ("a field in neither", {"keys": [*HOSTILE_KEYS, "ghost"]}, "neither"),
    (
        "a changed field left out",
        {"keys": [k for k in HOSTILE_KEYS if k != "note"], "replaced": {"note": raw("x")}},
        "leaves out",
    ),
    ("a new field left out", {"replaced": {"ghost": raw("x")}}, "leaves out"),
    ("a state too big", {"state_size": 2**40}, "would be"),
    ("a state of 2**64-1 bytes", {"state_size": 2**64 - 1}, "would be"),
    ("a negative state size", {"state_size": -1}, "would be"),
    ("a wrong hash", {"state_hash": BASE_CLAIMS["state_hash"] ^ 1}, "hash differs"),
    ("a wrong size", {"state_size": BASE_CLAIMS["state_size"] + 1}, "the delta says"),
    ("a wrong size, too", {"state_size": BASE_CLAIMS["state_size"] - 1}, "the delta says"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [(change, message) for _, change, message in HOSTILE_DELTAS],
    ids=[name for name, _, _ in HOSTILE_DELTAS],
)
def test_hostile_deltas_are_corrupt(change: dict[str, Any], message: str) -> None:
    h = hostile()
    delta = Delta(**{**BASE_CLAIMS, **change})
    blob = forge(delta)
    with pytest.raises(CorruptCheckpoint, match=message):
        h.codec.decode(blob, GRAPH, h.base)
    with pytest.raises(CorruptCheckpoint, match=message):
        h.codec.read_frame(blob, h.base)
    # The base's frame is not changed by a failed read.
    assert list(h.base.fields.items()) == list(fields_of(HOSTILE_BASE).items())
    assert [bytes(e) for e in h.base.elements("items") or []] == [enc(n) for n in range(20)]


def test_a_small_reader_refuses_a_delta_growing_past_its_limit() -> None:
    h = hostile()
    reader = plain_codec(max_state_size=1000)
    with pytest.raises(CorruptCheckpoint, match="over 1000"):
        reader.decode(h.delta, GRAPH, h.base)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        b"\x00",
        b"\x92\x01",  # too few fields
        enc([1, 2, None, {}, {}, {}, "extra"]),  # an unknown field
        enc({"state_size": 1, "state_hash": 2}),  # a map, not an array
        enc([1, "not a hash"]),
        enc([1, 2, "not a list"]),
        enc([1, 2, None, {"k": 5}]),  # well formed, but nothing fits
        enc([1, 2, None, {1: 5}]),  # field names are str
        enc([1, 2, None, {}, {"items": [1]}]),  # appended is (count, bytes)
        enc([1, 2, None, {}, {"items": [1, "str"]}]),
        enc([1, 2, None, {}, {}, {"items": [1, {"0": 1}]}]),
        enc([1, 2, None, {}, {}, {"items": [1]}]),
        b"\x92\xcf" + b"\xff" * 8 + b"\x02",  # a state of 2**64-1 bytes
        enc([1.5, 2]),
        b"\x96" + b"\x91" * 100_000,  # nested past any recursion limit
        enc(HOSTILE_BASE),  # a whole state under a delta's header
    ],
    ids=lambda body: body[:10].hex() or "empty",
)
def test_garbage_delta_bodies_are_corrupt(body: bytes) -> None:
    h = hostile()
    with pytest.raises(CorruptCheckpoint, match="delta"):
        h.codec.decode(forge(body), GRAPH, h.base)


def test_a_count_that_disagrees_with_its_tail_is_never_read_as_a_state() -> None:
    """Elements the count does not match shift the map; the hash cannot catch a forger."""
    h = hostile()
    for count, tail in ((1, enc(20) + enc(21)), (2, enc(20)), (0, enc("x") + enc(1)), (3, b"")):
        items = b"\xdc" + (20 + count).to_bytes(2, "big") + enc(list(range(20)))[3:] + tail
        rebuilt = {**fields_of(HOSTILE_BASE), "items": items}
        delta = Delta(
            state_size=state_size(rebuilt),
            state_hash=fields_hash(rebuilt),
            appended={"items": (count, tail)},
        )
        with pytest.raises((CorruptCheckpoint, CodecError)):
            h.codec.decode(forge(delta), GRAPH, h.base)


def _forged_header(blob: CheckpointBlob, changes: dict[int, Any]) -> CheckpointBlob:
    header, _ = head_and_body(blob)
    for index, value in changes.items():
        header[index] = value
    return reseal(blob, header=header)


@pytest.mark.parametrize(
    ("which", "changes", "message"),
    [
        ("delta", {11: None}, "without its base"),
        ("delta", {12: None}, "without its base"),
        ("delta", {11: None, 12: None}, "without its base"),
        ("delta", {12: 1}, "chain starts at step 1"),  # chain_start == step
        ("delta", {12: 2}, "chain starts at step 2"),
        ("delta", {12: -1}, "chain starts at step -1"),
        ("delta", {11: "self"}, "chain starts"),  # its own base
        ("whole", {11: UUID(int=5).bytes, 12: 0}, "names a delta base"),
        ("whole", {11: UUID(int=5).bytes}, "names a delta base"),
        ("whole", {12: 0}, "names a delta base"),
        ("whole", {0: "delta"}, "without its base"),
        ("first", {0: "delta", 11: UUID(int=5).bytes, 12: 0}, "chain starts at step 0"),
    ],
)
def test_forged_chain_headers_are_corrupt(
    which: str, changes: dict[int, Any], message: str
) -> None:
    codec = plain_codec(max_delta_chain=1, compression=None)
    saved = save_chain(codec, [chat(0), chat(1), chat(2)])
    blob = {"first": saved[0], "delta": saved[1], "whole": saved[2]}[which].blob
    assert is_delta(blob) == (which == "delta")
    if changes.get(11) == "self":
        changes = {11: blob.checkpoint_id.bytes}
    forged = _forged_header(blob, changes)
    base = saved[0].frame if which == "delta" else saved[1].frame
    with pytest.raises(CorruptCheckpoint, match=message):
        codec.base_of(forged)
    with pytest.raises(CorruptCheckpoint, match=message):
        codec.decode(forged, GRAPH, base)
    with pytest.raises(CorruptCheckpoint, match=message):
        codec.read_frame(forged, base)


def test_a_whole_body_labelled_a_delta_is_corrupt() -> None:
    codec = plain_codec(max_delta_chain=1, compression=None)
    saved = save_chain(codec, [chat(0), chat(1), chat(2)])
    base = saved[1].frame
    assert base is not None
    forged = _forged_header(
        saved[2].blob, {0: "delta", 11: base.checkpoint_id.bytes, 12: base.chain_start}
    )
    with pytest.raises(CorruptCheckpoint, match="delta"):
        codec.decode(forged, GRAPH, base)


def test_a_delta_body_labelled_whole_does_not_fit_the_state() -> None:
    codec = plain_codec(compression=None)
    saved = save_chain(codec, [chat(0), chat(1)])
    forged = _forged_header(saved[1].blob, {0: "msgpack", 11: None, 12: None})
    assert codec.base_of(forged) is None
    with pytest.raises(CodecError, match="does not fit"):
        codec.decode(forged, GRAPH, saved[0].frame)
    # Read as Any it is just an array: no frame, and never a delta applied.
    anything: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(Any, compression=None)
    checkpoint, frame = anything.decode(forged, GRAPH, None)
    assert isinstance(checkpoint.state, list)
    assert frame is None


# -- property: random chains round-trip --------------------------------------------------------

FIELD_NAMES = ["a", "b", "c", "d", "e"]
scalars = st.integers(-1000, 1000) | st.text(max_size=8) | st.none() | st.booleans()
elements = st.integers(-50, 50) | st.fixed_dictionaries(
    {"id": st.integers(0, 99), "t": st.text(max_size=5)}
)
element_lists = st.lists(elements, max_size=40)
values = scalars | element_lists | st.dictionaries(st.sampled_from("xyz"), scalars, max_size=3)
names = st.sampled_from(FIELD_NAMES)
# "log" starts as a long list (16 to 40 elements): edits to it take the patch path.
list_names = st.sampled_from([*FIELD_NAMES, "log", "log"])
operations = st.one_of(
    st.tuples(st.just("set"), names, values),
    st.tuples(st.just("append"), list_names, st.lists(elements, min_size=1, max_size=20)),
    st.tuples(st.just("truncate"), list_names, st.integers(0, 40)),
    st.tuples(st.just("edit"), list_names, st.tuples(st.integers(0, 60), elements)),
    st.tuples(st.just("delete"), names, st.none()),
    st.tuples(st.just("to_end"), names | st.sampled_from(["pad", "log"]), st.none()),
    st.tuples(st.just("reverse"), st.just(""), st.none()),
)
steps = st.lists(st.lists(operations, min_size=1, max_size=3), min_size=4, max_size=14)
logs = st.lists(elements, min_size=16, max_size=40)


def apply_operations(state: dict[str, Any], ops: list[tuple[str, str, Any]]) -> dict[str, Any]:
    state = {key: list(value) if isinstance(value, list) else value for key, value in state.items()}
    for kind, name, argument in ops:
        current = state.get(name)
        if kind == "set":
            state[name] = list(argument) if isinstance(argument, list) else argument
        elif kind == "append":
            state[name] = (current if isinstance(current, list) else []) + argument
        elif kind == "truncate" and isinstance(current, list):
            del current[argument:]
        elif kind == "edit" and isinstance(current, list) and current:
            index, element = argument
            current[index % len(current)] = element
        elif kind == "delete":
            state.pop(name, None)
        elif kind == "to_end" and name in state:
            state[name] = state.pop(name)
        elif kind == "reverse":
            state = dict(reversed(state.items()))
    return state


def chain_states(
    first: dict[str, Any], log: list[Any], ops: list[list[tuple[str, str, Any]]]
) -> list[dict[str, Any]]:
    """The states of a chain: ``first`` with a constant pad and a long log, then ``ops``."""
    # The pad keeps every state above the size under which no delta is tried.
    states = [{"pad": TEXT[:1100], "log": list(log), **first}]
    for step_ops in ops:
        states.append(apply_operations(states[-1], step_ops))
    return states


CODECS = [
    plain_codec(compression=None),
    plain_codec(),
    plain_codec(encryption=KEYS, max_delta_chain=4),
]


@given(
    first=st.dictionaries(names, values, max_size=5),
    log=logs,
    ops=steps,
    codec=st.sampled_from(CODECS),
)
@fuzz
def test_random_chains_round_trip_exactly(
    first: dict[str, Any],
    log: list[Any],
    ops: list[list[tuple[str, str, Any]]],
    codec: SerdeCheckpointCodec[Any],
) -> None:
    states = chain_states(first, log, ops)
    saved = save_chain(codec, states)
    frames = read_chain(codec, saved)  # states equal, byte for byte (so in the same order)
    for state, frame in zip(states, frames, strict=True):
        assert join_fields(frame.fields) == enc(state)
    deltas = [head_and_body(item.blob)[1] for item in saved if is_delta(item.blob)]
    event(f"deltas: {'some' if deltas else 'none'}")
    if codec.compression is None and codec.encryption is None:
        for body in deltas:
            delta = msgspec.msgpack.decode(body, type=Delta)
            for kind in ("keys", "replaced", "appended", "patched"):
                if getattr(delta, kind):
                    event(f"a delta with {kind}")


@given(first=st.dictionaries(names, values, max_size=5), log=logs, ops=steps)
@fuzz
def test_random_diffs_apply_exactly(
    first: dict[str, Any], log: list[Any], ops: list[list[tuple[str, str, Any]]]
) -> None:
    states = chain_states(first, log, ops)
    for old, new in itertools.pairwise(states):
        delta = round_trip(old, new)
        if delta.patched:
            event("patched")


def test_states_under_a_kilobyte_are_stored_whole_without_a_frame() -> None:
    codec = plain_codec()
    saved = save_chain(codec, [{"n": n, "text": TEXT[:900]} for n in range(4)])
    assert all(item.frame is None and not is_delta(item.blob) for item in saved)
    grown = save_chain(codec, [{"n": n, "text": TEXT[:1100]} for n in range(4)])
    assert [is_delta(item.blob) for item in grown] == [False, True, True, True]
