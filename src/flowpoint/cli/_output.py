"""How the commands speak: exit codes, one-line errors, tables, JSON, progress bars.

Human output goes to stdout through rich; ``--json`` replaces it with exactly one
JSON document on stdout. Errors are one line, ``error: ...``, on stderr (with the
traceback under ``--debug``); progress bars go to stderr, and only on a terminal.
"""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO, cast

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from flowpoint.blob import CheckpointInfo
from flowpoint.errors import CheckpointStoreError, CorruptCheckpoint, InvalidTraceId

__all__ = [
    "EXIT_CODES_HELP",
    "CliError",
    "ExitCode",
    "Progressbar",
    "emit_json",
    "exit_code_of",
    "fail",
    "format_hash",
    "format_size",
    "format_time",
    "info_json",
    "print_error",
    "print_warning",
    "progressbar",
    "run",
    "sorted_metadata",
    "stderr_console",
    "stdout_console",
    "table",
    "to_plain",
]


class ExitCode(enum.IntEnum):
    """What ``flowpoint`` exits with; scripts may rely on these."""

    OK = 0
    ERROR = 1
    """A store failed, a conflict, or bad input (an unknown URL scheme, a missing key,
    a store URL naming something that is not a flowpoint store)."""
    USAGE = 2
    """The command line itself was wrong (typer's own usage errors)."""
    CORRUPT = 3
    """Corruption found: by ``verify``, or any command that met a corrupt checkpoint."""
    NOT_FOUND = 4
    """An unknown trace or checkpoint."""


EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 error (store failure, conflict, bad input such as an "
    "unknown URL scheme, a missing key or a store URL naming something that is not a "
    "flowpoint store); 2 usage error; 3 corruption found; "
    "4 trace or checkpoint not found."
)


class CliError(Exception):
    """An error a command reports as one line, exiting with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: ExitCode = ExitCode.ERROR) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit ``code``."""
    raise CliError(message, code)


class _TrimmedLines(io.TextIOBase):
    """Passes text on to ``target`` with the spaces that pad each line cut off.

    Tables pad every line to their width; piped into a file, a pager or ``grep``,
    those spaces are only noise.
    """

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._target.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._target.write(self._pending)
            self._pending = ""
        self._target.flush()


def stdout_console() -> Console:
    """A console for the command's output, on the ``sys.stdout`` of the moment.

    On a terminal, tables fit its width. Piped, they keep their natural width (up to
    200 columns, or ``$COLUMNS``) rather than being cut to 80, without trailing spaces.
    """
    console = Console(highlight=False)
    if console.is_terminal:
        return console
    width = None if "COLUMNS" in os.environ else 200
    trimmed = cast(TextIO, _TrimmedLines(sys.stdout))  # a text stream, as Console wants
    return Console(highlight=False, file=trimmed, width=width)


def table(*headers: str, title: str | None = None) -> Table:
    """A table in the house style: a rule under the headers, no outer border."""
    grid = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left"
    )
    for header in headers:
        grid.add_column(header)
    return grid


def stderr_console() -> Console:
    """A console on stderr, for errors and progress bars."""
    return Console(stderr=True, highlight=False)


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code an exception stands for (see :class:`ExitCode`)."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, CorruptCheckpoint):
        return ExitCode.CORRUPT
    # Conflicts, store failures, codec errors, bad URLs, missing drivers, and bugs.
    return ExitCode.ERROR


# user:password@ in any URL an error message quotes (a store URL, a driver's DSN).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    if isinstance(exc, CliError | CheckpointStoreError | ValueError | ImportError | OSError):
        if isinstance(exc, InvalidTraceId):
            return f"invalid trace id: {text}"
        return text
    # Not an error flowpoint describes itself: name its type, so a bug reads as one.
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


