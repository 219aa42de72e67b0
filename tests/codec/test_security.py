"""Compression, encryption at rest, secrets and limits of the stock codec."""

from __future__ import annotations

import dataclasses
import doctest
import os
import pickle  # noqa: TID251 - only to check that a key ring refuses it
import struct
import threading
from typing import Any

import msgspec
import pydantic
import pytest
import zstandard

import flowpoint.codec._keys
from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CodecError,
    CorruptCheckpoint,
    GraphMismatch,
    InMemoryBlobStore,
    SerdeCheckpointCodec,
    SyncCheckpointStore,
    TypedCheckpointStore,
)
from flowpoint.blob import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_SIZE,
    MAX_METADATA_STRING_LENGTH,
    MAX_NODE_LENGTH,
    validate_metadata,
)
from flowpoint.codec import KeyRing
from flowpoint.codec._envelope import MAX_HEADER_LENGTH
from flowpoint.typed import RekeyResult
from tests.codec.test_serde import reframe

GRAPH = 0x0123456789ABCDEF
K1, K2, K3 = (bytes([n]) * 32 for n in (1, 2, 3))
TEXT = " ".join(f"word{n % 97} said the checkpoint" for n in range(200))


def ring(primary: str = "k1", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"k1": K1}, primary=primary)


def codec(**options: Any) -> SerdeCheckpointCodec[Any]:
    return SerdeCheckpointCodec(dict, **options)


def header_of(blob: CheckpointBlob) -> list[Any]:
    (length,) = struct.unpack_from(">I", blob.data, 5)
    header: list[Any] = msgspec.msgpack.decode(blob.data[9 : 9 + length])
    return header


def save(state: dict[str, Any], metadata: dict[str, Any] | None = None, **options: Any) -> Any:
    parent = Checkpoint.first("a", {})
    checkpoint = parent.child("b", state, metadata=metadata or {"who": "test"})
    return codec(**options).serialize(checkpoint, GRAPH, "trace-1"), checkpoint


# -- compression -----------------------------------------------------------------------


def test_large_states_are_compressed_by_default_and_small_ones_are_not() -> None:
    big, checkpoint = save({"text": TEXT})
    assert header_of(big)[1] == "zstd"
    assert len(big.data) < len(TEXT) / 3
    assert codec().deserialize(big, GRAPH) == checkpoint
    small, _ = save({"text": "short"})
    assert header_of(small)[1] is None


def test_bodies_from_256_bytes_are_compressed_when_that_pays() -> None:
    # A delta of one chat message is about this size: compressed, it stores a quarter less.
    words = " ".join(TEXT.split()[:60])
    assert 256 <= len(words) < 512
    blob, checkpoint = save({"text": words})
    assert header_of(blob)[1] == "zstd"
    assert codec().deserialize(blob, GRAPH) == checkpoint
    under, _ = save({"text": words[:200]})
    assert header_of(under)[1] is None


def test_compression_none_never_compresses_and_any_codec_reads_either() -> None:
    plain, checkpoint = save({"text": TEXT}, compression=None)
    assert header_of(plain)[1] is None
    assert TEXT.encode() in plain.data
    assert codec().deserialize(plain, GRAPH) == checkpoint
    squeezed, checkpoint = save({"text": TEXT})
    assert codec(compression=None).deserialize(squeezed, GRAPH) == checkpoint


def test_incompressible_states_are_stored_as_they_are() -> None:
    blob, checkpoint = save({"noise": os.urandom(4000)})
    assert header_of(blob)[1] is None
    assert codec().deserialize(blob, GRAPH) == checkpoint


def frame_without_size(payload: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=False).compress(payload)


def with_body(compression: str | None, body: bytes) -> CheckpointBlob:
    blob, _ = save({"text": "x"})
    header = header_of(blob)
    header[1] = compression
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    return reframe(blob, header=encoder.encode(header), body=body)


