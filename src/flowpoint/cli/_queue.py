"""``worker`` and ``runs``: serve a run queue's runs, and look at where they stand."""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from flowpoint.cli._common import (
    DebugOption,
    JsonOption,
    KeyringOption,
    Settings,
    StoreOption,
    load_keyring,
    local_path,
    shown,
)
from flowpoint.cli._graph import load_graph
from flowpoint.cli._output import (
    emit_json,
    fail,
    format_hash,
    format_time,
    run,
    stdout_console,
    table,
)
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.queue import QueuedRun, RunQueue, RunStatus, Worker

__all__ = ["runs", "worker"]

_ERROR_SHOWN = 60
"""Characters of a run's error the table shows (``--json`` gives it whole)."""


def worker(
    ctx: typer.Context,
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="MODULE:ATTR...",
            help="The graphs to serve: each a Graph, BuiltGraph or Runner (whose interrupts "
            "apply), such as myapp.flows:graph.",
            show_default=False,
        ),
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, metavar="N", help="Runs at once.")
    ] = 8,
    lease: Annotated[
        float,
        typer.Option(
            "--lease", min=0.1, metavar="SECONDS", help="How long a claim lasts unrenewed."
        ),
    ] = 30.0,
    store: StoreOption = None,
    keyring: KeyringOption = None,
    debug: DebugOption = False,
) -> None:
    """Serve the runs of these graphs from the queue in --store until SIGTERM.

    The first SIGTERM (or Ctrl-C) lets the runs finish their node, save and release
    their lease; a second one stops at once. Claims, lost leases and settled runs
    are logged on stderr. With --keyring (or FLOWPOINT_KEYRING) the runs are read
    and saved encrypted, as by a queue opened with that key ring.
    """
    settings = Settings.of(ctx, store=store, debug=debug, keyring=keyring)
    run(lambda: _worker(settings, targets, concurrency, lease), debug=settings.debug)


def _worker(settings: Settings, targets: list[str], concurrency: int, lease: float) -> None:
    loaded = [load_graph(target) for target in targets]
    # The key ring is read before anything starts: a bad file is one line and exit 1.
    ring = None if settings.keyring is None else load_keyring(settings.keyring)
    codec = None if ring is None else SerdeCheckpointCodec(encryption=ring)
    queue = RunQueue.open(settings.store, codec=codec)
    serving = Worker(
        queue,
        graphs=[graph for graph, _, _ in loaded],
        concurrency=concurrency,
        lease=timedelta(seconds=lease),
        interrupt_before=set().union(*(before for _, before, _ in loaded)),
        interrupt_after=set().union(*(after for _, _, after in loaded)),
    )
    _log_events()
    names = ", ".join(f"{graph.name} ({format_hash(graph.hash_u64())})" for graph, _, _ in loaded)
    encrypted = "" if ring is None else f", encrypting with key {ring.primary!r}"
    typer.echo(
        f"{serving.worker_id} serves {names} from {shown(settings.store)}{encrypted}", err=True
    )
    serving.run()


def _log_events() -> None:
    """Show the worker's events on stderr, one line each."""
    logger = logging.getLogger("flowpoint.worker")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def runs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only runs of this status: " + ", ".join(s.value for s in RunStatus) + ".",
            show_default=False,
        ),
    ] = None,
    stranded: Annotated[
        bool,
        typer.Option("--stranded", help="Only runs waiting for a graph no live worker serves."),
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, metavar="N", help="Runs shown.")] = 100,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List the queue's runs, the next to be claimed first: status, graph, attempts, owner."""
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    if stranded and status is not None:
        raise typer.BadParameter("give --status or --stranded, not both", param_hint="--stranded")
    run(lambda: _runs(settings, status, stranded, limit), debug=settings.debug)


async def _runs(settings: Settings, status: str | None, stranded: bool, limit: int) -> None:
    path = local_path(settings.store)
    if path is not None and not os.path.exists(path):  # noqa: ASYNC240 - a local stat
        fail(f"no store at {shown(settings.store)}: {path} does not exist")
    async with RunQueue.open(settings.store) as queue:
        found = await (queue.stranded(limit) if stranded else queue.runs(status, limit))
    if settings.json:
        emit_json({"store": shown(settings.store), "runs": [_as_json(one) for one in found]})
        return
    what = "stranded run(s)" if stranded else f"{status} run(s)" if status else "run(s)"
    grid = table(
        "trace",
        "status",
        "graph",
        "priority",
        "attempts",
        "epoch",
        "owner",
        "lease until (UTC)",
        "updated (UTC)",
        "error",
        title=f"{len(found)} {what} in {shown(settings.store)}",
    )
    for one in found:
        error = one.error or ""
        grid.add_row(
            one.trace_id,
            one.status.value,
            f"{one.graph_name} {format_hash(one.graph_hash)}",
            str(one.priority),
            f"{one.attempts}/{one.max_attempts}",
            str(one.epoch),
            one.owner or "",
            "" if one.lease_expires_at is None else format_time(one.lease_expires_at),
            format_time(one.updated_at, precise=False),
            error if len(error) <= _ERROR_SHOWN else f"{error[: _ERROR_SHOWN - 1]}…",
        )
    stdout_console().print(grid)


def _as_json(one: QueuedRun) -> dict[str, Any]:
    return {
        "trace_id": one.trace_id,
        "status": one.status.value,
        "graph": one.graph_name,
        "graph_hash": format_hash(one.graph_hash),
        "priority": one.priority,
        "attempts": one.attempts,
        "max_attempts": one.max_attempts,
        "epoch": one.epoch,
        "owner": one.owner,
        "lease_expires_at": None
        if one.lease_expires_at is None
        else format_time(one.lease_expires_at),
        "error": one.error,
        "dedup_key": one.dedup_key,
        "submitted_at": format_time(one.submitted_at),
        "updated_at": format_time(one.updated_at),
    }
