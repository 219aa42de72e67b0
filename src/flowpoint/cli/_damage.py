"""Listing a store past its damaged records, and saying what is damaged.

A store lists a record it cannot read as a :class:`~flowpoint.blob.DamagedRecord`
(see :meth:`~flowpoint.stores.BlobCheckpointStore.history_entries`) and goes on;
the commands do the same: they show what is readable, name each damaged record,
and exit 3 once everything else is done.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flowpoint.blob import CheckpointInfo, DamagedRecord
from flowpoint.cli._output import print_error
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore

__all__ = [
    "damage_json",
    "describe_damage",
    "list_trace",
    "list_traces",
    "report_damage",
    "unlisted_trace",
]


async def list_traces(store: BlobCheckpointStore) -> tuple[list[TraceId], list[DamagedRecord]]:
    """The traces that can be named, sorted, and the records whose trace id cannot be read."""
    names: list[TraceId] = []
    damaged: list[DamagedRecord] = []
    for entry in await store.trace_entries():
        if isinstance(entry, DamagedRecord):
            damaged.append(entry)
        else:
            names.append(entry)
    return names, damaged


async def list_trace(
    store: BlobCheckpointStore, trace: TraceId
) -> tuple[list[CheckpointInfo], list[DamagedRecord]]:
    """Every readable header of the trace, newest first, and its damaged records.

    A store that cannot list past damage (one without the ability, see
    :class:`~flowpoint.stores._base.DamageReportingBlobStore`) gives the trace as
    one damaged record (:func:`unlisted_trace`) instead.
    """
    infos: list[CheckpointInfo] = []
    damaged: list[DamagedRecord] = []
    try:
        entries = store.iter_history_entries(trace)
        async with contextlib.aclosing(entries):
            async for entry in entries:
                if isinstance(entry, DamagedRecord):
                    damaged.append(entry)
                else:
                    infos.append(entry)
    except CorruptCheckpoint as exc:
        return [], [unlisted_trace(trace, exc)]
    return infos, damaged


def unlisted_trace(trace: TraceId, exc: CorruptCheckpoint) -> DamagedRecord:
    """A trace whose listing failed, as a damaged record: the checkpoint and step unknown."""
    return DamagedRecord(None, trace, None, exc.reason)


def describe_damage(record: DamagedRecord) -> str:
    """What is damaged, and why, for people."""
    if record.checkpoint_id is None:
        return f"trace {record.trace_id!r} cannot be listed: {record.reason}"
    where = "trace unreadable" if record.trace_id is None else f"trace {record.trace_id!r}"
    step = "unreadable" if record.step is None else str(record.step)
    return f"checkpoint {record.checkpoint_id} ({where}, step {step}) is corrupt: {record.reason}"


def damage_json(record: DamagedRecord) -> dict[str, Any]:
    """The damaged record as JSON-ready values, in a fixed key order."""
    return {
        "checkpoint_id": None if record.checkpoint_id is None else str(record.checkpoint_id),
        "trace_id": record.trace_id,
        "step": record.step,
        "reason": record.reason,
    }


def report_damage(count: int, where: str, verify_command: str) -> None:
    """The one error line of a listing that met ``count`` damaged records in ``where``."""
    print_error(
        f"{count} damaged record(s) in {where}; the rest is listed "
        f"(run {verify_command} to check every checkpoint)"
    )