def test_frames_without_a_declared_size_are_read_within_the_limit() -> None:
    body = msgspec.msgpack.encode({"text": TEXT})
    blob = with_body("zstd", frame_without_size(body))
    assert codec().deserialize(blob, GRAPH).state == {"text": TEXT}
    with pytest.raises(CorruptCheckpoint, match="over max_state_size"):
        codec(max_state_size=1000).deserialize(blob, GRAPH)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not zstd",
        zstandard.ZstdCompressor().compress(b"x" * 1000)[:-4],
        zstandard.ZstdCompressor().compress(b"x" * 1000) + b"trailing",
        zstandard.ZstdCompressor().compress(b"x" * 1000) * 2,
        frame_without_size(b"x" * 1000)[:-2],
    ],
    ids=["empty", "garbage", "truncated", "trailing", "two-frames", "truncated-unsized"],
)
def test_broken_zstd_bodies_are_corrupt(body: bytes) -> None:
    with pytest.raises(CorruptCheckpoint, match="zstd body"):
        codec().deserialize(with_body("zstd", body), GRAPH)


def test_a_frame_claiming_more_than_the_limit_is_refused_before_decompressing() -> None:
    blob, _ = save({"text": TEXT})
    with pytest.raises(CorruptCheckpoint, match="would decompress to"):
        codec(max_state_size=len(TEXT) // 2).deserialize(blob, GRAPH)


def test_zstd_contexts_are_per_thread() -> None:
    shared = codec()
    blobs: list[CheckpointBlob] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                blob = shared.serialize(Checkpoint.first("n", {"text": TEXT}), GRAPH, "t")
                assert shared.deserialize(blob, GRAPH).state == {"text": TEXT}
                blobs.append(blob)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(blobs) == 80


def test_bad_compression_options_are_refused() -> None:
    with pytest.raises(ValueError, match="compression must be"):
        codec(compression="gzip")
    for level in (0.5, 20, -8, True):
        with pytest.raises(ValueError, match="compression_level"):
            codec(compression_level=level)


# -- encryption ------------------------------------------------------------------------


@pytest.mark.parametrize("body_format", ["msgpack", "json"])
@pytest.mark.parametrize("compression", ["zstd", None])
def test_encrypted_round_trip_hides_the_state(body_format: str, compression: str | None) -> None:
    keys = ring()
    blob, checkpoint = save(
        {"text": TEXT, "card": "4111-1111"},
        encryption=keys,
        format=body_format,
        compression=compression,
    )
    assert b"4111-1111" not in blob.data
    assert b"said the checkpoint" not in blob.data
    assert header_of(blob)[2] == "k1"
    assert codec(encryption=keys).deserialize(blob, GRAPH) == checkpoint


def test_each_save_uses_a_fresh_nonce() -> None:
    keys = ring()
    checkpoint = Checkpoint.first("n", {"a": 1})
    one = codec(encryption=keys).serialize(checkpoint, GRAPH, "t")
    two = codec(encryption=keys).serialize(checkpoint, GRAPH, "t")
    assert one.data != two.data


def test_no_key_ring_for_encrypted_data_names_the_key() -> None:
    blob, _ = save({"a": 1}, encryption=ring())
    with pytest.raises(CodecError, match="encrypted with key 'k1', and this codec has no key"):
        codec().deserialize(blob, GRAPH)


def test_a_key_the_ring_lacks_is_named() -> None:
    blob, _ = save({"a": 1}, encryption=ring())
    other = KeyRing({"k2": K2}, primary="k2")
    with pytest.raises(CodecError, match="key 'k1', which this key ring does not hold"):
        codec(encryption=other).deserialize(blob, GRAPH)


def test_a_wrong_key_under_the_right_id_fails_authentication() -> None:
    blob, _ = save({"a": 1}, encryption=ring())
    impostor = KeyRing({"k1": K2}, primary="k1")
    with pytest.raises(CorruptCheckpoint, match="key 'k1' failed: wrong key, or the data"):
        codec(encryption=impostor).deserialize(blob, GRAPH)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0, "json"),  # body format
        (1, None),  # compression
        (4, "trace-2"),  # trace
        (5, 7),  # step
        (6, None),  # parent
        (7, GRAPH + 1),  # graph hash
        (9, "elsewhere"),  # node
        (10, {"who": "mallory"}),  # metadata
    ],
)
def test_every_header_field_is_authenticated(index: int, value: Any) -> None:
    """A writer who changes the payload's header and the store's alike is still caught."""
    keys = ring()
    blob, _ = save({"text": TEXT}, encryption=keys)
    header = header_of(blob)
    header[index] = value
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    forged = reframe(blob, header=encoder.encode(header))
    names = {4: "trace_id", 5: "step", 7: "graph_hash", 9: "current_node", 10: "metadata"}
    if index in names:
        forged = dataclasses.replace(forged, **{names[index]: value})
    if index == 6:
        forged = dataclasses.replace(forged, parent_id=None)
    with pytest.raises(CorruptCheckpoint, match="wrong key, or the data was changed"):
        codec(encryption=keys).deserialize(forged, None)


