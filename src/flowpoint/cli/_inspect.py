"""``traces``, ``history``, ``show`` and ``diff``: look at what workflows saved.

Listings read headers only; ``show`` and ``diff`` decode states, into the class
``--type`` names or, by default, into plain JSON-like values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord
from flowpoint.checkpoint import Checkpoint
from flowpoint.cli._common import (
    CheckpointRef,
    DebugOption,
    JsonOption,
    KeyringOption,
    Settings,
    StoreOption,
    TypeOption,
    command_line,
    import_state_type,
    make_codec,
    opened_store,
    parse_checkpoint_ref,
    require_trace,
    resolve_checkpoint,
    shown,
)
from flowpoint.cli._damage import damage_json, list_trace, list_traces, report_damage
from flowpoint.cli._jsondiff import diff_values
from flowpoint.cli._output import (
    ExitCode,
    emit_json,
    fail,
    format_hash,
    format_size,
    format_time,
    info_json,
    run,
    sorted_metadata,
    stdout_console,
    table,
    to_plain,
)
from flowpoint.cli._pending import cursor_rows, pending_json, pending_table
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.codec._envelope import open_envelope
from flowpoint.errors import CodecError
from flowpoint.graph._interrupt import read, waiting
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__all__ = ["TraceSummary", "diff", "history", "show", "summarize", "traces"]

DEFAULT_PAGE = 20
"""Checkpoints per ``history`` page unless ``--limit`` says otherwise."""


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One line of ``flowpoint traces``: a trace described from its headers."""

    trace_id: TraceId
    checkpoints: int
    latest: CheckpointInfo
    updated_at: datetime
    size: int

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values, in a fixed key order."""
        return {
            "trace_id": self.trace_id,
            "checkpoints": self.checkpoints,
            "latest_step": self.latest.step,
            "latest_checkpoint_id": str(self.latest.checkpoint_id),
            "next_node": self.latest.current_node,
            "updated_at": format_time(self.updated_at),
            "graph_hash": format_hash(self.latest.graph_hash),
            "size": self.size,
        }


def summarize(trace: TraceId, newest_first: list[CheckpointInfo]) -> TraceSummary:
    """Summarize a whole, non-empty trace listed newest first.

    The graph hash is the latest checkpoint's; "updated" is the newest creation time
    of any of its checkpoints (not necessarily the latest step's).
    """
    return TraceSummary(
        trace_id=trace,
        checkpoints=len(newest_first),
        latest=newest_first[0],
        updated_at=max(info.created_at for info in newest_first),
        size=sum(info.size for info in newest_first),
    )


def _node(node: str | None) -> str:
    return "END" if node is None else node


def _metadata(info: CheckpointInfo) -> str:
    """``key=value`` pairs, sorted by key: strings as they are, other values as JSON."""
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in sorted_metadata(info).items()
    )


# -- traces ----------------------------------------------------------------------------


def traces(
    ctx: typer.Context,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List every trace: checkpoints, latest step and next node, last update, graph, size.

    Reads headers only, never checkpoint data.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _traces(settings), debug=settings.debug)


async def _traces(settings: Settings) -> ExitCode:
    async with opened_store(settings.store, "read") as store:
        summaries = []
        names, damaged = await list_traces(store)
        for trace in names:
            infos, trace_damage = await list_trace(store, trace)
            damaged += trace_damage
            if infos:  # none: deleted meanwhile, or every record damaged
                summaries.append(summarize(trace, infos))
    if settings.json:
        emit_json(
            {
                "store": shown(settings.store),
                "traces": [summary.as_json() for summary in summaries],
                "damaged": [damage_json(record) for record in damaged],
            }
        )
    else:
        grid = table(
            "trace",
            "checkpoints",
            "latest step",
            "next node",
            "updated (UTC)",
            "graph",
            "size",
            title=f"{len(summaries)} trace(s) in {shown(settings.store)}",
        )
        for summary in summaries:
            grid.add_row(
                summary.trace_id,
                str(summary.checkpoints),
                str(summary.latest.step),
                _node(summary.latest.current_node),
                format_time(summary.updated_at, precise=False),
                format_hash(summary.latest.graph_hash),
                format_size(summary.size),
            )
        console = stdout_console()
        console.print(grid)
        if damaged:
            console.print(_damage_table(damaged))
    return _damage_exit(settings, damaged)


def _damage_table(damaged: list[DamagedRecord]) -> Table:
    grid = table("checkpoint id", "trace", "step", "damage", title="damaged records")
    for record in damaged:
        grid.add_row(
            Text(str(record.checkpoint_id or "—"), no_wrap=True),
            "—" if record.trace_id is None else record.trace_id,
            "—" if record.step is None else str(record.step),
            Text(record.reason, style="red"),
        )
    return grid


def _damage_exit(settings: Settings, damaged: list[DamagedRecord]) -> ExitCode:
    """3 after the line that names the damage, if a listing met any; else 0."""
    if not damaged:
        return ExitCode.OK
    report_damage(len(damaged), shown(settings.store), command_line(settings, "verify"))
    return ExitCode.CORRUPT


# -- history ---------------------------------------------------------------------------


def history(
    ctx: typer.Context,
    trace: Annotated[
        str, typer.Argument(metavar="TRACE", help="The trace id.", show_default=False)
    ],
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="Checkpoints per page.")
    ] = DEFAULT_PAGE,
    before: Annotated[
        int | None,
        typer.Option(
            "--before",
            min=0,
            metavar="STEP",
            help="Only steps below STEP: the next page starts below the last step shown.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a trace's timeline, newest first, a page at a time (headers only)."""
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _history(settings, trace, limit, before), debug=settings.debug)


