"""The saver's memory of each thread's newest checkpoint: bounded in bytes, blobs counted."""

from __future__ import annotations

import msgspec

from flowpoint import Checkpoint
from flowpoint.ids import TraceId
from flowpoint.langgraph._tips import Tip, Tips
from tests.blobs import make_blob


def tip(trace: str, step: int, field_bytes: int, blob_bytes: int) -> Tip:
    checkpoint = Checkpoint.first("node", {"f": msgspec.Raw(msgspec.msgpack.encode("x"))})
    fields = {"f": b"x" * field_bytes}
    blob = make_blob(trace, step, data=b"b" * blob_bytes)
    return Tip(checkpoint.checkpoint_id, "lg", step, fields, checkpoint=checkpoint, stored=blob)


def test_fields_and_the_blob_count_against_the_bound() -> None:
    tips = Tips(max_bytes=1_000)
    tips.put(TraceId("a"), tip("a", 0, 400, 100))
    tips.put(TraceId("b"), tip("b", 0, 400, 100))
    kept_a, kept_b = tips.get(TraceId("a")), tips.get(TraceId("b"))
    assert kept_a is not None
    assert kept_a.size == 500
    assert kept_b is not None
    assert kept_b.size == 500
    # A third of 500 bytes evicts the least recently used (a, read first above).
    tips.put(TraceId("c"), tip("c", 0, 300, 200))
    assert tips.get(TraceId("a")) is None
    assert tips.get(TraceId("b")) is not None
    assert tips.get(TraceId("c")) is not None


def test_a_tip_over_the_bound_keeps_only_its_ids() -> None:
    tips = Tips(max_bytes=1_000)
    tips.put(TraceId("a"), tip("a", 3, 600, 500))
    kept = tips.get(TraceId("a"))
    assert kept is not None
    assert (kept.step, kept.fields, kept.checkpoint, kept.stored, kept.size) == (
        3,
        None,
        None,
        None,
        0,
    )


def test_an_older_tip_never_replaces_a_newer_one() -> None:
    tips = Tips(max_bytes=10_000)
    newer = tip("a", 5, 10, 10)
    tips.put(TraceId("a"), newer)
    tips.put(TraceId("a"), tip("a", 4, 10, 10))
    kept = tips.get(TraceId("a"))
    assert kept is not None
    assert kept.step == 5
    assert kept.stored == newer.stored