def _route_library_logs(debug: bool) -> None:
    """Show drivers' log records (a pool's retries...) only under ``--debug``.

    Without it, a failure is the one ``error:`` line, not a page of warnings that
    Python's last-resort handler would print. A host that configured logging
    itself (an embedding application, pytest) keeps its configuration.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    if debug:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    else:
        root.addHandler(logging.NullHandler())


def run(
    work: Callable[[], Coroutine[Any, Any, ExitCode | None] | ExitCode | None], *, debug: bool
) -> None:
    """Run a command's work (a coroutine, or a function without one); give its exit code.

    Any exception becomes one ``error: ...`` line on stderr (plus the traceback
    when ``debug``) and the exit code :func:`exit_code_of` gives. A command that
    returns a non-zero :class:`ExitCode` (``verify`` finding damage) exits with it.
    Work without a coroutine runs outside any event loop (``graph`` imports a
    module that may start one of its own).
    """
    _route_library_logs(debug)
    try:
        done = work()
        code = asyncio.run(done) if isinstance(done, Coroutine) else done
    except (typer.TyperException, typer.Exit, typer.Abort):
        raise  # usage errors (exit 2) and explicit exits: the app reports them
    except KeyboardInterrupt:
        print_error("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        print_error(_one_line(exc))
        raise typer.Exit(exit_code_of(exc)) from None
    if code:
        raise typer.Exit(code)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr as one line, however long."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def print_warning(message: str) -> None:
    """Print ``warning: message`` on stderr as one line: something skipped, the run goes on."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def emit_json(document: object, *, err: bool = False) -> None:
    """Print ``document`` as the command's one JSON document (two-space indent).

    ``err`` sends it to stderr, for commands whose stdout carries data (``export -``).
    """
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False), err=err)


def format_hash(graph_hash: int) -> str:
    """A graph hash as flowpoint prints them everywhere: ``0x`` and 16 hex digits."""
    return f"0x{graph_hash:016x}"


def format_time(moment: datetime, *, precise: bool = True) -> str:
    """``moment`` in ISO 8601, UTC, ending in ``Z`` (to the second unless ``precise``)."""
    utc = moment.astimezone(UTC)
    if not precise:
        utc = utc.replace(microsecond=0)
    return utc.isoformat().replace("+00:00", "Z")


def format_size(size: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def sorted_metadata(info: CheckpointInfo) -> dict[str, Any]:
    """The header's metadata sorted by key: backends keep keys in different orders."""
    return dict(sorted(info.metadata.items()))


def info_json(info: CheckpointInfo) -> dict[str, Any]:
    """A checkpoint header as JSON-ready values, in a fixed key order (metadata sorted too)."""
    return {
        "checkpoint_id": str(info.checkpoint_id),
        "trace_id": info.trace_id,
        "step": info.step,
        "parent_id": None if info.parent_id is None else str(info.parent_id),
        "graph_hash": format_hash(info.graph_hash),
        "created_at": format_time(info.created_at),
        "current_node": info.current_node,
        "metadata": sorted_metadata(info),
        "size": info.size,
    }


def _to_plain_hook(value: Any) -> Any:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if pydantic is not None and isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
        return str(value)  # masked: an inspection tool does not reveal secrets
    raise TypeError(f"cannot show a value of type {type(value).__qualname__}")


def to_plain(value: object) -> Any:
    """``value`` (a decoded state) as JSON-like builtins.

    Dataclasses, structs and pydantic models become dicts; datetimes ISO strings;
    bytes base64; UUIDs and decimals strings; dict keys strings. pydantic secrets
    stay masked.
    """
    return msgspec.to_builtins(value, enc_hook=_to_plain_hook, str_keys=True)


class Progressbar:
    """A progress bar on stderr, or nothing when stderr is not a terminal or in JSON mode."""

    def __init__(self, progress: Progress | None, total: int, description: str) -> None:
        self._progress = progress
        self._task = None if progress is None else progress.add_task(description, total=total)

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more items done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)


@contextmanager
def progressbar(
    total: int, description: str, *, enabled: bool, console: Console | None = None
) -> Iterator[Progressbar]:
    """A :class:`Progressbar` for ``total`` items, shown only if ``enabled`` and on a TTY."""
    console = console or stderr_console()
    if not enabled or not console.is_terminal:
        yield Progressbar(None, total, description)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield Progressbar(progress, total, description)
