"""``copy``, ``export`` and ``import``: move checkpoints between stores, untouched.

Data is copied as stored bytes, never decoded or re-encoded, so encrypted
checkpoints stay encrypted and no key is needed. Writing is rerun-safe: a
checkpoint the destination already holds with the same header and data is
skipped; a different one in its place (same id, or same trace and step) stops the
run, and nothing is ever overwritten. Each trace written is then read back from
the destination and compared with what was sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.cli.archive import ArchiveError, ArchiveWriter, read_archive, scan_archive
from flowpoint.cli.common import (
    DebugOption,
    JsonOption,
    Settings,
    StoreOption,
    opened_store,
    require_trace,
    shown,
    whole_trace,
)
from flowpoint.cli.output import (
    ExitCode,
    emit_json,
    fail,
    progressbar,
    run,
    stderr_console,
    stdout_console,
)
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint
from flowpoint.ids import TraceId
from flowpoint.stores.base import BlobCheckpointStore, different_header

__all__ = ["TransferReport", "TransferWriter", "copy", "export", "import_", "source_blobs"]

# Checks framing, checksum and header agreement without decrypting or decoding.
_ENVELOPE_CHECK: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()


def check_envelope(blob: CheckpointBlob, where: str) -> None:
    """Exit 3 unless ``blob``'s data is intact: nothing damaged is passed on."""
    try:
        _ENVELOPE_CHECK.key_id_of(blob)
    except CorruptCheckpoint as exc:
        fail(
            f"checkpoint {blob.checkpoint_id} (trace {blob.trace_id!r}, step {blob.step}) "
            f"in {where} is corrupt: {exc.reason}; stopped (run flowpoint verify)",
            ExitCode.CORRUPT,
        )


@dataclass(slots=True)
class TransferReport:
    """Counts of a copy or an import."""

    traces: int = 0
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    vanished: int = 0

    def as_json(self) -> dict[str, int]:
        """The counts, in a fixed key order."""
        return {
            "traces": self.traces,
            "copied": self.copied,
            "skipped": self.skipped,
            "verified": self.verified,
            "vanished": self.vanished,
        }

    def describe(self) -> str:
        """One line for people."""
        line = (
            f"copied {self.copied} checkpoint(s) of {self.traces} trace(s), "
            f"verified {self.verified} (read back byte for byte), "
            f"skipped {self.skipped} (already there, identical)"
        )
        if self.vanished:
            line += f", {self.vanished} deleted from the source meanwhile"
        return line


@dataclass(slots=True)
class TransferWriter:
    """Puts blobs into ``store`` without ever overwriting, and verifies what it wrote."""

    store: BlobCheckpointStore
    url: str
    report: TransferReport = field(default_factory=TransferReport)
    _pending: list[tuple[CheckpointInfo, bytes]] = field(default_factory=list)

    def _conflict(self, blob: CheckpointBlob, holding: str) -> None:
        fail(
            f"conflict: {shown(self.url)} already holds {holding}; the source has checkpoint "
            f"{blob.checkpoint_id} (trace {blob.trace_id!r}, step {blob.step}). Nothing was "
            f"overwritten; {self.report.copied} checkpoint(s) copied before stopping"
        )

    async def _same_as_stored(self, blob: CheckpointBlob) -> bool | None:
        """``True``: stored identically; ``False``: stored differently; ``None``: not there."""
        existing = await self.store.load(blob.checkpoint_id)
        if existing is None:
            return None
        return different_header(existing, blob) is None and existing.data == blob.data

    async def put(self, blob: CheckpointBlob) -> None:
        """Save ``blob`` unless the destination holds it already, identical; else stop."""
        same = await self._same_as_stored(blob)
        if same is False:
            self._conflict(blob, f"another version of checkpoint {blob.checkpoint_id}")
        if same:
            self.report.skipped += 1
            return
        try:
            await self.store.save(blob)
        except CheckpointConflict:
            if await self._same_as_stored(blob):  # another copy saved it meanwhile
                self.report.skipped += 1
                return
            found = await self.store.history(blob.trace_id, 1, blob.step + 1)
            other = found[0].checkpoint_id if found and found[0].step == blob.step else None
            self._conflict(
                blob,
                f"checkpoint {other} at trace {blob.trace_id!r} step {blob.step}"
                if other is not None
                else f"a checkpoint at trace {blob.trace_id!r} step {blob.step}",
            )
        self._pending.append((blob.info(), hashlib.sha256(blob.data).digest()))
        self.report.copied += 1

    async def verify(self) -> None:
        """Read back every checkpoint saved since the last call; exit 3 on any difference."""
        pending, self._pending = self._pending, []
        for info, digest in pending:
            back = await self.store.load(info.checkpoint_id)
            if back is None:
                problem = "is missing"
            elif (changed := different_header(info, back)) is not None:
                problem = f"reads back with another {changed}"
            elif hashlib.sha256(back.data).digest() != digest:
                problem = "reads back with other data"
            else:
                self.report.verified += 1
                continue
            fail(
                f"verification failed: checkpoint {info.checkpoint_id} (trace "
                f"{info.trace_id!r}, step {info.step}) {problem} in {shown(self.url)}",
                ExitCode.CORRUPT,
            )


