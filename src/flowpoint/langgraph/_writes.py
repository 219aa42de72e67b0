"""Pending writes: LangGraph's ``put_writes`` on flowpoint's, and what reads them back.

A LangGraph write ``(channel, value)`` of a task is a flowpoint
:class:`~flowpoint.checkpoint.TaskWrite` against the checkpoint the task ran from,
keyed by the task id and LangGraph's index (``WRITES_IDX_MAP``'s negative index for an
error, an interrupt, a resume or a scheduled task). Its value is the value codec's
bytes, with whether they hold tagged values; the write is stored, checksummed and
encrypted as the codec stores every write. As in ``InMemorySaver``, a write of a
regular channel is stored once (a repeat is dropped) and one of a special channel
replaces what was stored. Read back, a checkpoint's writes come in
``writes_sort_key`` order: task path, task id, index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    DeltaChannelHistory,
    PendingWrite,
    writes_sort_key,
)

from flowpoint.checkpoint import MAX_CHANNEL_LENGTH, TaskWrite
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId
from flowpoint.langgraph._core import Core, Stored, Where

__all__ = [
    "copy_writes",
    "delta_channel_history",
    "pending_writes",
    "pending_writes_many",
    "put_writes",
    "read_writes",
    "stored_writes",
    "task_write",
]

_NO_PATH: Final = ""


def task_write(
    core: Core, task_id: str, index: int, channel: str, value: Any, task_path: str
) -> TaskWrite:
    """The task write that keeps one LangGraph write."""
    encoded = core.layout.values.encode(value)
    # A path too long for the store's key rides along with the value.
    kept_path, extra = (
        (task_path, []) if len(task_path) <= MAX_CHANNEL_LENGTH else (_NO_PATH, [task_path])
    )
    return TaskWrite(task_id, index, channel, [encoded.tagged, encoded.data, *extra], kept_path)


def stored_writes(
    core: Core, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
) -> list[TaskWrite]:
    """The task writes that keep LangGraph's ``writes`` of one task."""
    return [
        task_write(core, task_id, WRITES_IDX_MAP.get(channel, index), channel, value, task_path)
        for index, (channel, value) in enumerate(writes)
    ]


async def put_writes(
    core: Core,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> None:
    """Save a task's writes against the checkpoint the config names."""
    where = Where.of(config)
    lg_id = config["configurable"].get("checkpoint_id")
    if not lg_id:
        raise ValueError("put_writes takes the config of a checkpoint (with its checkpoint_id)")
    checkpoint_id = await core.checkpoint_id_of(where, str(lg_id))
    made = stored_writes(core, writes, task_id, task_path)
    special = [write for write in made if write.channel in WRITES_IDX_MAP]
    regular = [write for write in made if write.channel not in WRITES_IDX_MAP]
    # A special channel's write replaces the one stored; a regular one is kept as first
    # stored: one call each, so that a call of one kind stays all or none.
    for batch, overwrite in ((special, True), (regular, False)):
        if batch:
            await core.store.save_writes(where.trace, checkpoint_id, batch, overwrite=overwrite)


async def read_writes(core: Core, checkpoint_id: CheckpointId) -> list[tuple[str, str, Any, str]]:
    """The writes of a checkpoint as ``(task_id, channel, value, task_path)``, in order."""
    return _decoded(core, checkpoint_id, await core.store.load_writes(checkpoint_id))


def _decoded(
    core: Core, checkpoint_id: CheckpointId, writes: list[TaskWrite]
) -> list[tuple[str, str, Any, str]]:
    """Task writes of a checkpoint as ``(task_id, channel, value, task_path)``, in order."""
    found = []
    for write in writes:
        value = write.value
        if (
            type(value) is not list
            or len(value) not in (2, 3)
            or type(value[0]) is not bool
            or type(value[1]) is not bytes
            or (len(value) == 3 and type(value[2]) is not str)
        ):
            raise CorruptCheckpoint(
                checkpoint_id, f"the write {write.task_id!r:.80}/{write.index} holds no value"
            )
        decoded = core.layout.values.decode(value[1], checkpoint_id, tagged=value[0])
        path = value[2] if len(value) == 3 else write.task_path
        found.append((write.task_id, write.channel, decoded, path, write.index))
    found.sort(key=lambda w: writes_sort_key(w[3], w[0], w[4]))
    return [(task_id, channel, value, path) for task_id, channel, value, path, _ in found]


async def pending_writes(core: Core, stored: Stored) -> list[PendingWrite]:
    """The pending writes of a stored checkpoint, as a ``CheckpointTuple`` holds them."""
    cid = stored.checkpoint.checkpoint_id
    if stored.writes is not None:  # read with the checkpoint
        return _pending(_decoded(core, cid, stored.writes))
    return _pending(await read_writes(core, cid))


async def pending_writes_many(core: Core, stored: Sequence[Stored]) -> list[list[PendingWrite]]:
    """:func:`pending_writes` of each stored checkpoint, read in one call to the store."""
    ids = [one.checkpoint.checkpoint_id for one in stored]
    found = await core.store.load_writes_many(ids)
    return [_pending(_decoded(core, one, found[one])) for one in ids]


def _pending(writes: list[tuple[str, str, Any, str]]) -> list[PendingWrite]:
    return [(task_id, channel, value) for task_id, channel, value, _ in writes]


async def copy_writes(core: Core, copied: list[tuple[Stored, Stored]]) -> None:
    """Save each copied checkpoint's writes against its copy (those there already stay)."""
    for source, copy in copied:
        writes = await core.store.load_writes(source.checkpoint.checkpoint_id)
        if writes:
            where = copy.where
            await core.store.save_writes(where.trace, copy.checkpoint.checkpoint_id, writes)


async def delta_channel_history(
    core: Core, config: RunnableConfig, channels: Sequence[str]
) -> Mapping[str, DeltaChannelHistory]:
    """``get_delta_channel_history``: each channel's writes and seed along the parent chain.

    Walks the target's ancestors once for all channels, decoding of each only its
    writes and the fields of channels still looked for; a channel's walk ends at the
    nearest ancestor that stores its value (the seed), whose writes count too.
    """
    if not channels:
        return {}
    collected: dict[str, list[PendingWrite]] = {channel: [] for channel in channels}
    seeds: dict[str, Any] = {}
    remaining = set(channels)
    target = await core.get(config)
    parent = (
        None
        if target is None
        else core.layout.parent(target.fields, target.checkpoint.checkpoint_id)
    )
    where = None if target is None else target.where
    while parent is not None and remaining and where is not None:
        blob = await core.locate(where.trace, parent)
        if blob is None:
            break
        ancestor = await core.read(where, blob)
        cid = ancestor.checkpoint.checkpoint_id
        for task_id, channel, value, _ in reversed(await read_writes(core, cid)):
            if channel in remaining:
                collected[channel].append((task_id, channel, value))
        for channel in [ch for ch in remaining if core.layout.has_value(ancestor.fields, ch)]:
            seeds[channel] = core.layout.value(ancestor.fields, channel, cid)
            remaining.discard(channel)
        parent = core.layout.parent(ancestor.fields, cid)
    history: dict[str, DeltaChannelHistory] = {}
    for channel in channels:
        entry: DeltaChannelHistory = {"writes": collected[channel][::-1]}
        if channel in seeds:
            entry["seed"] = seeds[channel]
        history[channel] = entry
    return history
