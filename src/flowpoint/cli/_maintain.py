"""``prune`` and ``delete``: delete old checkpoints by rule, or one checkpoint by id.

Both delete through the typed facade, so a checkpoint stored as changes to one
that goes is first stored whole: what stays keeps its state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from flowpoint.cli._common import (
    CheckpointRef,
    DebugOption,
    JsonOption,
    KeyringOption,
    Settings,
    StoreOption,
    make_codec,
    opened_store,
    parse_checkpoint_ref,
    require_trace,
    resolve_checkpoint,
    shown,
    whole_trace,
)
from flowpoint.cli._output import (
    ExitCode,
    emit_json,
    fail,
    format_time,
    info_json,
    run,
    stdout_console,
    table,
)
from flowpoint.errors import CodecError
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore, PruneRule
from flowpoint.typed import TypedCheckpointStore

__all__ = ["delete", "parse_duration", "prune"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])\Z")


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` as a timedelta; ``ValueError`` otherwise.

    >>> parse_duration("7d")
    datetime.timedelta(days=7)
    """
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(
            f"expected a whole number and a unit (s, m, h, d or w), such as 7d, not {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def prune(
    ctx: typer.Context,
    trace: Annotated[
        str | None, typer.Argument(metavar="TRACE", help="The trace to prune.", show_default=False)
    ] = None,
    every_trace: Annotated[bool, typer.Option("--all", help="Prune every trace.")] = False,
    keep_latest: Annotated[
        int | None,
        typer.Option(
            "--keep-latest",
            min=0,
            metavar="N",
            help="Keep the newest N checkpoints of each trace.",
            show_default=False,
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete only checkpoints older than AGE: 30s, 15m, 12h, 7d, 2w.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Delete old checkpoints of TRACE (or of every trace, with --all).

    A checkpoint is deleted when it meets every rule given: it is not among the
    newest --keep-latest N, and it is older than --older-than. At least one rule is
    required. Prints how many checkpoints each trace lost (or would lose).
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    if (trace is None) == (not every_trace):
        raise typer.BadParameter("give a TRACE or --all (not both)", param_hint="'TRACE'")
    if keep_latest is None and older_than is None:
        raise typer.BadParameter(
            "give --keep-latest N, --older-than AGE, or both", param_hint="'--keep-latest'"
        )
    try:
        age = None if older_than is None else parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--older-than'") from None
    rule = PruneRule(keep_latest, age, now=datetime.now(UTC))
    run(lambda: _prune(settings, trace, rule, dry_run), debug=settings.debug)


async def _prune(settings: Settings, only: str | None, rule: PruneRule, dry_run: bool) -> None:
    rows: list[dict[str, Any]] = []
    async with opened_store(settings.store, "read" if dry_run else "change") as store:
        facade = _deleter(store, settings)
        if only is not None:
            await require_trace(store, only, settings.store)
        names = [TraceId(only)] if only is not None else sorted(await store.traces())
        for trace in names:
            infos = await whole_trace(store, trace)
            doomed = rule.doomed(infos)
            # Through the typed facade: what depends on a doomed checkpoint is made whole.
            if dry_run or not doomed:
                deleted = len(doomed)
            else:
                with _keyring_advice(settings):
                    ids = [info.checkpoint_id for info in doomed]
                    deleted = await facade.delete_checkpoints(trace, ids)
            row: dict[str, Any] = {
                "trace_id": trace,
                "checkpoints": len(infos),
                "deleted": deleted,
                "kept": len(infos) - deleted,
            }
            if dry_run:
                row["would_delete"] = [info_json(info) for info in doomed]
            rows.append(row)
    total = sum(row["deleted"] for row in rows)
    if settings.json:
        emit_json(
            {
                "store": shown(settings.store),
                "dry_run": dry_run,
                "keep_latest": rule.keep_latest,
                "cutoff": None if rule.cutoff is None else format_time(rule.cutoff),
                "deleted": total,
                "traces": rows,
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    grid = table("trace", "checkpoints", verb, "kept")
    for row in rows:
        grid.add_row(
            row["trace_id"], str(row["checkpoints"]), str(row["deleted"]), str(row["kept"])
        )
    console = stdout_console()
    console.print(grid)
    if dry_run:
        for row in rows:
            for info in row["would_delete"]:
                console.print(
                    f"  would delete {info['checkpoint_id']}  {row['trace_id']!r} "
                    f"step {info['step']}  {info['created_at']}",
                    markup=False,
                )
    console.print(
        f"{verb} {total} checkpoint(s) in {len(rows)} trace(s)"
        + (" (dry run: nothing deleted)" if dry_run else ""),
        markup=False,
    )


def _deleter(store: BlobCheckpointStore, settings: Settings) -> TypedCheckpointStore[Any]:
    """The facade that deletes: it stores whole what is stored as changes to what goes.

    Making a checkpoint whole decrypts it in an encrypted store (with ``--keyring``);
    unencrypted checkpoints among encrypted ones are taken as they are.
    """
    return TypedCheckpointStore(store, make_codec(settings, Any, allow_unencrypted=True))


@contextmanager
def _keyring_advice(settings: Settings) -> Iterator[None]:
    """Explain a checkpoint that could not be made whole for want of ``--keyring``."""
    try:
        yield
    except CodecError as exc:
        if settings.keyring is not None:
            raise
        fail(
            f"{exc}. A checkpoint stored as changes to one being deleted is first stored "
            f"whole, which in an encrypted store takes its key: pass --keyring FILE (or set "
            f"FLOWPOINT_KEYRING); stopped before deleting"
        )


# -- delete ----------------------------------------------------------------------------


def delete(
    ctx: typer.Context,
    checkpoint_id: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT_ID",
            help="The checkpoint's id, or the start of it (unique).",
            show_default=False,
        ),
    ],
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Delete one checkpoint; the ones stored as changes to it are first stored whole.

    Exits 4 if there is no such checkpoint. In an encrypted store, storing a
    checkpoint whole takes the key ring (--keyring). Deleting a trace's latest
    checkpoint makes the one below it the latest: a resume starts from there.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    wanted = parse_checkpoint_ref(checkpoint_id, "'CHECKPOINT_ID'")
    run(lambda: _delete(settings, wanted), debug=settings.debug)


async def _delete(settings: Settings, ref: CheckpointRef) -> None:
    async with opened_store(settings.store, "change") as store:
        facade = _deleter(store, settings)
        wanted = await resolve_checkpoint(store, ref, settings.store)
        blob = await store.load(wanted)
        deleted = False
        if blob is not None:
            with _keyring_advice(settings):
                deleted = await facade.delete(wanted)
    if blob is None or not deleted:  # not there, or deleted by another process meanwhile
        fail(f"no checkpoint {wanted} in {shown(settings.store)}", ExitCode.NOT_FOUND)
    info = blob.info()
    if settings.json:
        emit_json({"store": shown(settings.store), "deleted": info_json(info)})
        return
    stdout_console().print(
        f"deleted checkpoint {info.checkpoint_id} (trace {info.trace_id!r}, step {info.step}) "
        f"from {shown(settings.store)}",
        markup=False,
    )