async def _history(settings: Settings, trace: str, limit: int, before: int | None) -> ExitCode:
    async with opened_store(settings.store, "read") as store:
        page = await store.history_entries(trace, limit + 1, before)
        if not page:
            await require_trace(store, trace, settings.store)
    more = len(page) > limit
    page = page[:limit]
    steps = [entry.step for entry in page if entry.step is not None]
    next_before = min(steps) if more and steps else None
    damaged = [entry for entry in page if isinstance(entry, DamagedRecord)]
    if settings.json:
        emit_json(
            {
                "trace_id": trace,
                "checkpoints": [
                    info_json(entry) for entry in page if isinstance(entry, CheckpointInfo)
                ],
                "damaged": [damage_json(record) for record in damaged],
                "next_before": next_before,
            }
        )
        return _damage_exit(settings, damaged)
    grid = table(
        "step",
        "checkpoint id",
        "created (UTC)",
        "next node",
        "size",
        "metadata",
        title=f"trace {trace!r}, newest first",
    )
    for entry in page:
        if isinstance(entry, DamagedRecord):
            grid.add_row(
                "—" if entry.step is None else str(entry.step),
                Text(str(entry.checkpoint_id or "—"), no_wrap=True),
                "—",
                "—",
                "—",
                Text(f"damaged: {entry.reason}", style="red"),
            )
            continue
        grid.add_row(
            str(entry.step),
            Text(str(entry.checkpoint_id), no_wrap=True),
            format_time(entry.created_at, precise=False),
            _node(entry.current_node),
            format_size(entry.size),
            _metadata(entry),
        )
    console = stdout_console()
    console.print(grid)
    if next_before is not None:
        size = [] if limit == DEFAULT_PAGE else ["--limit", str(limit)]
        hint = command_line(settings, "history", trace, *size, "--before", str(next_before))
        console.print(f"older: {hint}", markup=False)
    return _damage_exit(settings, damaged)


# -- show ------------------------------------------------------------------------------


