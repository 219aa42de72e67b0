"""``flowpoint``: the command-line entry point."""

from __future__ import annotations

import asyncio

import typer

from flowpoint import CheckpointStoreError, __version__
from flowpoint.cli.demo import run_demo
from flowpoint.stores.registry import DEFAULT_STORE_URL

app = typer.Typer(
    name="flowpoint",
    help="Durable graph workflows: typed, verified checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowpoint {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Durable graph workflows: typed, verified checkpoints."""


@app.command()
def demo(
    store: str = typer.Option(
        DEFAULT_STORE_URL, "--store", envvar="FLOWPOINT_STORE", help="Store URL."
    ),
) -> None:
    """Run a research agent that pauses for approval, resume it, and refuse a changed graph."""
    try:
        asyncio.run(run_demo(store))
    except (CheckpointStoreError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def main() -> None:
    """Run the ``flowpoint`` command."""
    app()
