"""What the command line reads from paths and stdin, and writes to paths: always bounded.

Each hostile input (``/dev/zero``, a FIFO fed forever, a huge sparse file, a
directory, a terminal) gets a one-line error within seconds. The commands run as
subprocesses under a 1 GiB address-space limit and a 256 MiB file-size limit, so a
command that reads without bound fails here instead of exhausting the machine.
"""

from __future__ import annotations

import io
import os
import pty
import resource
import stat
import subprocess
import sys
import threading
import tracemalloc
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from flowpoint.cli._archive import MAGIC, ArchiveError, ArchiveWriter, scan_archive
from tests.cli.conftest import Seeded, blobs_of, flowpoint_bytes, one_line_error, sqlite_url

LIMIT = 1 << 30
"""The address space a command may use here: far more than any bounded read takes."""


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))


def bounded(
    *args: str, stdin: int | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowpoint ARGS`` under the limits; a hang fails the test."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPOINT_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "flowpoint", *args],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        env=environment,
        preexec_fn=_limits,
        timeout=timeout,
        check=False,
    )


@contextmanager
def fed_forever(path: Path, head: bytes = b"") -> Iterator[None]:
    """A FIFO at ``path`` whose writer sends ``head``, then zeros until the reader leaves."""
    os.mkfifo(path)

    def write() -> None:
        try:
            with open(path, "wb") as fifo:
                fifo.write(head)
                chunk = bytes(1 << 16)
                while True:
                    fifo.write(chunk)
        except (BrokenPipeError, ValueError):
            pass  # the reader closed its end: the test is over

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():  # the reader never opened it: open it, to let the writer go
            with open(path, "rb"):
                pass
        writer.join(timeout=10)


def sparse(path: Path, head: bytes = b"", size: int = 64 << 30) -> Path:
    """A file that claims ``size`` bytes (a hole after ``head``) and takes almost no disk."""
    with open(path, "wb") as file:
        file.write(head)
        file.truncate(size)
    return path


# -- key rings -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "sparse", "directory"])
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_key_ring_is_read_within_a_limit(
    seeded: Seeded, tmp_path: Path, kind: str, how: str
) -> None:
    path = {
        "dev-zero": Path("/dev/zero"),
        "fifo": tmp_path / "ring.fifo",
        "sparse": tmp_path / "ring.json",
        "directory": tmp_path,
    }[kind]
    if kind == "sparse":
        sparse(path, b'{"primary": "k1", "keys": {}}')
    args = ["verify", "--store", seeded.url]
    options = ["--keyring", str(path)] if how == "option" else []
    env = {"FLOWPOINT_KEYRING": str(path)} if how == "environment" else {}
    with fed_forever(path) if kind == "fifo" else _nothing():
        done = bounded(*args, *options, env=env)
    assert done.returncode == 1, done.stderr
    line = one_line_error(done.stderr)
    assert str(path) in line
    assert "Is a directory" in line if kind == "directory" else "larger than" in line


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- archives read ----------------------------------------------------------------------------


def exported(seeded: Seeded) -> bytes:
    done = flowpoint_bytes("export", "-", "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_archive_through_a_fifo_is_imported(seeded: Seeded, tmp_path: Path) -> None:
    archive = exported(seeded)
    fifo = tmp_path / "archive.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(archive,), daemon=True)
    writer.start()
    target = sqlite_url(tmp_path / "target.db")
    done = bounded("import", str(fifo), "--store", target)
    writer.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "copied 5 checkpoint(s)" in done.stdout
    assert blobs_of(target) == blobs_of(seeded.url)


def test_endless_zeros_on_stdin_are_refused_at_once(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zeros:
        done = bounded(
            "import", "-", "--store", sqlite_url(tmp_path / "t.db"), stdin=zeros.fileno()
        )
    assert done.returncode == 1, done.stderr
    assert "not a flowpoint archive" in one_line_error(done.stderr)


def test_an_archive_followed_by_endless_bytes_on_stdin_is_refused(
    seeded: Seeded, tmp_path: Path
) -> None:
    reading, writing = os.pipe()

    def write() -> None:
        try:
            with open(writing, "wb") as pipe:
                pipe.write(exported(seeded))
                while True:
                    pipe.write(bytes(1 << 16))
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    target = tmp_path / "t.db"
    try:
        done = bounded("import", "-", "--store", sqlite_url(target), stdin=reading)
    finally:
        os.close(reading)
        writer.join(timeout=10)
    assert done.returncode == 3, done.stderr
    assert "bytes follow the archive's trailer" in one_line_error(done.stderr)
    assert not target.exists()


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "sparse", "sparse-archive", "directory"])
def test_an_archive_path_is_read_within_bounds(seeded: Seeded, tmp_path: Path, kind: str) -> None:
    head = exported(seeded)[:20]  # a real archive's magic, version and first length
    path = {
        "dev-zero": Path("/dev/zero"),
        "fifo": tmp_path / "archive.fifo",
        "sparse": tmp_path / "zeros.fpa",
        "sparse-archive": tmp_path / "cut.fpa",
        "directory": tmp_path,
    }[kind]
    if kind == "sparse":
        sparse(path)
    elif kind == "sparse-archive":
        sparse(path, head)
    target = tmp_path / "t.db"
    with fed_forever(path) if kind == "fifo" else _nothing():
        done = bounded("import", str(path), "--store", sqlite_url(target))
    line = one_line_error(done.stderr)
    expected = {
        "dev-zero": (1, "not a flowpoint archive"),
        "fifo": (1, "not a flowpoint archive"),
        "sparse": (1, "not a flowpoint archive"),
        "sparse-archive": (3, "is not readable"),
        "directory": (1, "cannot read the archive"),
    }[kind]
    assert (done.returncode, expected[1] in line) == (expected[0], True), done.stderr
    assert not target.exists()


