"""What the saver does to whole threads: find their traces, delete, prune, copy.

A thread's traces are found by listing every trace of the store and keeping those
whose name a thread makes (:mod:`~flowpoint.langgraph._threads`) and whose newest
checkpoint the adapter wrote (it bears the adapter's graph hash): a trace of
flowpoint's own runner, or a foreign one, is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.checkpoint.base import CheckpointMetadata

from flowpoint.blob import CheckpointInfo
from flowpoint.checkpoint import Checkpoint
from flowpoint.ids import CheckpointId
from flowpoint.langgraph._core import Core, Stored, Where, checkpoint_id_for
from flowpoint.langgraph._layout import ADAPTER_GRAPH_HASH, header_metadata, header_value
from flowpoint.langgraph._threads import thread_key, trace_for

__all__ = ["copy_thread", "delete_for_runs", "delete_threads", "metadata_of", "prune", "traces_of"]


async def traces_of(core: Core, thread_ids: Iterable[object] | None) -> list[Where]:
    """The adapter's traces of these threads (of every thread, for ``None``), sorted."""
    wanted = None if thread_ids is None else {thread_key(one) for one in thread_ids}
    found: list[Where] = []
    for trace in await core.store.traces():
        where = Where.of_trace(trace)
        if where is None or (wanted is not None and where.thread not in wanted):
            continue
        newest = await core.store.history(trace, 1)
        if newest and newest[0].graph_hash == ADAPTER_GRAPH_HASH:
            found.append(where)
    return found


async def delete_threads(core: Core, thread_ids: Iterable[object]) -> None:
    """Delete every checkpoint (and its writes) of these threads, in every namespace."""
    for where in await traces_of(core, thread_ids):
        core.tips.forget(where.trace)
        await core.store.delete_trace(where.trace)


async def delete_for_runs(core: Core, run_ids: Sequence[object]) -> None:
    """Delete the checkpoints whose metadata names one of these runs."""
    wanted = {str(run_id) for run_id in run_ids}
    if not wanted:
        return
    for where in await traces_of(core, None):
        doomed: list[CheckpointId] = []
        async for info in core.store.store.iter_history(where.trace):
            run_id = await _metadata_value(core, where, info, "run_id")
            if run_id is not None and str(run_id) in wanted:
                doomed.append(info.checkpoint_id)
        if doomed:
            core.tips.forget(where.trace)
            await core.store.delete_checkpoints(where.trace, doomed)


async def metadata_of(core: Core, where: Where, info: CheckpointInfo) -> CheckpointMetadata | None:
    """LangGraph's metadata of a listed checkpoint (``None`` if it is gone meanwhile)."""
    blob = await core.store.store.load(info.checkpoint_id)
    if blob is None:
        return None
    stored = await core.read(where, blob)
    return core.layout.metadata(stored.fields, stored.checkpoint.checkpoint_id)


async def _metadata_value(core: Core, where: Where, info: CheckpointInfo, key: str) -> Any:
    known, value = header_value(info.metadata, key)
    if known:
        return value
    metadata = await metadata_of(core, where, info)
    return None if metadata is None else metadata.get(key)


async def prune(core: Core, thread_ids: Sequence[object], strategy: str) -> None:
    """Keep each namespace's newest checkpoint (``keep_latest``), or delete (``delete``).

    Under ``keep_latest``, a newest checkpoint whose metadata counts updates of
    delta channels since their last snapshot keeps its ancestors back to the
    nearest one that stores every such channel's value, with their writes:
    LangGraph rebuilds those channels from them.
    """
    if isinstance(thread_ids, str):
        raise TypeError("prune takes a sequence of thread ids, not one str")
    if strategy == "delete":
        await delete_threads(core, thread_ids)
        return
    if strategy != "keep_latest":
        raise ValueError(f"strategy must be 'keep_latest' or 'delete', not {strategy!r}")
    for where in await traces_of(core, thread_ids):
        newest = await core.store.store.load_latest(where.trace)
        if newest is None:
            continue
        kept = await _kept_with(core, where, await core.read(where, newest))
        doomed = [
            info.checkpoint_id
            async for info in core.store.store.iter_history(where.trace)
            if info.checkpoint_id not in kept
        ]
        if doomed:
            core.tips.forget(where.trace)
            await core.store.delete_checkpoints(where.trace, doomed)


async def _kept_with(core: Core, where: Where, newest: Stored) -> set[CheckpointId]:
    kept = {newest.checkpoint.checkpoint_id}
    cid = newest.checkpoint.checkpoint_id
    counters = core.layout.metadata(newest.fields, cid).get("counters_since_delta_snapshot")
    remaining = set(counters) if isinstance(counters, dict) else set()
    remaining = {ch for ch in remaining if not core.layout.has_value(newest.fields, ch)}
    parent = core.layout.parent(newest.fields, cid)
    while remaining and parent is not None:
        blob = await core.locate(where.trace, parent)
        if blob is None:
            break
        ancestor = await core.read(where, blob)
        kept.add(ancestor.checkpoint.checkpoint_id)
        remaining = {ch for ch in remaining if not core.layout.has_value(ancestor.fields, ch)}
        parent = core.layout.parent(ancestor.fields, ancestor.checkpoint.checkpoint_id)
    return kept


async def copy_thread(core: Core, source: object, target: object) -> list[tuple[Stored, Stored]]:
    """Copy every checkpoint of ``source`` to ``target``, namespace by namespace.

    Returns each copied checkpoint with its copy, oldest first, for the writes to
    follow. A checkpoint copied before (by a copy that was interrupted) is skipped.
    """
    target_thread = thread_key(target)
    copied: list[tuple[Stored, Stored]] = []
    for where in await traces_of(core, [source]):
        to = Where(target_thread, where.ns, trace_for(target_thread, where.ns), target)
        core.tips.forget(to.trace)
        infos = [info async for info in core.store.store.iter_history(where.trace)]
        for info in reversed(infos):
            blob = await core.store.store.load(info.checkpoint_id)
            if blob is None:
                continue  # deleted since the listing
            stored = await core.read(where, blob)
            copied.append((stored, await _copy_one(core, stored, to)))
    return copied


async def _copy_one(core: Core, stored: Stored, to: Where) -> Stored:
    lg_id = stored.lg_id
    cid = stored.checkpoint.checkpoint_id
    checkpoint_id = checkpoint_id_for(to.trace, lg_id, derived=True)
    existing = await core.store.store.load(checkpoint_id)
    if existing is not None and existing.trace_id == to.trace:
        return await core.read(to, existing)
    parent = core.layout.parent(stored.fields, cid)
    metadata = core.layout.metadata(stored.fields, cid)
    copy = Checkpoint(
        checkpoint_id=checkpoint_id,
        step=stored.checkpoint.step,
        parent_id=None if parent is None else checkpoint_id_for(to.trace, parent, derived=True),
        current_node=None,
        state=stored.fields,
        created_at=stored.checkpoint.created_at,
        metadata=header_metadata(metadata, copy=core.copy_metadata, lg_id=lg_id),
    )
    await core.store.save_with_trace(to.trace, copy, ADAPTER_GRAPH_HASH)
    return Stored(to, copy)
