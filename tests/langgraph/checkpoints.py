"""LangGraph checkpoints made by hand, for tests of the saver's API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.base.id import uuid6


def config(thread: str, ns: str = "", checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(
    values: dict[str, Any],
    versions: dict[str, Any] | None = None,
    *,
    checkpoint_id: str | None = None,
    seen: dict[str, Any] | None = None,
) -> Checkpoint:
    return Checkpoint(
        v=4,
        id=checkpoint_id or str(uuid6(clock_seq=-1)),
        ts=datetime.now(UTC).isoformat(),
        channel_values=values,
        channel_versions=versions if versions is not None else dict.fromkeys(values, 1),
        versions_seen=seen or {},
        updated_channels=sorted(values),
    )
