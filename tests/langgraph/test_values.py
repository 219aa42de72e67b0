"""Values as tagged MessagePack: what round-trips, what is refused when saved, and what a
forged payload can and cannot make a load do."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import os
import uuid
from collections import deque
from typing import Any, NamedTuple

import ormsgpack
import pydantic
import pytest
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.types import Command, Interrupt, Send

from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.langgraph._types import TypeRegistry, registry_name
from flowpoint.langgraph._values import TAG, Tagged, ValueCodec


class Color(enum.Enum):
    RED = "r"


@dataclasses.dataclass
class Point:
    x: int
    tags: list[str]


class Pair(NamedTuple):
    left: int
    right: int


class Invoice(pydantic.BaseModel):
    number: int
    due: dt.date


class Refuses(pydantic.BaseModel):
    value: int = pydantic.Field(gt=0)


class Stranger:
    pass


@pytest.fixture
def codec() -> ValueCodec:
    return ValueCodec(TypeRegistry([Color, Point, Pair, Invoice, Refuses]))


def _round_trip(codec: ValueCodec, value: Any) -> Any:
    encoded = codec.encode(value)
    return codec.decode(encoded.data, None, tagged=encoded.tagged)


ROUND_TRIPS: list[Any] = [
    None,
    True,
    -(2**63),
    2**64 - 1,
    2**70,
    -(2**90),
    1.5,
    float("inf"),
    "text",
    "lone \ud800 surrogate",
    b"\x00bytes",
    [1, [2, "3"]],
    {"a": {"b": [1]}},
    {1: "int key", (1, 2): "tuple key", None: 0},
    {TAG: "app.Evil", "$value": "a dict of the application's own"},
    {"s": "holds the \xa5$type bytes"},
    {1, 2},
    frozenset({3}),
    deque([1, 2]),
    dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(2026, 1, 2),
    dt.date(2026, 1, 2),
    dt.time(1, 2, 3, 4),
    dt.timedelta(days=1, seconds=2, microseconds=3),
    uuid.UUID("01a219cb-c63a-7371-abb7-04e9e3769072"),
    decimal.Decimal("1.250"),
    HumanMessage("hi", id="1"),
    AIMessage("", tool_calls=[{"name": "f", "args": {"a": 1}, "id": "c1"}]),
    AIMessageChunk("part"),
    ToolMessage("42", tool_call_id="c1"),
    RemoveMessage(id="1"),
    Document(page_content="doc", metadata={"source": "x"}),
    Send("work", {"x": 1}),
    Interrupt("approve?", id="i1"),
    Command(resume={"answer": 1}, goto="next"),
    _DeltaSnapshot([1, 2]),
    Color.RED,
    Point(1, ["a"]),
    Pair(1, 2),
    Invoice(number=7, due=dt.date(2026, 5, 1)),
    {"messages": [HumanMessage("a"), AIMessage("b")], "when": dt.date(2026, 1, 1)},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda value: type(value).__name__)
def test_values_come_back_as_they_were(codec: ValueCodec, value: Any) -> None:
    back = _round_trip(codec, value)
    assert back == value
    assert type(back) is type(value)


def test_values_read_without_knowing_whether_they_hold_tags(codec: ValueCodec) -> None:
    value = {"messages": [HumanMessage("a")], "plain": {"b": 1}}
    assert codec.decode(codec.encode(value).data, None) == value
    # A map of the application's own with a "$type" key, stored plain (no tag beside it),
    # reads back as it is when the reader is told it is plain.
    own = {TAG: "app.Evil", "$value": 1}
    assert codec.encode(own) == (ormsgpack.packb(own), False)


def test_as_langgraphs_serializer_tuples_are_lists_and_errors_their_repr(
    codec: ValueCodec,
) -> None:
    assert _round_trip(codec, (1, (2, 3))) == [1, [2, 3]]
    assert _round_trip(codec, ValueError("boom")) == "ValueError('boom')"
    assert _round_trip(codec, bytearray(b"x")) == b"x"


def test_plain_data_is_stored_as_plain_msgpack(codec: ValueCodec) -> None:
    value = {"messages": [{"role": "user", "content": "hi"}], "turn": 3}
    assert codec.encode(value) == (ormsgpack.packb(value), False)
    assert codec.encode({"k": [HumanMessage("x")]}).tagged


class Unlisted(NamedTuple):
    a: int


@dataclasses.dataclass
class UnlistedPoint:
    x: int


class UnlistedModel(pydantic.BaseModel):
    x: int


@pytest.mark.parametrize(
    "value",
    [Stranger(), {"deep": [Stranger()]}, Unlisted(1), UnlistedPoint(1), UnlistedModel(x=1), Pair],
    ids=lambda value: type(value).__name__,
)
def test_a_class_not_on_the_allowlist_is_refused_when_saved(codec: ValueCodec, value: Any) -> None:
    with pytest.raises(CodecError, match="allowed_types"):
        codec.encode(value)


def test_classes_are_registered_by_name() -> None:
    registry = TypeRegistry({"billing.Invoice": Invoice})
    assert "billing.Invoice" in registry.names
    assert "HumanMessage" in registry.names
    codec = ValueCodec(registry)
    data = codec.encode(Invoice(number=1, due=dt.date(2026, 1, 1))).data
    assert b"billing.Invoice" in data
    assert codec.decode(data, None) == Invoice(number=1, due=dt.date(2026, 1, 1))
    with pytest.raises(TypeError, match="with a dot"):
        TypeRegistry({"Invoice": Invoice})
    with pytest.raises(TypeError, match="registered twice"):
        TypeRegistry({"app.X": Invoice, "app.Y": Invoice})
    with pytest.raises(TypeError, match="is taken"):
        TypeRegistry({registry_name(Invoice): Point}).with_classes([Invoice])
    with pytest.raises(TypeError, match="not a pydantic model"):
        TypeRegistry([Stranger])
    with pytest.raises(TypeError, match="takes classes"):
        TypeRegistry(["app.Invoice"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "forged",
    [
        {TAG: "os.system", "$value": "touch /tmp/flowpoint-forged"},
        {TAG: "builtins.eval", "$value": "1"},
        {TAG: "subprocess.Popen", "$value": {"args": ["true"]}},
        [1, {TAG: "posix.system", "$value": "true"}],
        {TAG: "HumanMessage"},
        {TAG: 1, "$value": 2},
        {TAG: "dict", "$value": [[{"unhashable": 1}, 2]]},
        {TAG: "dict", "$value": "not pairs"},
    ],
)
def test_a_forged_payload_is_refused_and_calls_nothing(
    codec: ValueCodec, forged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("stored data called a function")

    monkeypatch.setattr(os, "system", never)
    with pytest.raises(CorruptCheckpoint):
        codec.decode(ormsgpack.packb(forged), None)
    with pytest.raises(CorruptCheckpoint):
        codec.decode(ormsgpack.packb(forged), None, tagged=True)


def test_stored_data_a_registered_class_refuses_is_a_codec_error(codec: ValueCodec) -> None:
    forged = ormsgpack.packb({TAG: f"{Refuses.__module__}.Refuses", "$value": {"value": -1}})
    with pytest.raises(CodecError, match="does not fit"):
        codec.decode(forged, None)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa5$type", b"\xa5$typ", b"\xa2\xff\xfe"]
)
def test_damaged_bytes_are_corrupt(codec: ValueCodec, data: bytes) -> None:
    with pytest.raises(CorruptCheckpoint):
        codec.decode(data, None)


def test_depth_is_bounded_both_ways(codec: ValueCodec) -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = {"d": deep, 1: 2}  # the int key takes the slow, bounded path
    with pytest.raises(CodecError):
        codec.encode(deep)
    # ormsgpack refuses to build a value this deep: the bytes are written by hand.
    forged = b"\x91" * 50_000 + ormsgpack.packb({TAG: "set", "$value": []})
    with pytest.raises(CorruptCheckpoint):
        codec.decode(forged, None)


def test_a_tagged_value_given_as_data_is_stored_under_its_name(codec: ValueCodec) -> None:
    data = codec.encode([Tagged("app.Unknown", {"a": 1})]).data
    with pytest.raises(CorruptCheckpoint, match=r"app\.Unknown"):
        codec.decode(data, None)
    assert _round_trip(codec, Tagged("uuid", str(uuid.UUID(int=1)))) == uuid.UUID(int=1)
    with pytest.raises(CodecError):
        codec.encode(Tagged("dict", []))


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa5$type", b"\xa5$typ", b"\xa2\xff\xfe"]
)
@pytest.mark.parametrize("tagged", [None, set(), {"field"}])
def test_damaged_bytes_in_any_field_are_corrupt(
    codec: ValueCodec, data: bytes, tagged: set[str] | None
) -> None:
    fields = {"good": ormsgpack.packb([1, 2]), "field": data}
    with pytest.raises(CorruptCheckpoint):
        codec.decode_fields(fields, None, tagged, "skipped")


def test_fields_decode_as_each_would_alone(codec: ValueCodec) -> None:
    message = HumanMessage(content="hi", id="m-1")
    tagged = codec.encode([message])
    plain = codec.encode({"$type": "mine", "n": 1})  # a key of its own, not a tag
    assert tagged.tagged
    assert not plain.tagged
    fields = {"messages": tagged.data, "plain": plain.data, "$tagged": b"\xc1"}
    decoded = codec.decode_fields(fields, None, {"messages"}, "$tagged")
    assert decoded == {"messages": [message], "plain": {"$type": "mine", "n": 1}}
    # Unknown tagging (a checkpoint without $tagged): tags found are built.
    unknown = codec.decode_fields({"messages": tagged.data}, None, None, "$tagged")
    assert unknown == {"messages": [message]}
    # A field said to hold no tags is read as it is: the tag stays data.
    assert codec.decode_fields(fields, None, set(), "$tagged")["messages"][0][TAG]
