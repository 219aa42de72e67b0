"""The envelope header repeats the checkpoint's header, converted one way in each direction."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from flowpoint import Checkpoint, CheckpointBlob, CorruptCheckpoint, SerdeCheckpointCodec
from flowpoint.codec import KeyRing
from flowpoint.codec._envelope import (
    EnvelopeHeader,
    encode_head,
    open_envelope,
    peek_header,
    seal_envelope,
)

GRAPH = 0x0123456789ABCDEF


def _stored(**options: Any) -> CheckpointBlob:
    first = Checkpoint.first("plan", {"n": 1}, metadata={"user": "ada", "try": 2})
    checkpoint = first.child("act", {"n": 2}, cursor={"tasks": [{"node": "act"}]})
    return SerdeCheckpointCodec(dict, **options).serialize(checkpoint, GRAPH, "trace-1")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"format": "json", "compression": None},
        {"encryption": KeyRing({"k": b"k" * 32}, primary="k")},
    ],
    ids=["default", "json-plain", "encrypted"],
)
def test_from_header_writes_the_bytes_the_codec_writes(options: dict[str, Any]) -> None:
    blob = _stored(**options)
    written = peek_header(blob)
    rebuilt = EnvelopeHeader.from_header(
        blob.header,
        body_format=written.body_format,
        compression=written.compression,
        key_id=written.key_id,
        cursor_length=written.cursor_length,
    )
    assert rebuilt == written
    head = encode_head(rebuilt)
    assert blob.data[: len(head)] == head


def test_checkpoint_header_is_the_blobs_header() -> None:
    blob = _stored()
    assert peek_header(blob).checkpoint_header() == blob.header


def test_a_payload_whose_metadata_differs_only_in_value_type_is_caught() -> None:
    # 1 == True in Python: the store's header and the payload's must match in type too.
    blob = _header_blob({"flag": 1}, stored_metadata={"flag": True})
    with pytest.raises(CorruptCheckpoint, match="another checkpoint: metadata is"):
        open_envelope(blob)


def test_metadata_of_any_mapping_type_matches_the_payloads() -> None:
    blob = _header_blob({"flag": 1}, stored_metadata=MappingProxyType({"flag": 1}))
    assert open_envelope(blob).header.metadata == {"flag": 1}


def test_each_differing_field_is_named() -> None:
    base = _header_blob({"a": "b"})
    other_time = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for name, value in [("step", 4), ("current_node", "other"), ("created_at", other_time)]:
        moved = dataclasses.replace(base, **{name: value})
        with pytest.raises(CorruptCheckpoint, match=f"another checkpoint: {name} is"):
            open_envelope(moved)


def _header_blob(metadata: dict[str, Any], stored_metadata: Any = None) -> CheckpointBlob:
    header = dataclasses.replace(
        _stored().header, metadata=metadata, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    envelope = EnvelopeHeader.from_header(
        header, body_format="msgpack", compression=None, key_id=None
    )
    data = seal_envelope(encode_head(envelope), b"\x80")
    stored = (
        header if stored_metadata is None else dataclasses.replace(header, metadata=stored_metadata)
    )
    return stored.with_data(data)
