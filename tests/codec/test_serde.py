"""The stock codec: exact types back, and only flowpoint errors for bad bytes."""

from __future__ import annotations

import dataclasses
import struct
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import pydantic
import pytest
import xxhash

from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CodecError,
    CorruptCheckpoint,
    GraphMismatch,
    KeyRing,
    SerdeCheckpointCodec,
)
from flowpoint.codec import _schema
from flowpoint.codec._envelope import MAGIC
from tests.states import DataclassState, PydanticState, StructState, samples

GRAPH = 0x1122334455667788


def encode(state: Any, state_type: Any = dict, **options: Any) -> CheckpointBlob:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type, **options)
    return codec.serialize(Checkpoint.first("n", state), GRAPH, "t")


def reframe(
    blob: CheckpointBlob,
    *,
    version: int | None = None,
    header: bytes | None = None,
    body: bytes | None = None,
) -> CheckpointBlob:
    """Rebuild ``blob.data`` with parts replaced and a valid checksum."""
    data = blob.data
    _, old_version, header_length = struct.unpack_from(">4sBI", data)
    old_header = data[9 : 9 + header_length]
    old_body = data[9 + header_length : -8]
    new_header = old_header if header is None else header
    framed = (
        struct.pack(">4sBI", MAGIC, old_version if version is None else version, len(new_header))
        + new_header
        + (old_body if body is None else body)
    )
    return dataclasses.replace(
        blob, data=framed + struct.pack(">Q", xxhash.xxh3_64_intdigest(framed))
    )


def test_data_is_self_describing() -> None:
    blob = encode({"a": 1}, format="json")
    assert blob.data.startswith(MAGIC + b"\x01")
    assert b'{"a":1}' in blob.data  # a JSON body is readable
    assert b"json" in blob.data


def test_either_codec_reads_either_format() -> None:
    written = encode({"a": [1, 2]}, format="json")
    reader: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(dict, format="msgpack")
    assert reader.deserialize(written, GRAPH).state == {"a": [1, 2]}


def test_graph_mismatch_comes_before_any_state_is_decoded() -> None:
    # A body that would fail to decode as DataclassState: the graph check wins.
    blob = encode({"not": "a dataclass"})
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(DataclassState)
    with pytest.raises(GraphMismatch) as caught:
        codec.deserialize(blob, 0x1)
    assert caught.value.expected == 0x1
    assert caught.value.actual == GRAPH
    with pytest.raises(CodecError, match="does not fit"):
        codec.deserialize(blob, GRAPH)


def test_intact_data_of_another_type_is_a_codec_error() -> None:
    _, state = samples()["struct"]
    blob = encode(state, StructState)
    with pytest.raises(CodecError):
        SerdeCheckpointCodec(PydanticState).deserialize(blob, GRAPH)
    with pytest.raises(CodecError):
        SerdeCheckpointCodec(list[int]).deserialize(blob, GRAPH)


def test_a_state_of_the_wrong_class_is_refused_on_save() -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(DataclassState)
    with pytest.raises(CodecError, match="this codec stores DataclassState"):
        codec.serialize(Checkpoint.first("n", {"run_id": "x"}), GRAPH, "t")


class Opaque:
    pass


