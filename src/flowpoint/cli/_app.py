"""``flowpoint``: the command-line entry point.

The typer app and its global options live here; each command lives in the module
of its concern (:mod:`~flowpoint.cli._inspect`, :mod:`~flowpoint.cli._verify`,
:mod:`~flowpoint.cli._maintain`, :mod:`~flowpoint.cli._transfer`). Global options
may be given before the command (``flowpoint --store URL traces``) or after it
(``flowpoint traces --store URL``); after it wins.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from flowpoint import __version__
from flowpoint.cli import (
    _graph,
    _import_langgraph,
    _inspect,
    _maintain,
    _migrate,
    _queue,
    _transfer,
    _verify,
)
from flowpoint.cli._common import PROGRAM, DebugOption, Settings, StoreOption
from flowpoint.cli._demo import run_demo
from flowpoint.cli._output import EXIT_CODES_HELP, ExitCode, print_error, run
from flowpoint.stores._registry import DEFAULT_STORE_URL


class _Flowpoint(TyperGroup):
    """The command group, reporting usage errors as one line like every other error.

    Help is plain text, so that a flag reads as a flag (``--json``), not as an
    option taking a value. However it is started (``flowpoint``, ``python -m
    flowpoint``), the program calls itself ``flowpoint``.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; exit with its code (see :class:`~flowpoint.cli._output.ExitCode`)."""
        prog_name = PROGRAM if prog_name in (None, "root") else prog_name
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.Abort:
            _exit_with_error("aborted", ExitCode.ERROR)
        except typer.TyperException as exc:  # a usage error: typer's own, or a command's
            _exit_with_error(_usage_message(exc, prog_name), getattr(exc, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


def _usage_message(exc: typer.TyperException, prog_name: str) -> str:
    message = " ".join(exc.format_message().split()).rstrip(".")
    context = getattr(exc, "ctx", None)
    path = prog_name if context is None else context.command_path
    return f"{message} (see '{path} --help')"


def _exit_with_error(message: str, code: int) -> NoReturn:
    print_error(message)
    sys.exit(code)


app = typer.Typer(
    name=PROGRAM,
    cls=_Flowpoint,
    help="Durable graph workflows: typed, verified checkpoints.",
    epilog=EXIT_CODES_HELP,
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
    if ctx.invoked_subcommand is None:  # no command: the help, which lists them
        typer.echo(ctx.get_help())
        raise typer.Exit(ExitCode.USAGE)


@app.command()
def demo(ctx: typer.Context, store: StoreOption = None, debug: DebugOption = False) -> None:
    """Run a research agent that pauses for approval, resume it, and refuse a changed graph."""
    settings = Settings.of(ctx, store=store, debug=debug)
    run(lambda: run_demo(settings.store), debug=settings.debug)


app.command("traces")(_inspect.traces)
app.command("history")(_inspect.history)
app.command("show")(_inspect.show)
app.command("diff")(_inspect.diff)
app.command("verify")(_verify.verify)
app.command("prune")(_maintain.prune)
app.command("delete")(_maintain.delete)
app.command("copy")(_transfer.copy)
app.command("export")(_transfer.export)
app.command("import")(_transfer.import_)
app.command("graph")(_graph.graph)
app.command("import-langgraph")(_import_langgraph.import_langgraph)
app.command("migrate")(_migrate.migrate)
app.command("check")(_migrate.check)
app.command("worker")(_queue.worker)
app.command("runs")(_queue.runs)


def main() -> None:
    """Run the ``flowpoint`` command."""
    app()
