"""A queued resume's update and answer at rest: sealed with the queue's key ring, or plain."""

from __future__ import annotations

import msgspec
import pytest

from flowpoint import CodecError, CorruptCheckpoint, KeyRing
from flowpoint.queue._resumes import decode_resume, encode_resume

RING = KeyRing({"k1": bytes(32), "k2": bytes(range(32))}, primary="k2")
GIVEN = {"update": {"by": "ana", "note": "card ending 4242"}, "value": True}


def test_a_resume_round_trips_plain_and_sealed() -> None:
    assert decode_resume(encode_resume(GIVEN, None, "t"), None, "t") == GIVEN
    sealed = encode_resume(GIVEN, RING, "t")
    assert b"4242" not in sealed
    assert b"ana" not in sealed
    assert msgspec.msgpack.decode(sealed)["key"] == "k2"
    assert decode_resume(sealed, RING, "t") == GIVEN


def test_a_sealed_resume_needs_its_key() -> None:
    sealed = encode_resume(GIVEN, RING, "t")
    with pytest.raises(CodecError, match="encrypted with key 'k2'"):
        decode_resume(sealed, None, "t")
    other = KeyRing({"k1": bytes(32)}, primary="k1")
    with pytest.raises(CodecError, match="does not hold"):
        decode_resume(sealed, other, "t")


def test_a_sealed_resume_moved_or_changed_does_not_open() -> None:
    sealed = encode_resume(GIVEN, RING, "t")
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        decode_resume(sealed, RING, "another run")
    found = msgspec.msgpack.decode(sealed)
    flipped = bytearray(found["sealed"])
    flipped[-1] ^= 1
    changed = msgspec.msgpack.encode({"key": "k2", "sealed": bytes(flipped)})
    with pytest.raises(CorruptCheckpoint, match="authentication failed"):
        decode_resume(changed, RING, "t")


def test_a_plain_resume_to_a_queue_that_encrypts_is_refused_unless_allowed() -> None:
    plain = encode_resume(GIVEN, None, "t")
    with pytest.raises(CodecError, match="not encrypted"):
        decode_resume(plain, RING, "t")
    assert decode_resume(plain, RING, "t", allow_unencrypted=True) == GIVEN


@pytest.mark.parametrize(
    "stored",
    [
        b"\xc1",  # not MessagePack
        msgspec.msgpack.encode([1, 2]),
        msgspec.msgpack.encode({"update": {}, "other": 1}),
        msgspec.msgpack.encode({"key": 5, "sealed": b"x"}),
        msgspec.msgpack.encode({"key": "k2", "sealed": b"short"}),
    ],
    ids=["garbage", "a-list", "unknown-field", "key-not-str", "too-short"],
)
def test_a_damaged_resume_is_corrupt(stored: bytes) -> None:
    with pytest.raises(CorruptCheckpoint):
        decode_resume(stored, RING if b"sealed" in stored else None, "t")


def test_a_resume_that_is_not_plain_data_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot be stored"):
        encode_resume({"value": object()}, RING, "t")
