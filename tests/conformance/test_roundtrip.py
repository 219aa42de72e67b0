"""Every kind of state comes back from every backend as the same value of the same type."""

from __future__ import annotations

from typing import Any

import pytest

from flowpoint import (
    BlobCheckpointStore,
    Checkpoint,
    CheckpointInfo,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
)
from tests.states import samples

GRAPH = 0xFEEDFACECAFEBEEF


@pytest.mark.parametrize("body_format", ["msgpack", "json"])
@pytest.mark.parametrize("kind", sorted(samples()))
async def test_each_state_kind_round_trips(
    blob_store: BlobCheckpointStore, kind: str, body_format: Any
) -> None:
    state_type, state = samples()[kind]
    store: TypedCheckpointStore[Any] = TypedCheckpointStore(
        blob_store, SerdeCheckpointCodec(state_type, format=body_format)
    )
    first = Checkpoint.first("plan", state, metadata={"kind": kind, "n": 1, "x": 0.5, "b": True})
    second = first.child(None, state)
    await store.save_with_trace("t", first, GRAPH)
    await store.save_with_trace("t", second, GRAPH)

    by_id = await store.load(first.checkpoint_id, GRAPH)
    latest = await store.load_latest("t", GRAPH)

    assert by_id == first
    assert type(by_id.state) is type(state)
    assert latest == second
    assert latest.current_node is None
    assert latest.parent_id == first.checkpoint_id
    assert latest.created_at == second.created_at
    assert latest.created_at.tzinfo is not None


async def test_save_returns_the_header_and_history_reports_the_stored_size(
    store: TypedCheckpointStore,
) -> None:
    checkpoint = Checkpoint.first("a", {"text": "x" * 1000})
    info = await store.save_with_trace("t", checkpoint, GRAPH)
    [listed] = await store.history("t")
    assert isinstance(info, CheckpointInfo)
    assert listed == info
    raw = await store.store.load(checkpoint.checkpoint_id)
    assert raw is not None
    assert listed.size == len(raw.data)
    assert listed.metadata == {}
    assert listed.graph_hash == GRAPH