def _record_with_metadata(entries: int) -> bytes:
    """An archive whose one record's metadata map has ``entries`` tiny, distinct entries."""
    stream = io.BytesIO()
    ArchiveWriter(stream)  # the magic and the version
    fields = {
        "type": "checkpoint",
        "checkpoint_id": "01a219cb-c63a-7371-abb7-04e9e3769072",
        "trace_id": "t",
        "step": 0,
        "parent_id": None,
        "graph_hash": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "current_node": None,
        "data": b"",
    }
    head = msgspec.msgpack.encode(fields)
    assert head[0] == 0x80 | len(fields)  # a fixmap: one more field goes in its count
    # Each entry: a distinct 4-character key (base64 of the entry's number) and nil.
    entry_keys = b"".join(
        b"\xa4" + b64encode(n.to_bytes(3, "big")) + b"\xc0" for n in range(entries)
    )
    metadata = b"\xa8metadata\xdf" + entries.to_bytes(4, "big") + entry_keys
    body = bytes([head[0] + 1]) + head[1:] + metadata
    return stream.getvalue() + len(body).to_bytes(4, "big") + body


def test_an_archive_records_metadata_is_sized_before_it_is_decoded() -> None:
    raw = _record_with_metadata(1_000_000)  # 6 MB encoded; over 100 MB as Python objects
    tracemalloc.start()
    try:
        with pytest.raises(
            ArchiveError, match=r"metadata takes \d+ bytes, over the limit"
        ) as caught:
            scan_archive(io.BytesIO(raw))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.corrupt
    assert peak < 4 * len(raw)


# -- archives written ------------------------------------------------------------------------


def test_export_writes_into_a_fifo_and_never_replaces_it(seeded: Seeded, tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = bounded("export", str(fifo), "--store", seeded.url)
    if reader.is_alive():  # nothing was written into the FIFO: let the reader go
        with open(fifo, "wb"):
            pass
    reader.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert len(received) == 1
    assert received[0].startswith(MAGIC)
    assert scan_archive(io.BytesIO(received[0])).checkpoints == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo", "store.db"]


def test_export_through_a_symbolic_link_writes_its_target(seeded: Seeded, tmp_path: Path) -> None:
    (tmp_path / "archives").mkdir()
    real = tmp_path / "archives" / "store.fpa"
    real.write_bytes(b"an older archive")
    link = tmp_path / "latest.fpa"
    link.symlink_to(real)
    done = bounded("export", str(link), "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert scan_archive(io.BytesIO(real.read_bytes())).checkpoints == 5


def test_export_into_a_directory_is_an_error(seeded: Seeded, tmp_path: Path) -> None:
    done = bounded("export", str(tmp_path), "--store", seeded.url)
    assert done.returncode == 1
    assert "is a directory" in one_line_error(done.stderr).lower()


def _on_a_terminal(args: list[str], stream: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowpoint ARGS`` with its stdin or stdout (``stream``) on a terminal."""
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # what the command writes to the terminal, so it never blocks
        try:
            while chunk := os.read(controller, 1 << 16):
                chunks.append(chunk)
        except OSError:
            pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        return subprocess.run(
            [sys.executable, "-m", "flowpoint", *args],
            stdin=terminal if stream == "stdin" else subprocess.DEVNULL,
            stdout=terminal if stream == "stdout" else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limits,
            timeout=30,
            check=False,
        )
    finally:
        os.close(terminal)
        drainer.join(timeout=10)
        os.close(controller)


def test_an_archive_is_not_written_to_a_terminal(seeded: Seeded) -> None:
    done = _on_a_terminal(["export", "-", "--store", seeded.url], "stdout")
    assert done.returncode == 2, done.stderr
    assert "stdout is a terminal" in one_line_error(done.stderr)


def test_an_archive_is_not_awaited_from_a_terminal(tmp_path: Path) -> None:
    done = _on_a_terminal(["import", "-", "--store", sqlite_url(tmp_path / "t.db")], "stdin")
    assert done.returncode == 2, done.stderr
    assert "stdin is a terminal" in one_line_error(done.stderr)


# -- stores at odd paths -------------------------------------------------------------------


def _odd_store(tmp_path: Path, scheme: str, kind: str) -> str:
    """A store URL of ``scheme`` naming something that is no store of that kind."""
    path = {
        "dev-zero": Path("/dev/zero"),
        "fifo": tmp_path / "store.fifo",
        "sparse": tmp_path / "store.db",
        "directory": tmp_path / "dir",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "sparse":
        sparse(path)
    elif kind == "directory":
        path.mkdir()
    return f"file://{path}" if scheme == "file" else sqlite_url(path)


@pytest.mark.parametrize(
    ("scheme", "kind"),
    [
        ("sqlite", "dev-zero"),
        ("sqlite", "fifo"),
        ("sqlite", "sparse"),
        ("sqlite", "directory"),
        ("file", "dev-zero"),
        ("file", "fifo"),
        ("file", "sparse"),
    ],
)
def test_a_store_url_naming_something_else_is_one_line(
    tmp_path: Path, scheme: str, kind: str
) -> None:
    url = _odd_store(tmp_path, scheme, kind)
    for command in (["traces"], ["verify"], ["export", str(tmp_path / "out.fpa")]):
        done = bounded(*command, "--store", url)
        assert done.returncode == 1, (command, done.stderr)
        one_line_error(done.stderr)
    assert not (tmp_path / "out.fpa").exists()
