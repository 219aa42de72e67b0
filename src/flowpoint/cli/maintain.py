"""``prune``: delete old checkpoints by rule, or list what a prune would delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from flowpoint.cli.common import (
    DebugOption,
    JsonOption,
    Settings,
    StoreOption,
    make_codec,
    opened_store,
    require_trace,
    shown,
    whole_trace,
)
from flowpoint.cli.output import emit_json, format_time, info_json, run, stdout_console, table
from flowpoint.ids import TraceId
from flowpoint.stores.base import PruneRule
from flowpoint.typed import TypedCheckpointStore

__all__ = ["parse_duration", "prune"]

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
) -> None:
    """Delete old checkpoints of TRACE (or of every trace, with --all).

    A checkpoint is deleted when it meets every rule given: it is not among the
    newest --keep-latest N, and it is older than --older-than. At least one rule is
    required. Prints how many checkpoints each trace lost (or would lose).
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
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
    async with opened_store(settings.store) as store:
        facade = TypedCheckpointStore(store, make_codec(settings, Any, allow_unencrypted=True))
        if only is not None:
            await require_trace(store, only, settings.store)
        names = [TraceId(only)] if only is not None else sorted(await store.traces())
        for trace in names:
            infos = await whole_trace(store, trace)
            doomed = rule.doomed(infos)
            # Through the typed facade: what depends on a doomed checkpoint is made whole.
            deleted = (
                len(doomed)
                if dry_run or not doomed
                else await facade.delete_checkpoints(trace, [i.checkpoint_id for i in doomed])
            )
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
