"""A header's value objects: a blob, its listing entry and its header carry the same fields."""

from __future__ import annotations

from flowpoint.blob import HEADER_FIELDS, CheckpointBlob, CheckpointInfo
from tests.blobs import make_blob


def test_a_header_moves_between_its_value_objects_field_for_field() -> None:
    blob = make_blob("t", 3, metadata={"k": 1})
    info = blob.info()
    assert type(info) is CheckpointInfo
    assert info.size == len(blob.data)
    again = info.with_data(blob.data)
    assert type(again) is CheckpointBlob
    assert again == blob
    header = again.header
    for name in HEADER_FIELDS:
        assert getattr(header, name) == getattr(blob, name) == getattr(info, name), name
    assert header.with_size(7).size == 7
