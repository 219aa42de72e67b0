"""Property tests: exact round trips, and only flowpoint errors for any bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from datetime import UTC, timedelta, timezone
from typing import Any

import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpoint import Checkpoint, CheckpointBlob, CheckpointStoreError, SerdeCheckpointCodec
from flowpoint.codec._envelope import MAGIC
from tests.states import (
    DataclassState,
    Level,
    Note,
    Priority,
    PydanticNote,
    PydanticState,
    StructNote,
    StructState,
    TypedDictNote,
    TypedDictState,
)

GRAPH = 0xC0FFEE
FORMATS = st.sampled_from(["msgpack", "json"])

text = st.text(max_size=30)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
aware = st.datetimes(timezones=zones)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=6)
floats = st.floats(allow_nan=False, allow_infinity=False)
small_lists = {"max_size": 4}

json_like: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | floats | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)

dataclass_states = st.builds(
    DataclassState,
    run_id=st.uuids(),
    priority=st.sampled_from(Priority),
    budget=decimals,
    notes=st.lists(
        st.builds(Note, written_at=aware, text=text, raw=st.binary(max_size=20)), **small_lists
    ),
    scores=st.dictionaries(text, floats, max_size=4),
    done=st.booleans(),
    parent=st.none() | text,
)
typeddict_states = st.builds(
    TypedDictState,
    run_id=st.uuids(),
    level=st.sampled_from(Level),
    notes=st.lists(st.builds(TypedDictNote, text=text, at=aware), **small_lists),
    blob=st.binary(max_size=40),
)
struct_states = st.builds(
    StructState,
    run_id=st.uuids(),
    priority=st.sampled_from(Priority),
    cost=decimals,
    notes=st.lists(
        st.builds(StructNote, text=text, at=st.datetimes() | aware, tags=st.tuples(text)),
        **small_lists,
    ),
    extra=st.dictionaries(text, st.integers(-(2**63), 2**63 - 1), max_size=4),
)
pydantic_notes = st.builds(PydanticNote, text=text, at=aware, raw=st.binary(max_size=20))
pydantic_states = st.builds(
    PydanticState,
    run_id=st.uuids(),
    priority=st.sampled_from(Priority),
    cost=decimals,
    notes=st.lists(pydantic_notes, **small_lists),
    nested=st.dictionaries(text, st.lists(pydantic_notes, max_size=2), max_size=2),
    Label=text,
    expires=st.none() | st.timedeltas(),
)
typed_states = st.one_of(
    st.tuples(st.just(DataclassState), dataclass_states),
    st.tuples(st.just(TypedDictState), typeddict_states),
    st.tuples(st.just(StructState), struct_states),
    st.tuples(st.just(PydanticState), pydantic_states),
    st.tuples(st.just(dict), st.dictionaries(text, json_like, max_size=6)),
)


@given(typed=typed_states, body_format=FORMATS, node=st.none() | text)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_supported_state_round_trips_exactly(
    typed: tuple[Any, Any], body_format: Any, node: str | None
) -> None:
    state_type, state = typed
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type, format=body_format)
    checkpoint = Checkpoint.first(node, state, metadata={"n": 1})
    back = codec.deserialize(codec.serialize(checkpoint, GRAPH, "trace"), GRAPH)
    assert back == checkpoint
    assert type(back.state) is type(state)


def _sample_blobs() -> list[CheckpointBlob]:
    blobs = []
    for body_format in ("msgpack", "json"):
        codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(dict, format=body_format)
        first = Checkpoint.first("plan", {"messages": ["hello", "world"], "turn": 2})
        blobs.append(codec.serialize(first, GRAPH, "t"))
        blobs.append(
            codec.serialize(first.child(None, {"x": [1.5, None]}, metadata={"m": True}), GRAPH, "t")
        )
    return blobs


SAMPLES = _sample_blobs()
READERS: list[SerdeCheckpointCodec[Any]] = [
    SerdeCheckpointCodec(dict),
    SerdeCheckpointCodec(DataclassState),
    SerdeCheckpointCodec(PydanticState),
]


def _decode_only_raises_flowpoint_errors(blob: CheckpointBlob) -> None:
    for reader in READERS:
        with contextlib.suppress(CheckpointStoreError):
            reader.deserialize(blob, GRAPH)


def _with_valid_checksum(data: bytes) -> bytes:
    """Re-seal mutated bytes so the mutation reaches the parsers behind the checksum."""
    body = data[:-8] if len(data) >= 8 else data
    return body + struct.pack(">Q", xxhash.xxh3_64_intdigest(body))


@given(data=st.binary(max_size=300))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_flowpoint_errors(data: bytes) -> None:
    for candidate in (data, MAGIC + b"\x01" + data, _with_valid_checksum(MAGIC + b"\x01" + data)):
        _decode_only_raises_flowpoint_errors(dataclasses.replace(SAMPLES[0], data=candidate))


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
)


@given(
    sample=st.sampled_from(SAMPLES),
    changes=st.lists(mutations, min_size=1, max_size=4),
    reseal=st.booleans(),
)
@settings(max_examples=1000)
def test_mutated_payloads_raise_only_flowpoint_errors(
    sample: CheckpointBlob, changes: list[tuple[str, int, int]], reseal: bool
) -> None:
    data = bytearray(sample.data)
    for kind, position, value in changes:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= value
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif kind == "delete":
            del data[at : at + value]
    mutated = bytes(data)
    if reseal:
        mutated = _with_valid_checksum(mutated)
    _decode_only_raises_flowpoint_errors(dataclasses.replace(sample, data=mutated))