async def source_blobs(
    store: BlobCheckpointStore, traces: list[TraceId], report: TransferReport
) -> dict[TraceId, list[CheckpointInfo]]:
    """The headers of ``traces`` (sorted by code point), each trace oldest step first."""
    listings: dict[TraceId, list[CheckpointInfo]] = {}
    for trace in sorted(traces):
        infos = await whole_trace(store, trace)
        if infos:
            listings[trace] = infos[::-1]
    report.traces = len(listings)
    return listings


# -- copy ------------------------------------------------------------------------------


def copy(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SRC_URL", help="The store to copy from.")],
    destination: Annotated[
        str, typer.Argument(metavar="DST_URL", help="The store to copy into (made if new).")
    ],
    trace: Annotated[
        str | None,
        typer.Option("--trace", metavar="TRACE", help="Copy only this trace.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Copy checkpoints from SRC_URL to DST_URL, trace by trace, oldest step first.

    Safe to run again after an interruption: checkpoints already copied are
    skipped. A different checkpoint in the way stops the copy (exit 1); nothing is
    overwritten. Everything copied is read back from DST_URL and compared.
    """
    settings = Settings.of(ctx, json=as_json, debug=debug)
    run(lambda: _copy(settings, source, destination, trace), debug=settings.debug)


async def _copy(settings: Settings, source: str, destination: str, only: str | None) -> None:
    if source == destination:
        fail(f"the source and the destination are the same store: {shown(source)}")
    report = TransferReport()
    async with (
        opened_store(source) as src,
        opened_store(destination, must_exist=False) as dst,
    ):
        if only is not None:
            await require_trace(src, only, source)
        names = [TraceId(only)] if only is not None else await src.traces()
        listings = await source_blobs(src, names, report)
        writer = TransferWriter(dst, destination, report)
        total = sum(len(infos) for infos in listings.values())
        with progressbar(total, "copying", enabled=not settings.json) as bar:
            for infos in listings.values():
                for info in infos:
                    blob = await src.load(info.checkpoint_id)
                    if blob is None:
                        report.vanished += 1
                    else:
                        check_envelope(blob, shown(source))
                        await writer.put(blob)
                    bar.advance()
                await writer.verify()
    if settings.json:
        emit_json({"source": shown(source), "destination": shown(destination), **report.as_json()})
    else:
        stdout_console().print(report.describe(), markup=False)


# -- export ----------------------------------------------------------------------------


@contextlib.contextmanager
def _output_file(target: str) -> Iterator[IO[bytes]]:
    """Where an archive goes: stdout for ``-``, else a file replaced only on success."""
    if target == "-":
        yield sys.stdout.buffer
        return
    path = Path(target)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def export(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="FILE", help="The archive to write, or - for stdout.")
    ],
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace", metavar="TRACE", help="Export only this trace.", show_default=False
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Write the store's checkpoints to a portable archive (data untouched).

    The same checkpoints give a byte-identical archive from any backend. With FILE
    '-' the archive goes to stdout and the summary to stderr.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _export(settings, target, trace), debug=settings.debug)


async def _export(settings: Settings, target: str, only: str | None) -> None:
    report = TransferReport()
    async with opened_store(settings.store) as src:
        if only is not None:
            await require_trace(src, only, settings.store)
        names = [TraceId(only)] if only is not None else await src.traces()
        listings = await source_blobs(src, names, report)
        total = sum(len(infos) for infos in listings.values())
        try:
            with (
                _output_file(target) as stream,
                progressbar(total, "exporting", enabled=not settings.json) as bar,
            ):
                writer = ArchiveWriter(stream)
                for infos in listings.values():
                    for info in infos:
                        blob = await src.load(info.checkpoint_id)
                        if blob is None:
                            report.vanished += 1
                        else:
                            check_envelope(blob, shown(settings.store))
                            writer.write(blob)
                            report.copied += 1
                        bar.advance()
                summary = writer.finish()
        except OSError as exc:
            fail(f"cannot write the archive {target}: {exc.strerror or exc}")
    document = {
        "store": shown(settings.store),
        "archive": target,
        "traces": summary.traces,
        "checkpoints": summary.checkpoints,
        "vanished": report.vanished,
    }
    if settings.json:
        emit_json(document, err=target == "-")
    else:
        console = stderr_console() if target == "-" else stdout_console()
        console.print(
            f"exported {summary.checkpoints} checkpoint(s) of {summary.traces} trace(s) "
            f"to {'stdout' if target == '-' else target}",
            markup=False,
        )


# -- import ----------------------------------------------------------------------------


@contextlib.contextmanager
def _input_file(source: str) -> Iterator[IO[bytes]]:
    """The archive to read, seekable: stdin (``-``) is spooled to a temporary file first."""
    if source == "-":
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.seek(0)
            yield spool
        return
    try:
        file = open(source, "rb")  # noqa: SIM115 - closed below, after the yield
    except OSError as exc:
        fail(f"cannot read the archive {source}: {exc.strerror or exc}")
    with file:
        yield file


def import_(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FILE", help="The archive to read, or - for stdin.")
    ],
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Load an archive written by 'flowpoint export' into the store (made if new).

    The whole archive is checked (checksum, counts, order) before anything is
    written. Rerun-safe and verified as copy is.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _import(settings, source), debug=settings.debug)


async def _import(settings: Settings, source: str) -> None:
    report = TransferReport()
    with _input_file(source) as stream:
        try:
            summary = scan_archive(stream)
            stream.seek(0)
            async with opened_store(settings.store, must_exist=False) as dst:
                writer = TransferWriter(dst, settings.store, report)
                report.traces = summary.traces
                last_trace: str | None = None
                with progressbar(
                    summary.checkpoints, "importing", enabled=not settings.json
                ) as bar:
                    for blob in read_archive(stream):
                        if blob.trace_id != last_trace:
                            await writer.verify()
                            last_trace = blob.trace_id
                        check_envelope(blob, source)
                        await writer.put(blob)
                        bar.advance()
                    await writer.verify()
        except ArchiveError as exc:
            fail(
                f"archive {source}: {exc}",
                ExitCode.CORRUPT if exc.corrupt else ExitCode.ERROR,
            )
    if settings.json:
        emit_json({"archive": source, "store": shown(settings.store), **report.as_json()})
    else:
        stdout_console().print(report.describe(), markup=False)