def show(
    ctx: typer.Context,
    checkpoint_id: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT_ID", help="The checkpoint's id, or the start of it (unique)."
        ),
    ],
    type_: TypeOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Show one checkpoint: its header, how it is stored, and its decoded state."""
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    wanted = parse_checkpoint_ref(checkpoint_id, "'CHECKPOINT_ID'")
    run(lambda: _show(settings, wanted, import_state_type(type_)), debug=settings.debug)


async def _show(settings: Settings, wanted: CheckpointRef, state_type: Any) -> None:
    codec = make_codec(settings, state_type, allow_unencrypted=True)
    async with opened_store(settings.store, "read") as store:
        blob, checkpoint = await decode(store, settings, codec, wanted)
        writes = await TypedCheckpointStore(store, codec).load_writes(blob.checkpoint_id)
    envelope = open_envelope(blob).header
    encoding = {
        "format": envelope.body_format,
        "compression": envelope.compression,
        "key_id": envelope.key_id,
        "delta_of": None if envelope.base_id is None else str(envelope.base_id),
    }
    state = to_plain(checkpoint.state)
    asked = _waiting(checkpoint.cursor)
    if settings.json:
        emit_json(
            {
                "checkpoint": info_json(blob.info()),
                "encoding": encoding,
                "interrupt": asked,
                "cursor": to_plain(checkpoint.cursor),
                "pending_writes": pending_json(writes),
                "state": state,
            }
        )
        return
    header = info_json(blob.info())
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in header.items():
        if name == "current_node":
            name, value = "next node", _node(value)
        elif name == "metadata":
            value = _metadata(blob.info()) or "—"
        elif name == "size":
            value = f"{value} bytes ({format_size(value)})"
        grid.add_row(name.replace("_", " "), Text(str(value)))
    for name, value in cursor_rows(checkpoint.cursor):
        grid.add_row(name, Text(value))
    stored = (
        f"{envelope.body_format}"
        if envelope.base_id is None
        else f"changes to checkpoint {envelope.base_id}"
    )
    stored += f", compression {envelope.compression or 'none'}, "
    stored += f"encrypted with key {envelope.key_id!r}" if envelope.key_id else "not encrypted"
    grid.add_row("stored as", stored)
    if asked is not None:
        payload = json.dumps(asked["payload"], ensure_ascii=False, default=str)
        grid.add_row(
            "waiting",
            Text(f"interrupt() in {asked['task']!r}: {payload} (resume with value=... answers)"),
        )
    console = stdout_console()
    console.print(grid)
    if writes:
        console.print(pending_table(writes))
    console.print(Text("state", style="bold"))
    console.print_json(json.dumps(state, ensure_ascii=False))


def _waiting(cursor: Any) -> dict[str, Any] | None:
    """The interrupt() a checkpoint waits on, as JSON: its task, node, payload, answers."""
    try:
        asked = waiting(read(cursor))
    except ValueError:  # not the runner's cursor: nothing to say about it
        return None
    if asked is None:
        return None
    return {
        "task": asked.task,
        "node": asked.node,
        "payload": asked.payload,
        "answers": asked.answers,
    }


async def decode(
    store: BlobCheckpointStore,
    settings: Settings,
    codec: SerdeCheckpointCodec[Any],
    ref: CheckpointRef,
) -> tuple[CheckpointBlob, Checkpoint[Any]]:
    """Load and decode one checkpoint, named by its id or the start of it, without a graph check.

    Exits 4 if it is not there; an encrypted checkpoint without ``--keyring`` is an
    error (exit 1) that names its key id.
    """
    wanted = await resolve_checkpoint(store, ref, settings.store)
    blob = await store.load(wanted)
    if blob is None:
        fail(f"no checkpoint {wanted} in {shown(settings.store)}", ExitCode.NOT_FOUND)
    try:
        return blob, await TypedCheckpointStore(store, codec).decode(blob, None)
    except CodecError:
        key_id = codec.key_id_of(blob)
        if key_id is not None and codec.encryption is None:
            fail(
                f"checkpoint {wanted} is encrypted with key {key_id!r}: pass --keyring FILE "
                f"(or set FLOWPOINT_KEYRING) with a key ring that holds it"
            )
        raise


# -- diff ------------------------------------------------------------------------------


def diff(
    ctx: typer.Context,
    old_id: Annotated[
        str, typer.Argument(metavar="ID1", help="The checkpoint to compare from (its id's start).")
    ],
    new_id: Annotated[
        str, typer.Argument(metavar="ID2", help="The checkpoint to compare to (its id's start).")
    ],
    type_: TypeOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Show what changed in the state from checkpoint ID1 to checkpoint ID2.

    Values are compared as JSON: dicts key by key, lists index by index. The exit
    code is 0 whether or not anything changed.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    old = parse_checkpoint_ref(old_id, "'ID1'")
    new = parse_checkpoint_ref(new_id, "'ID2'")
    run(lambda: _diff(settings, old, new, import_state_type(type_)), debug=settings.debug)


def _side(info: CheckpointInfo) -> dict[str, Any]:
    return {
        "checkpoint_id": str(info.checkpoint_id),
        "trace_id": info.trace_id,
        "step": info.step,
        "current_node": info.current_node,
        "graph_hash": format_hash(info.graph_hash),
        "created_at": format_time(info.created_at),
    }


async def _diff(
    settings: Settings, old: CheckpointRef, new: CheckpointRef, state_type: Any
) -> None:
    codec = make_codec(settings, state_type, allow_unencrypted=True)
    async with opened_store(settings.store, "read") as store:
        old_blob, old_checkpoint = await decode(store, settings, codec, old)
        new_blob, new_checkpoint = await decode(store, settings, codec, new)
    changes = diff_values(to_plain(old_checkpoint.state), to_plain(new_checkpoint.state))
    if settings.json:
        emit_json(
            {
                "from": _side(old_blob.info()),
                "to": _side(new_blob.info()),
                "changes": [change.as_json() for change in changes],
            }
        )
        return
    console = stdout_console()
    for label, info in (("from", old_blob.info()), ("to  ", new_blob.info())):
        console.print(
            f"{label} {info.checkpoint_id}  trace {info.trace_id!r} step {info.step}, "
            f"next {_node(info.current_node)}, graph {format_hash(info.graph_hash)}",
            markup=False,
        )
    if not changes:
        console.print("no changes in the state")
        return
    style = {"added": "green", "removed": "red", "changed": "yellow"}
    for change in changes:
        console.print(Text(change.describe(), style=style[change.kind]))