@pytest.mark.parametrize(
    "state",
    [
        {"handle": Opaque()},
        {"big": 2**70},
        {"secret": pydantic.SecretStr("hunter2")},
        {"set": {1, 2}} | {"fn": print},
    ],
)
def test_unencodable_states_are_codec_errors(state: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        encode(state)


def test_secrets_are_never_written_in_clear() -> None:
    class Login(pydantic.BaseModel):
        user: str
        password: pydantic.SecretStr

    with pytest.raises(CodecError, match="clear text"):
        encode(Login(user="u", password=pydantic.SecretStr("hunter2")), Login)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_json_refuses_non_finite_floats_instead_of_writing_null(value: float) -> None:
    with pytest.raises(CodecError, match="JSON cannot represent"):
        encode({"x": [1, {"y": value}], "z": None}, format="json")
    # MessagePack holds them.
    blob = encode({"x": value})
    back = SerdeCheckpointCodec().deserialize(blob, GRAPH).state["x"]
    assert back == value or (back != back and value != value)


def test_nulls_without_non_finite_floats_are_fine_in_json() -> None:
    blob = encode({"x": None, "y": [None, 1.5]}, format="json")
    assert SerdeCheckpointCodec().deserialize(blob, GRAPH).state == {"x": None, "y": [None, 1.5]}


def test_unknown_format_version() -> None:
    blob = reframe(encode({"a": 1}), version=2)
    with pytest.raises(CorruptCheckpoint, match="format version 2"):
        SerdeCheckpointCodec().deserialize(blob, GRAPH)


def test_a_header_of_the_wrong_shape_is_corrupt() -> None:
    blob = reframe(encode({"a": 1}), header=msgspec.msgpack.encode(["json", None]))
    with pytest.raises(CorruptCheckpoint, match="envelope header"):
        SerdeCheckpointCodec().deserialize(blob, GRAPH)


def test_a_well_framed_but_unreadable_body_is_corrupt() -> None:
    blob = reframe(encode({"a": 1}), body=b"\xc1\xc1\xc1")
    with pytest.raises(CorruptCheckpoint, match="unreadable state"):
        SerdeCheckpointCodec().deserialize(blob, GRAPH)


def test_a_body_format_this_codec_does_not_know_is_a_codec_error() -> None:
    blob = encode({"a": 1})
    header = msgspec.msgpack.decode(blob.data[9 : 9 + struct.unpack_from(">I", blob.data, 5)[0]])
    header[0] = "cbor"
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    with pytest.raises(CodecError, match="'cbor' body"):
        SerdeCheckpointCodec().deserialize(reframe(blob, header=encoder.encode(header)), GRAPH)


@pytest.mark.parametrize(
    ("index", "value", "error", "message"),
    [
        (1, "lz4", CodecError, "compressed with 'lz4'"),
        (1, "zstd", CorruptCheckpoint, "zstd body"),
        (2, "k1", CodecError, "encrypted with key 'k1', and this codec has no key ring"),
    ],
)
def test_compressed_or_encrypted_data_is_refused_clearly(
    index: int, value: str, error: type[Exception], message: str
) -> None:
    blob = encode({"a": 1})
    header = msgspec.msgpack.decode(blob.data[9 : 9 + struct.unpack_from(">I", blob.data, 5)[0]])
    header[index] = value
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    with pytest.raises(error, match=message):
        SerdeCheckpointCodec().deserialize(reframe(blob, header=encoder.encode(header)), GRAPH)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_id", "other"),
        ("step", 9),
        ("graph_hash", GRAPH + 1),
        ("current_node", "elsewhere"),
        ("parent_id", None),
        ("metadata", {"k": "changed"}),
        ("created_at", datetime(2020, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_store_header_that_disagrees_with_the_payload_is_corrupt(field: str, value: Any) -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()
    parent = Checkpoint.first("n", {})
    blob = codec.serialize(parent.child("m", {"a": 1}, metadata={"k": "v"}), GRAPH, "t")
    with pytest.raises(CorruptCheckpoint, match=f"{field} is"):
        codec.deserialize(dataclasses.replace(blob, **{field: value}), GRAPH)


def test_bad_arguments_are_refused() -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()
    checkpoint = Checkpoint.first("n", {})
    with pytest.raises(ValueError, match="format must be one of"):
        SerdeCheckpointCodec(dict, format="yaml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="graph_hash"):
        codec.serialize(checkpoint, -1, "t")
    with pytest.raises(ValueError, match="graph_hash"):
        codec.serialize(checkpoint, 2**64, "t")
    with pytest.raises(ValueError, match="trace id"):
        codec.serialize(checkpoint, GRAPH, "")
    with pytest.raises(TypeError):
        codec.serialize({"state": 1}, GRAPH, "t")  # type: ignore[arg-type]


class Agent:
    """A state holding a live client that must stay out of the checkpoint."""

    def __init__(self, history: list[str], client: object) -> None:
        self.history = history
        self.client = client

    def __flowpoint_snapshot__(self) -> list[str]:
        return self.history

    @classmethod
    def __flowpoint_restore__(cls, data: list[str]) -> Agent:
        return cls(data, client="reconnected")


def test_a_state_can_persist_a_projection_only() -> None:
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(Agent)
    blob = codec.serialize(Checkpoint.first("n", Agent(["hi"], client=object())), GRAPH, "t")
    back = codec.deserialize(blob, GRAPH).state
    assert isinstance(back, Agent)
    assert (back.history, back.client) == (["hi"], "reconnected")
    # The snapshot's annotation types the stored data.
    wrong = SerdeCheckpointCodec(dict).serialize(Checkpoint.first("n", {"a": 1}), GRAPH, "t")
    with pytest.raises(CodecError):
        codec.deserialize(wrong, GRAPH)


def test_a_restore_hook_that_fails_is_a_codec_error() -> None:
    class Fussy(Agent):
        @classmethod
        def __flowpoint_restore__(cls, data: list[str]) -> Agent:
            raise RuntimeError("no")

    blob = SerdeCheckpointCodec(Agent).serialize(
        Checkpoint.first("n", Agent(["x"], None)), GRAPH, "t"
    )
    with pytest.raises(CodecError, match="refused"):
        SerdeCheckpointCodec(Fussy).deserialize(blob, GRAPH)


def test_pydantic_fields_msgspec_does_not_know_are_left_to_pydantic() -> None:
    class Link(pydantic.BaseModel):
        url: pydantic.HttpUrl
        tags: frozenset[str]

    state = Link(url="https://example.org/x", tags=frozenset({"a"}))  # type: ignore[arg-type]
    for body_format in ("msgpack", "json"):
        blob = encode(state, Link, format=body_format)
        assert SerdeCheckpointCodec(Link).deserialize(blob, GRAPH).state == state


def test_the_codec_module_is_split_by_concern() -> None:
    import flowpoint.codec._compression as compression
    import flowpoint.codec._schema as schema
    import flowpoint.codec._serde as serde

    # What other modules import from serde stays there.
    for name in (
        "DELTA_BASE_KEY",
        "DEFAULT_MAX_PAYLOAD_SIZE",
        "DEFAULT_MAX_STATE_SIZE",
        "DEFAULT_MAX_DELTA_CHAIN",
        "COMPRESSION_THRESHOLD",
        "SerdeCheckpointCodec",
    ):
        assert name in serde.__all__
        assert hasattr(serde, name)
    # The state schema and zstd live in their own modules; serde is the codec class.
    assert serde.COMPRESSION_THRESHOLD is compression.COMPRESSION_THRESHOLD
    assert "zstandard" not in vars(serde)
    assert not any(name in vars(serde) for name in ("_strict_hook", "_validate_pydantic"))
    assert callable(schema.StateSchema)
    assert callable(compression.Zstd)


def test_codecs_of_one_state_type_share_its_schema() -> None:
    # Made once per type: opening a store per request does not build it again.
    assert SerdeCheckpointCodec(dict)._schema is SerdeCheckpointCodec(dict)._schema
    assert SerdeCheckpointCodec(dict)._schema is not SerdeCheckpointCodec(DataclassState)._schema
    secret = SerdeCheckpointCodec(dict, encryption=KeyRing({"k": bytes(32)}, primary="k"))
    assert secret._schema is not SerdeCheckpointCodec(dict)._schema
    # A type that cannot be a dict key still gets its schema, a new one each time.
    unhashable = Annotated[dict[str, Any], {"note": "metadata msgspec ignores"}]
    assert SerdeCheckpointCodec(unhashable)._schema is not SerdeCheckpointCodec(unhashable)._schema


def test_raw_fields_appended_to_are_checked_by_what_they_gained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The LangGraph adapter's states: each field one value already encoded.
    codec = SerdeCheckpointCodec(dict[str, msgspec.Raw], compression=None)
    enc = msgspec.msgpack.encode
    history = ["x" * 200 for _ in range(20)]
    first = Checkpoint.first("n", {"messages": msgspec.Raw(enc(history))})
    _, frame = codec.encode(first, 1, "t", None)
    assert frame is not None
    checked: list[int] = []

    class Counted:
        def __init__(self, decoder: Any) -> None:
            self.decoder = decoder

        def decode(self, body: Any) -> Any:
            checked.append(len(body))
            return self.decoder.decode(body)

    # What a raw-fields state's save decodes to check it is well-formed MessagePack.
    monkeypatch.setattr(_schema, "_raw_value", Counted(_schema._raw_value))
    monkeypatch.setattr(_schema, "_raw_values", Counted(_schema._raw_values))
    longer = first.child("n", {"messages": msgspec.Raw(enc([*history, "y" * 200]))})
    delta, _ = codec.encode(longer, 1, "t", frame)
    assert codec.base_of(delta) is not None
    assert checked
    assert max(checked) < 300  # the new element, not the 4 KB history
    loaded, _ = codec.decode(delta, 1, frame)
    assert msgspec.msgpack.decode(loaded.state["messages"]) == [*history, "y" * 200]
    # An array header that claims one more element than the bytes after it hold, or
    # one element too many after it: refused at save, never stored.
    body = enc([*history, "y" * 200])
    for bad in (
        b"\xdc\x00\x16" + body[3:],  # 22 claimed, 21 there
        b"\xdc\x00\x14" + body[3:],  # 20 claimed, 21 there
    ):
        broken = first.child("n", {"messages": msgspec.Raw(bad)})
        with pytest.raises(CodecError):
            codec.encode(broken, 1, "t", frame)
