"""``import-langgraph``: move threads from LangGraph's SQLite and PostgreSQL savers.

LangGraph is imported when the command runs, never when the CLI starts: the
command needs the ``langgraph`` extra, the other commands do not.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flowpoint.cli._common import DebugOption, JsonOption, Settings, load_keyring, shown
from flowpoint.cli._output import emit_json, print_warning, progressbar, run, stdout_console

__all__ = ["import_langgraph"]


def import_langgraph(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="LangGraph's database: sqlite:///file.db (or a file path) or postgresql://...",
        ),
    ],
    into: Annotated[
        str,
        typer.Option("--into", metavar="DEST", help="The flowpoint store to import into."),
    ],
    threads: Annotated[
        list[str] | None,
        typer.Option(
            "--thread",
            metavar="THREAD",
            help="Import only this thread (repeatable).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Import the threads of a LangGraph SqliteSaver or PostgresSaver database into DEST.

    Every checkpoint (with its metadata and pending writes) is saved as
    flowpoint.langgraph.FlowpointSaver saves it, read back and compared. Safe to run
    again: checkpoints imported before are compared and skipped. With --keyring the
    imported checkpoints are encrypted. Needs pip install 'flowpoint[langgraph]'.
    """
    settings = Settings.of(ctx, json=as_json, debug=debug)
    run(lambda: _import(settings, source, into, threads), debug=settings.debug)


async def _import(settings: Settings, source: str, into: str, threads: list[str] | None) -> None:
    from flowpoint.langgraph import FlowpointSaver
    from flowpoint.langgraph._import import import_threads
    from flowpoint.langgraph._sources import open_source

    ring = None if settings.keyring is None else load_keyring(settings.keyring)
    saver = FlowpointSaver.from_url(into, encryption=ring)
    try:
        with (
            open_source(source, saver.registry) as reading,
            progressbar(0, "importing", enabled=not settings.json) as bar,
        ):
            report = await import_threads(reading, saver, threads=threads, done=bar.advance)
    finally:
        await saver.aclose()
    if report.unregistered:
        print_warning(
            f"the imported values hold classes the saver does not load until the application "
            f"registers them (FlowpointSaver(..., allowed_types=[...])): "
            f"{', '.join(sorted(report.unregistered))}"
        )
    if settings.json:
        emit_json({"source": shown(source), "destination": shown(into), **report.as_json()})
        return
    stdout_console().print(
        f"imported {report.checkpoints} checkpoint(s) and {report.writes} write(s) of "
        f"{report.threads} thread(s), verified {report.verified} (read back and compared), "
        f"skipped {report.skipped} (already there, identical)",
        markup=False,
    )
