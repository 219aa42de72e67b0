"""``flowpoint``: the command-line entry point.

The typer app and its global options live here; each command lives in the module
of its concern (:mod:`~flowpoint.cli.inspect`, :mod:`~flowpoint.cli.verify`,
:mod:`~flowpoint.cli.maintain`, :mod:`~flowpoint.cli.transfer`). Global options
may be given before the command (``flowpoint --store URL traces``) or after it
(``flowpoint traces --store URL``); after it wins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from flowpoint import CheckpointStoreError, __version__
from flowpoint.cli import inspect, maintain, transfer, verify
from flowpoint.cli.common import Settings, StoreOption
from flowpoint.cli.demo import run_demo
from flowpoint.cli.output import EXIT_CODES_HELP
from flowpoint.stores.registry import DEFAULT_STORE_URL

app = typer.Typer(
    name="flowpoint",
    help="Durable graph workflows: typed, verified checkpoints.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowpoint {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar="FLOWPOINT_STORE",
            metavar="URL",
            help="The store: sqlite:///file.db, file:///dir, postgresql://..., redis://..., s3://...",
        ),
    ] = DEFAULT_STORE_URL,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of an error.")
    ] = False,
    keyring: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            envvar="FLOWPOINT_KEYRING",
            metavar="FILE",
            help='Key ring of an encrypted store: JSON {"primary": "id", "keys": '
            '{"id": "<base64 of 32 bytes>"}}.',
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Durable graph workflows: typed, verified checkpoints."""
    ctx.obj = Settings(store=store, json=as_json, debug=debug, keyring=keyring)


@app.command()
def demo(ctx: typer.Context, store: StoreOption = None) -> None:
    """Run a research agent that pauses for approval, resume it, and refuse a changed graph."""
    url = Settings.of(ctx, store=store).store
    try:
        asyncio.run(run_demo(url))
    except (CheckpointStoreError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


app.command("traces")(inspect.traces)
app.command("history")(inspect.history)
app.command("show")(inspect.show)
app.command("diff")(inspect.diff)
app.command("verify")(verify.verify)
app.command("prune")(maintain.prune)
app.command("copy")(transfer.copy)
app.command("export")(transfer.export)
app.command("import")(transfer.import_)


def main() -> None:
    """Run the ``flowpoint`` command."""
    app()