def test_a_payload_moved_to_another_checkpoint_fails() -> None:
    keys = ring()
    blob, _ = save({"a": 1}, encryption=keys)
    other, _ = save({"a": 2}, encryption=keys)
    moved = dataclasses.replace(other, data=blob.data)
    with pytest.raises(CorruptCheckpoint):
        codec(encryption=keys).deserialize(moved, GRAPH)
    # Even with the envelope's own header rewritten to match, the tag does not.
    header = header_of(other)
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    body = blob.data[9 + struct.unpack_from(">I", blob.data, 5)[0] : -8]
    forged = reframe(other, header=encoder.encode(header), body=body)
    with pytest.raises(CorruptCheckpoint, match="wrong key, or the data was changed"):
        codec(encryption=keys).deserialize(forged, GRAPH)


def test_a_codec_with_keys_refuses_unencrypted_data_unless_told() -> None:
    plain, checkpoint = save({"a": 1})
    with pytest.raises(CodecError, match="not encrypted"):
        codec(encryption=ring()).deserialize(plain, GRAPH)
    migrating = codec(encryption=ring(), allow_unencrypted=True)
    assert migrating.deserialize(plain, GRAPH) == checkpoint


def test_graph_mismatch_still_comes_before_decoding_encrypted_data() -> None:
    keys = ring()
    blob, _ = save({"a": 1}, encryption=keys)
    with pytest.raises(GraphMismatch):
        codec(encryption=keys).deserialize(blob, 0x1)


def test_rotation_reads_old_keys_and_reseal_moves_to_the_primary() -> None:
    old = KeyRing({"k1": K1}, primary="k1")
    blob, checkpoint = save({"text": TEXT}, encryption=old)
    rotated = codec(encryption=KeyRing({"k1": K1, "k2": K2}, primary="k2"))
    assert rotated.deserialize(blob, GRAPH) == checkpoint
    assert rotated.key_id_of(blob) == "k1"
    resealed = rotated.reseal(blob)
    assert rotated.key_id_of(resealed) == "k2"
    assert header_of(resealed)[1] == header_of(blob)[1] == "zstd"
    assert resealed.info() != blob.info() or resealed.data != blob.data
    new_only = codec(encryption=KeyRing({"k2": K2}, primary="k2"))
    assert new_only.deserialize(resealed, GRAPH) == checkpoint
    # Unencrypted data is sealed only by a codec told to take it; one without keys cannot reseal.
    plain, checkpoint = save({"a": 1})
    with pytest.raises(CodecError, match="not encrypted"):
        new_only.reseal(plain)
    migrating = codec(encryption=new_only.encryption, allow_unencrypted=True)
    assert new_only.deserialize(migrating.reseal(plain), GRAPH) == checkpoint
    with pytest.raises(TypeError, match="key ring"):
        codec().reseal(plain)


async def test_rekey_never_vouches_for_an_unencrypted_checkpoint() -> None:
    # A writer of the store without the key puts an unencrypted checkpoint in a trace.
    blobs = InMemoryBlobStore()
    keys = KeyRing({"k1": K1, "k2": K2}, primary="k2")
    owner = TypedCheckpointStore(blobs, codec(encryption=KeyRing({"k1": K1}, primary="k1")))
    first = Checkpoint.first("n", {"amount": 10})
    await owner.save_with_trace("t", first, GRAPH)
    forged = first.child("n", {"amount": 1_000_000})
    await TypedCheckpointStore(blobs, codec()).save_with_trace("t", forged, GRAPH)
    rotated = TypedCheckpointStore(blobs, codec(encryption=keys))
    with pytest.raises(CodecError, match="not encrypted"):
        await rotated.load_latest("t", GRAPH)

    result = await rotated.rekey()
    assert result == RekeyResult(rewritten=1, skipped=(forged.checkpoint_id,))
    assert await rotated.rekey("t") == RekeyResult(0, (forged.checkpoint_id,))
    with pytest.raises(CodecError, match="not encrypted"):
        await rotated.load_latest("t", GRAPH)
    assert await rotated.load(first.checkpoint_id, GRAPH) == first
    # The blocking facade reports the same (not closed here: the store is used on).
    sync = SyncCheckpointStore(rotated)
    assert sync.rekey() == RekeyResult(0, (forged.checkpoint_id,))

    # Turning encryption on for a store you trust: allow_unencrypted encrypts them.
    migrating = TypedCheckpointStore(blobs, codec(encryption=keys, allow_unencrypted=True))
    assert await migrating.rekey() == RekeyResult(rewritten=1)
    assert await rotated.load_latest("t", GRAPH) == forged


