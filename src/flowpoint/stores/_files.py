"""The file system steps the file store is built of: durable creation, and locks.

Files are written as a database would: to a temp file in the same directory, then
fsync, then published by one atomic step (a hard link or a rename), then the
directory fsynced. The locks are ``flock`` advisory locks, which the kernel
releases when the process that holds one dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from typing import IO

__all__ = [
    "TEMP_PREFIX",
    "create_temp",
    "ensure_dir",
    "fsync",
    "fsync_dir",
    "locked",
    "locked_dir",
    "names",
    "replace_symlink",
]

TEMP_PREFIX = ".tmp-"
"""How every temp file's name starts: listings skip such names."""
_MKDIR_ATTEMPTS = 8
# On macOS fsync() leaves the data in the drive's cache; F_FULLFSYNC flushes it.
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)


@contextlib.contextmanager
def locked_dir(path: str) -> Iterator[None]:
    """Hold the advisory lock of a directory (an ``ids/`` shard) while the block runs.

    The kernel releases it if the process dies, so a save killed while it held the
    lock leaves it free.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: str) -> Iterator[IO[bytes] | None]:
    """Open the record at ``path`` and hold its lock; ``None`` if there is no record.

    Whoever removes or replaces a record file (delete, delete_trace, rewrite) holds
    the lock of the file that is at its path, so none of them acts on a file another
    has just removed or replaced; readers never wait for it. Saves only create
    names, never replace them. Closing the file releases the lock.
    """
    while True:
        try:
            file = open(path, "rb")  # noqa: SIM115 - kept open while the caller holds the lock
        except FileNotFoundError:
            yield None
            return
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            opened = os.fstat(file.fileno())
            try:
                current = os.stat(path)
            except FileNotFoundError:
                file.close()
                yield None
                return
        except BaseException:
            file.close()
            raise
        if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            break
        file.close()  # replaced while we waited for the lock: lock the new file
    with file:
        yield file


def replace_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` in one step: a new symlink renamed over it."""
    temp = f"{link}{TEMP_PREFIX}{uuid.uuid4().hex}"
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def names(directory: str) -> list[str]:
    """The names in a directory; an absent directory is empty."""
    try:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries]
    except FileNotFoundError:
        return []


def create_temp(trace_dir: str, step: int) -> tuple[str, int]:
    """Create a fresh temp file in the trace directory, making the directory if needed."""
    for attempt in range(_MKDIR_ATTEMPTS):
        ensure_dir(trace_dir)
        temp = os.path.join(trace_dir, f"{TEMP_PREFIX}{step}-{uuid.uuid4().hex}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            # delete_trace removed the (empty) directory between our mkdir and open.
            if attempt == _MKDIR_ATTEMPTS - 1:
                raise
            continue
        return temp, fd
    raise AssertionError("unreachable")


def ensure_dir(path: str) -> None:
    """Make ``path`` and its missing parents, fsyncing each parent that gained an entry.

    Safe against concurrent creators; a non-directory in the way raises an ``OSError``.
    """
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        ensure_dir(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        if os.path.isdir(path):
            return  # made by a concurrent writer
        raise
    fsync_dir(parent)


def fsync(fd: int) -> None:
    if _FULLFSYNC is not None:
        fcntl.fcntl(fd, _FULLFSYNC)
    else:
        os.fsync(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fsync(fd)
    finally:
        os.close(fd)
