"""A state that does not fit its declared type is refused before anything is stored.

msgspec encodes whatever values a state holds; only decoding checks them against
the type. A mistyped state saved would make its trace impossible to load, so the
codec checks on save (only what changed, for a state stored as changes) and names
the field, and the path to the value inside it, that does not fit.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from typing import Any, NotRequired, TypedDict

import msgspec
import pydantic
import pytest

from flowpoint import (
    Checkpoint,
    CodecError,
    InMemoryBlobStore,
    SerdeCheckpointCodec,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.codec import _schema
from flowpoint.codec._serde import DELTA_BASE_KEY

GRAPH = 0x7E57


@dataclasses.dataclass
class Ticket:
    text: str
    category: str = ""
    approved: bool = False


@dataclasses.dataclass
class Message:
    role: str
    content: str


@dataclasses.dataclass
class Chat:
    messages: list[Message]
    profile: str
    scores: list[int] = dataclasses.field(default_factory=list)


class Row(TypedDict):
    id: int
    label: str
    note: NotRequired[str]


class Point(msgspec.Struct):
    x: float
    y: float


class Model(pydantic.BaseModel):
    name: str
    size: int


def test_a_mistyped_state_is_refused_and_nothing_is_saved() -> None:
    with SyncCheckpointStore.open("memory://", Ticket) as store:
        bad = Checkpoint.first("n", Ticket(text=1))  # type: ignore[arg-type]
        with pytest.raises(CodecError, match=r"Ticket.*Expected `str`, got `int` - at `\$\.text`"):
            store.save_with_trace("t", bad, GRAPH)
        assert store.history("t") == []
        good = Checkpoint.first("n", Ticket(text="hello"))
        store.save_with_trace("t", good, GRAPH)
        assert store.load_latest("t", GRAPH) == good


@pytest.mark.parametrize(
    ("state_type", "state", "path"),
    [
        (Chat, Chat([Message("user", 5)], "p"), r"\$\.messages\[0\]\.content"),  # type: ignore[arg-type]
        (Chat, Chat([], "p", scores=["x"]), r"\$\.scores\[0\]"),  # type: ignore[list-item]
        (Row, {"id": "1", "label": "a"}, r"\$\.id"),
        (Point, Point(x=1.0, y="up"), r"\$\.y"),  # type: ignore[arg-type]
        (Model, Model.model_construct(name="n", size="big"), r"size"),
        (list[int], [1, 2, "3"], r"\$\[2\]"),
        (dict[str, int], {"a": 1, "b": "2"}, r"\$\.b`"),
    ],
    ids=[
        "nested dataclass",
        "list in dataclass",
        "typeddict",
        "struct",
        "pydantic",
        "list",
        "dict",
    ],
)
@pytest.mark.parametrize("body_format", ["msgpack", "json"])
def test_each_kind_of_state_names_what_does_not_fit(
    state_type: Any, state: Any, path: str, body_format: str
) -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type, format=body_format)  # type: ignore[arg-type]
    # pydantic only warns when it serializes a field that does not fit (tests turn
    # warnings into errors): as in an application, it is the check that refuses.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CodecError, match=path):
            codec.serialize(Checkpoint.first("n", state), GRAPH, "t")


@pytest.mark.parametrize("body_format", ["msgpack", "json"])
def test_typeddict_keys_it_does_not_declare_are_refused_not_dropped(body_format: str) -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(Row, format=body_format)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="'extra', which Row does not declare"):
        codec.serialize(Checkpoint.first("n", {"id": 1, "label": "a", "extra": 2}), GRAPH, "t")
    with pytest.raises(CodecError, match="lacks the required key 'label'"):
        codec.serialize(Checkpoint.first("n", {"id": 1}), GRAPH, "t")
    fits = Checkpoint.first("n", {"id": 1, "label": "a", "note": "optional"})
    assert codec.deserialize(codec.serialize(fits, GRAPH, "t"), GRAPH) == fits
    assert codec.deserialize(
        codec.serialize(Checkpoint.first("n", {"id": 1, "label": "a"}), GRAPH, "t"), GRAPH
    ).state == {"id": 1, "label": "a"}


PROFILE = random.Random(3).randbytes(2000).hex()  # does not compress away: deltas pay


def chat(turns: int, profile: str = PROFILE) -> Chat:
    return Chat([Message("user", f"message {n} " * 20) for n in range(turns)], profile)


async def saved_chat(
    store: TypedCheckpointStore[Chat], turns: int, trace: str = "t"
) -> Checkpoint[Chat]:
    checkpoint = Checkpoint.first("n", chat(1))
    await store.save_with_trace(trace, checkpoint, GRAPH)
    for turn in range(2, turns + 1):
        checkpoint = checkpoint.child("n", chat(turn))
        await store.save_with_trace(trace, checkpoint, GRAPH)
    return checkpoint


async def test_a_state_stored_as_changes_is_checked_where_it_changed() -> None:
    store = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(Chat))
    latest = await saved_chat(store, 6)
    assert all(DELTA_BASE_KEY in i.metadata for i in (await store.history("t", 10))[:-1])
    # An appended element that does not fit: its index in the whole list is named.
    grown = chat(6)
    grown.messages.append(Message("user", 7))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"at `\$\.messages\[6\]\.content`"):
        await store.save_with_trace("t", latest.child("n", grown), GRAPH)
    # An element changed in place in a long list (stored as a patch).
    long = await saved_chat(store, 30, "long")
    patched = chat(30)
    patched.messages[20] = Message(3, "x")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"at `\$\.messages\[20\]\.role`"):
        await store.save_with_trace("long", long.child("n", patched), GRAPH)
    # A replaced field.
    replaced = Chat(chat(30).messages, 5)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"at `\$\.profile`"):
        await store.save_with_trace("long", long.child("n", replaced), GRAPH)
    assert (await store.history("long", 1))[0].checkpoint_id == long.checkpoint_id
    assert await store.load_latest("long", GRAPH) == long


async def test_only_what_changed_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = _schema.StateSchema._decode_checked

    def counted(self: Any, decoder: Any, body: Any, where: str, first_index: int = 0) -> None:
        checked.append(where)
        real(self, decoder, body, where, first_index)

    monkeypatch.setattr(_schema.StateSchema, "_decode_checked", counted)
    store = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(Chat))
    await saved_chat(store, 4)
    # The first save checks every field; each delta after it, the messages it appends.
    assert checked == ["$.messages", "$.profile", "$.scores"] + ["$.messages"] * 3
    # Plain dict states have nothing to check: nothing is decoded on save.
    checked.clear()
    plain = TypedCheckpointStore(InMemoryBlobStore())
    checkpoint = Checkpoint.first("n", {"messages": [], "profile": "p" * 2000})
    for turn in range(5):
        checkpoint = checkpoint.child("n", {**checkpoint.state, "messages": [turn] * turn})
        await plain.save_with_trace("t", checkpoint, GRAPH)
    assert checked == []


def test_a_plain_dict_state_with_keys_that_are_not_str_is_refused() -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()  # dict[str, Any]
    with pytest.raises(CodecError, match="Expected `str`"):
        codec.serialize(Checkpoint.first("n", {1: "one"}), GRAPH, "t")
    loose: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(dict)
    state = {1: "one"}
    saved = loose.serialize(Checkpoint.first("n", state), GRAPH, "t")
    assert loose.deserialize(saved, GRAPH).state == state


async def test_raw_fields_are_checked_where_they_grew(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[int] = []

    class Counted:
        def __init__(self, decoder: Any) -> None:
            self.decoder = decoder

        def decode(self, body: Any) -> Any:
            checked.append(len(memoryview(body)))
            return self.decoder.decode(body)

    # What a raw-fields state's save decodes to check it is well-formed MessagePack.
    monkeypatch.setattr(_schema, "_raw_value", Counted(_schema._raw_value))
    monkeypatch.setattr(_schema, "_raw_values", Counted(_schema._raw_values))
    store = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(dict[str, msgspec.Raw]))
    encode = msgspec.msgpack.encode
    messages = ["m" * 400 for _ in range(40)]
    checkpoint = Checkpoint.first("n", {"messages": msgspec.Raw(encode(messages))})
    await store.save_with_trace("t", checkpoint, GRAPH)
    checked.clear()
    # An element appended to a long array: the element is checked, not the array again.
    messages.append("new")
    checkpoint = checkpoint.child("n", {"messages": msgspec.Raw(encode(messages))})
    await store.save_with_trace("t", checkpoint, GRAPH)
    assert checked == [5]  # the array header and the new element, not the array
    # Appended bytes that are no MessagePack value are refused, the array kept as it was.
    broken = msgspec.Raw(encode([*messages, 1])[:-1] + b"\xc1")
    with pytest.raises(CodecError, match=r"\$\.messages"):
        await store.save_with_trace("t", checkpoint.child("n", {"messages": broken}), GRAPH)
    assert await store.load_latest("t", GRAPH) == checkpoint


@pytest.mark.parametrize(
    "bad", [b"\xc1", b"\x92\x01", b"\xa5abc", b"\x01\x02", b"", b"\x91" * 100_000 + b"\x01"]
)
async def test_raw_fields_that_are_not_one_msgpack_value_are_refused(bad: bytes) -> None:
    # Whole (the first save) or replaced in a delta: the field is named, nothing is stored.
    store = TypedCheckpointStore(InMemoryBlobStore(), SerdeCheckpointCodec(dict[str, msgspec.Raw]))
    encode = msgspec.msgpack.encode
    state = {"messages": msgspec.Raw(encode(["m" * 400] * 4)), "turn": msgspec.Raw(encode(1))}
    broken = {**state, "turn": msgspec.Raw(bad)}
    with pytest.raises(CodecError, match=r"\$\.turn"):
        await store.save_with_trace("t", Checkpoint.first("n", broken), GRAPH)
    assert await store.load_latest("t", GRAPH) is None
    first = Checkpoint.first("n", state)
    await store.save_with_trace("t", first, GRAPH)
    with pytest.raises(CodecError, match=r"\$\.turn"):
        await store.save_with_trace("t", first.child("n", broken), GRAPH)
    assert await store.load_latest("t", GRAPH) == first