def test_reseal_keeps_states_the_codec_type_cannot_decode() -> None:
    keys = KeyRing({"k1": K1, "k2": K2}, primary="k2")
    blob, checkpoint = save({"anything": [1, "two"]}, encryption=KeyRing({"k1": K1}, "k1"))
    typed: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(list[int], encryption=keys)
    resealed = typed.reseal(blob)
    assert codec(encryption=keys).deserialize(resealed, GRAPH) == checkpoint


# -- key rings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "primary", "message"),
    [
        ({}, "k", "at least one key"),
        ({"k": b"short"}, "k", "'k' is 5 bytes; AES-256 needs 32"),
        ({"k": "a" * 32}, "k", "must be bytes, not str"),
        ({"": K1}, "", "key id is 1 to 64"),
        ({"has space": K1}, "has space", "key id"),
        ({"x" * 65: K1}, "x", "key id"),
        ({"k\n": K1}, "k\n", "key id"),
        ({"a": K1, "b": K1}, "a", "'a' and 'b' are the same key"),
        ({"a": K1}, "b", "primary key 'b' is not in the ring"),
        ([("a", K1)], "a", "mapping"),
    ],
)
def test_key_rings_are_checked_and_never_show_keys(keys: Any, primary: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        KeyRing(keys, primary=primary)
    assert K1.hex() not in str(caught.value)
    assert repr(K1) not in str(caught.value)


def test_a_key_ring_shows_ids_only_and_refuses_pickling() -> None:
    keys = KeyRing({"2026-01": K1, "2026-11": K2}, primary="2026-11")
    assert repr(keys) == "KeyRing(key_ids=['2026-01', '2026-11'], primary='2026-11')"
    assert "2026-01" in keys
    assert "nope" not in keys
    assert keys.key_ids == ("2026-01", "2026-11")
    assert repr(K1) not in repr(codec(encryption=keys))
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(keys)


def test_key_ring_docstring_examples() -> None:
    failures, tried = doctest.testmod(flowpoint.codec._keys, raise_on_error=False)
    assert tried > 0
    assert failures == 0


# -- secrets ---------------------------------------------------------------------------


class Login(pydantic.BaseModel):
    user: str
    password: pydantic.SecretStr
    token: pydantic.SecretBytes


@dataclasses.dataclass
class Vault:
    name: str
    password: pydantic.SecretStr


@pytest.mark.parametrize("body_format", ["msgpack", "json"])
def test_secrets_are_stored_only_encrypted_and_come_back_as_secrets(body_format: str) -> None:
    state = Login(
        user="u", password=pydantic.SecretStr("hunter2"), token=pydantic.SecretBytes(b"\x00t")
    )
    checkpoint = Checkpoint.first("n", state)
    with pytest.raises(CodecError, match="not stored in clear text"):
        SerdeCheckpointCodec(Login, format=body_format).serialize(checkpoint, GRAPH, "t")
    sealed: SerdeCheckpointCodec[Login] = SerdeCheckpointCodec(
        Login, format=body_format, encryption=ring()
    )
    blob = sealed.serialize(checkpoint, GRAPH, "t")
    assert b"hunter2" not in blob.data
    back = sealed.deserialize(blob, GRAPH).state
    assert isinstance(back.password, pydantic.SecretStr)
    assert back.password.get_secret_value() == "hunter2"
    assert isinstance(back.token, pydantic.SecretBytes)
    assert back.token.get_secret_value() == b"\x00t"


@pytest.mark.parametrize("body_format", ["msgpack", "json"])
def test_secrets_in_a_dataclass_state(body_format: str) -> None:
    sealed: SerdeCheckpointCodec[Vault] = SerdeCheckpointCodec(
        Vault, format=body_format, encryption=ring()
    )
    blob = sealed.serialize(Checkpoint.first("n", Vault("v", pydantic.SecretStr("s3"))), GRAPH, "t")
    back = sealed.deserialize(blob, GRAPH).state
    assert isinstance(back.password, pydantic.SecretStr)
    assert back.password.get_secret_value() == "s3"


# -- limits ----------------------------------------------------------------------------


def test_payload_and_state_limits_on_save() -> None:
    with pytest.raises(CodecError, match=r"data is \d+ bytes, over this codec's max_payload"):
        save({"noise": os.urandom(5000)}, max_payload_size=4000)
    with pytest.raises(CodecError, match=r"encodes to \d+ bytes, over this codec's max_state"):
        save({"text": TEXT}, max_state_size=1000)
    for name in ("max_payload_size", "max_state_size"):
        with pytest.raises(ValueError, match=name):
            codec(**{name: 0})


def test_data_over_the_payload_limit_is_corrupt_before_anything_is_read() -> None:
    blob, _ = save({"noise": os.urandom(5000)})
    with pytest.raises(CorruptCheckpoint, match="over this codec's max_payload_size"):
        codec(max_payload_size=4000).deserialize(blob, GRAPH)
    with pytest.raises(CorruptCheckpoint, match="over this codec's max_payload_size"):
        codec(max_payload_size=4000).key_id_of(blob)


def test_an_uncompressed_body_over_the_state_limit_is_corrupt() -> None:
    blob, _ = save({"noise": os.urandom(5000)})
    with pytest.raises(CorruptCheckpoint, match="over max_state_size"):
        codec(max_state_size=4000).deserialize(blob, GRAPH)


def test_an_absurd_header_length_is_corrupt() -> None:
    blob, _ = save({"a": 1})
    data = bytearray(blob.data)
    struct.pack_into(">I", data, 5, MAX_HEADER_LENGTH + 1)
    with pytest.raises(CorruptCheckpoint, match="header length"):
        codec().deserialize(dataclasses.replace(blob, data=bytes(data)), GRAPH)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({f"k{n}": n for n in range(MAX_METADATA_KEYS + 1)}, "keys; at most"),
        ({"k" * (MAX_METADATA_KEY_LENGTH + 1): 1}, "characters; at most 128"),
        ({"k": "v" * (MAX_METADATA_STRING_LENGTH + 1)}, "characters; at most 4096"),
        ({f"k{n}": "v" * 4000 for n in range(5)}, "bytes as JSON; at most"),
        ({"k": {"nested": 1}}, "values must be"),
        ({"k": [1]}, "values must be"),
        ({"k": float("nan")}, "float must be finite"),
        ({"k": float("-inf")}, "float must be finite"),
        ({"k": 2**63}, "does not fit in 64 bits"),
        ({"k": -(2**63) - 1}, "does not fit in 64 bits"),
        ({1: "v"}, "keys must be str"),
    ],
)
def test_metadata_bounds(metadata: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_metadata(metadata)
    with pytest.raises(ValueError, match=message):
        Checkpoint.first("n", {}, metadata=metadata)


def test_the_largest_metadata_allowed_fits() -> None:
    metadata = {f"k{n}": "v" * 240 for n in range(MAX_METADATA_KEYS)}
    assert len(msgspec.json.encode(metadata)) <= MAX_METADATA_SIZE
    blob, checkpoint = save({}, metadata=metadata, encryption=ring())
    assert codec(encryption=ring()).deserialize(blob, GRAPH) == checkpoint


def test_node_bound() -> None:
    Checkpoint.first("n" * MAX_NODE_LENGTH, {})
    with pytest.raises(ValueError, match="current_node is 257 characters"):
        Checkpoint.first("n" * (MAX_NODE_LENGTH + 1), {})


def test_an_oversized_header_in_a_payload_reads_as_corrupt() -> None:
    """Data whose header breaks a bound (written by hand) is damage, not a checkpoint."""
    blob, _ = save({"a": 1})
    header = header_of(blob)
    header[9] = "n" * (MAX_NODE_LENGTH + 1)
    encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
    forged = dataclasses.replace(
        reframe(blob, header=encoder.encode(header)), current_node=header[9]
    )
    with pytest.raises(CorruptCheckpoint, match="impossible header"):
        codec().deserialize(forged, GRAPH)
