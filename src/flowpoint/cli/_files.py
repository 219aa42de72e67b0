"""The files and streams a user names: read within limits, written without harm.

Whatever a path names (a regular file, a directory, a FIFO, ``/dev/zero``, a huge
sparse file) or stdin holds, a command reads a bounded amount before it can tell
the input is wrong, and never replaces what is not a regular file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from flowpoint.cli._output import ExitCode, fail

__all__ = [
    "MAX_KEY_RING_SIZE",
    "ReplayableInput",
    "archive_input",
    "archive_output",
    "file_output",
    "read_limited",
]

MAX_KEY_RING_SIZE = 1024 * 1024
"""A key ring file holds a few keys of 44 characters each; 1 MiB is thousands."""


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The content of ``path``; an error (exit 1) naming ``what`` if it is over ``limit`` bytes.

    A regular file's size is checked before anything is read, so a huge (or
    sparse) file costs nothing; anything else that can be read (a pipe, a FIFO, a
    device such as ``/dev/zero``) is read up to ``limit + 1`` bytes at most.
    Errors name the path, never the content.
    """
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno())
            if stat.S_ISREG(size.st_mode) and size.st_size > limit:
                _too_large(path, limit, what)
            data = file.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    if len(data) > limit:
        _too_large(path, limit, what)
    return data


def _too_large(path: Path, limit: int, what: str) -> None:
    fail(f"{what} {path} is larger than {limit} bytes: is it the right file?")


class _Recording:
    """Reads from ``source``, keeping a copy of every byte read in ``copy``."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        self._source = source
        self._copy = copy

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._source.read(size)
        self._copy.write(chunk)
        return chunk


class ReplayableInput:
    """An input read twice: once to check it whole, then again to act on it.

    A regular file is read again from its start. Anything else (stdin, a pipe, a
    FIFO, a device) cannot be, so the first pass keeps a copy of what it reads in
    a temporary file: only as much as was read, so an input that is wrong from
    its first bytes stops the first pass at once.
    """

    def __init__(self, stream: IO[bytes], spool: IO[bytes] | None) -> None:
        self._stream = stream
        self._spool = spool

    def first_pass(self) -> IO[bytes] | _Recording:
        """The input from its start, for the check."""
        if self._spool is None:
            return self._stream
        return _Recording(self._stream, self._spool)

    def second_pass(self) -> IO[bytes]:
        """The input from its start again: what the first pass read."""
        stream = self._stream if self._spool is None else self._spool
        stream.seek(0)
        return stream


@contextlib.contextmanager
def archive_input(source: str) -> Iterator[ReplayableInput]:
    """The archive at ``source``, or on stdin for ``-`` (refused if stdin is a terminal)."""
    if source == "-":
        if sys.stdin.isatty():
            fail(
                "stdin is a terminal: pipe an archive in (flowpoint import - < FILE) or give FILE",
                ExitCode.USAGE,
            )
        stream: IO[bytes] = sys.stdin.buffer
        regular = False
    else:
        try:
            # A FIFO blocks here until its writer opens it, as it does for any reader.
            stream = open(source, "rb")  # noqa: SIM115 - closed below, after the yield
            regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
        except OSError as exc:
            fail(f"cannot read the archive {source}: {exc.strerror or exc}")
    with contextlib.ExitStack() as cleanup:
        if source != "-":
            cleanup.enter_context(stream)
        spool = None if regular else cleanup.enter_context(tempfile.TemporaryFile())
        yield ReplayableInput(stream, spool)


@contextlib.contextmanager
def archive_output(target: str) -> Iterator[IO[bytes]]:
    """Where an archive goes: stdout for ``-``, else the file ``target`` (see :func:`file_output`).

    Stdout is refused when it is a terminal, where an archive would be noise.
    """
    if target == "-":
        if sys.stdout.isatty():
            fail(
                "stdout is a terminal: redirect it (flowpoint export - > FILE) or give FILE",
                ExitCode.USAGE,
            )
        yield sys.stdout.buffer
        return
    with file_output(target, "the archive") as file:
        yield file


@contextlib.contextmanager
def file_output(target: str, what: str) -> Iterator[IO[bytes]]:
    """The file ``target`` (``what`` names it in errors), written safely.

    A regular file (or a new one) is replaced only once what is written is
    complete and on disk; a FIFO or a device (``/dev/null``, ``/dev/stdout``) is
    written in place, never replaced; a directory is an error.
    """
    path = Path(os.path.realpath(target))  # through a symbolic link, to what it names
    try:
        mode: int | None = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        fail(f"cannot write {what} {target}: it is a directory")
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as special:
            yield special
        return
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
