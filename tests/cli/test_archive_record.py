"""An archive's checkpoint record holds the checkpoint's header, converted one way each way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from flowpoint import CheckpointBlob
from flowpoint.cli._archive import _Checkpoint
from flowpoint.ids import new_checkpoint_id

TOKYO = timezone(timedelta(hours=9))


def _blob() -> CheckpointBlob:
    return CheckpointBlob(
        checkpoint_id=new_checkpoint_id(),
        trace_id="trace/1",
        step=3,
        parent_id=new_checkpoint_id(),
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 9, tzinfo=TOKYO),
        current_node="act",
        metadata={"n": 1, "x": 1.0, "flag": True, "none": None},
        data=b"\x89FPC opaque",
    )


def test_a_record_holds_the_blobs_header_in_utc() -> None:
    blob = _blob()
    record = _Checkpoint.from_blob(blob)
    assert record.created_at.tzinfo is UTC
    header = record.checkpoint_header()
    assert header == blob.header
    assert blob.first_difference(header) is None  # metadata value types kept
    assert header.with_data(record.data) == blob


def test_a_record_read_back_holds_the_same_header() -> None:
    blob = _blob()
    encoded = msgspec.msgpack.encode(_Checkpoint.from_blob(blob))
    record = msgspec.msgpack.decode(encoded, type=_Checkpoint)
    assert record.checkpoint_header() == blob.header


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("step", -1, "step must be"),
        ("trace_id", "", "trace id"),
        ("current_node", "n" * 257, "current_node is 257"),
        ("metadata", msgspec.Raw(msgspec.msgpack.encode({"k": [1]})), "got `array`"),
    ],
)
def test_an_impossible_record_header_is_refused(field: str, value: object, reason: str) -> None:
    record = msgspec.structs.replace(_Checkpoint.from_blob(_blob()), **{field: value})
    with pytest.raises(ValueError, match=reason):
        record.checkpoint_header()
