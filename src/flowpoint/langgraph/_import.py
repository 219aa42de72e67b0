"""Moving threads from LangGraph's own savers into a ``FlowpointSaver``: ``import-langgraph``.

Each checkpoint is saved as the saver saves one (its LangGraph id, parent,
timestamp and metadata kept), then read back and compared with what was read
from the source; its pending writes follow it. A checkpoint already imported
(by an earlier run, even one killed midway) is compared and skipped, so the
import can run again until it reports nothing new; one that differs stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import get_checkpoint_metadata

from flowpoint.checkpoint import TaskWrite
from flowpoint.errors import CheckpointConflict
from flowpoint.langgraph._core import Core, Stored, Where
from flowpoint.langgraph._saver import FlowpointSaver
from flowpoint.langgraph._sources import Source, SourceCheckpoint
from flowpoint.langgraph._threads import trace_for
from flowpoint.langgraph._values import Tagged
from flowpoint.langgraph._writes import task_write

__all__ = ["ImportReport", "import_threads"]


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    threads: int = 0
    checkpoints: int = 0
    """Checkpoints saved by this run."""
    skipped: int = 0
    """Checkpoints found saved already, identical to the source's."""
    verified: int = 0
    """Checkpoints read back and found identical to the source's (saved or skipped)."""
    writes: int = 0
    """Pending writes saved by this run."""
    unregistered: set[str] = field(default_factory=set)
    """Names of classes the values hold that the saver's allowlist lacks."""

    def as_json(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "checkpoints": self.checkpoints,
            "skipped": self.skipped,
            "verified": self.verified,
            "writes": self.writes,
            "unregistered_types": sorted(self.unregistered),
        }


async def import_threads(
    source: Source,
    saver: FlowpointSaver,
    *,
    threads: Iterable[str] | None = None,
    done: Callable[[], None] | None = None,
) -> ImportReport:
    """Import the source's threads (or only ``threads``) into ``saver``.

    Raises :class:`~flowpoint.errors.CheckpointConflict` where the destination
    holds another checkpoint under an id being imported, or newer checkpoints in a
    thread than those imported; ``done`` is called after each checkpoint.
    """
    report = ImportReport()
    core: Core = saver._core
    names = set(saver.registry.names)
    for thread_id in source.threads() if threads is None else list(threads):
        report.threads += 1
        for checkpoint in source.checkpoints(thread_id):
            report.unregistered |= _tagged_names(checkpoint.checkpoint) - names
            await saver._runner.arun(_import_one(core, checkpoint, report))
            if done is not None:
                done()
    return report


async def _import_one(core: Core, source: SourceCheckpoint, report: ImportReport) -> None:
    config = {
        "configurable": {
            "thread_id": source.thread_id,
            "checkpoint_ns": source.checkpoint_ns,
            "checkpoint_id": source.parent_id,
        }
    }
    checkpoint: Any = source.checkpoint
    versions = dict(checkpoint.get("channel_versions") or {})
    expected = core.layout.fields(
        checkpoint,
        get_checkpoint_metadata(config, source.metadata),  # type: ignore[arg-type]
        source.parent_id,
        versions,
        None,
    )
    where = Where.of(config)  # type: ignore[arg-type]
    trace = trace_for(where.thread, where.ns)
    stored = await core.locate(trace, source.checkpoint_id)
    if stored is None:
        await core.put(config, checkpoint, source.metadata, versions)  # type: ignore[arg-type]
        report.checkpoints += 1
        stored = await core.locate(trace, source.checkpoint_id)
    else:
        report.skipped += 1
    read = None if stored is None else await core.read(where, stored)
    if read is None or {key: bytes(value) for key, value in read.fields.items()} != expected:
        raise CheckpointConflict(
            trace,
            -1 if stored is None else stored.step,
            f"checkpoint {source.checkpoint_id} of thread {source.thread_id!r} reads back "
            f"otherwise than the source holds it: another checkpoint holds its id",
        )
    report.verified += 1
    await _import_writes(core, source, read, report)


async def _import_writes(
    core: Core, source: SourceCheckpoint, stored: Stored, report: ImportReport
) -> None:
    """Save the checkpoint's writes (those saved before stay), then compare them all."""
    if not source.writes:
        return
    cid = stored.checkpoint.checkpoint_id
    expected = [
        task_write(core, w.task_id, w.index, w.channel, w.value, w.task_path) for w in source.writes
    ]
    report.writes += await core.store.save_writes(stored.where.trace, cid, expected)
    found = await core.store.load_writes(cid)
    if sorted(map(_key, found)) != sorted(map(_key, expected)):
        raise CheckpointConflict(
            stored.where.trace,
            stored.checkpoint.step,
            f"the pending writes of checkpoint {source.checkpoint_id} of thread "
            f"{source.thread_id!r} read back otherwise than the source holds them",
        )


def _key(write: TaskWrite) -> tuple[str, int, str, bytes, str]:
    return (write.task_id, write.index, write.channel, repr(write.value).encode(), write.task_path)


def _tagged_names(value: Any) -> set[str]:
    found: set[str] = set()
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Tagged):
            found.add(item.name)
            pending.append(item.data)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found
