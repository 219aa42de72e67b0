"""``copy``, ``export`` and ``import``: move checkpoints between stores, untouched.

Data is copied as stored bytes, never decoded or re-encoded, so encrypted
checkpoints stay encrypted and no key is needed. Each checkpoint goes with its
pending writes (what parallel tasks saved against it). Writing is rerun-safe: a
checkpoint or a write the destination already holds, identical, is skipped; a
different one in its place (same id, or same trace and step; same checkpoint,
task and index) stops the run, and nothing is ever overwritten. Each trace
written is then read back from the destination and compared with what was sent.

A checkpoint or write of the source that cannot be read (damaged data, or a
damaged record) stops a copy or an export (exit 3); with ``--skip-corrupt`` it is
reported and skipped, the run goes on, and it exits 3 once everything else is done.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

import typer

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.cli._archive import (
    ArchiveError,
    ArchiveSummary,
    ArchiveWriter,
    ByteSource,
    read_archive,
)
from flowpoint.cli._common import (
    DebugOption,
    JsonOption,
    Settings,
    StoreOption,
    command_line,
    opened_store,
    require_trace,
    shown,
)
from flowpoint.cli._damage import damage_json, describe_damage, list_trace, list_traces
from flowpoint.cli._files import archive_input, archive_output
from flowpoint.cli._output import (
    ExitCode,
    Progressbar,
    emit_json,
    fail,
    print_error,
    print_warning,
    progressbar,
    run,
    stderr_console,
    stdout_console,
)
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import BlobCheckpointStore, different_header

__all__ = [
    "Loaded",
    "Source",
    "TransferReport",
    "TransferWriter",
    "Vanished",
    "copy",
    "export",
    "import_",
]

# Checks framing, checksum and header agreement without decrypting or decoding.
_ENVELOPE_CHECK: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec()

SkipCorruptOption = Annotated[
    bool,
    typer.Option(
        "--skip-corrupt",
        help="Report each checkpoint that cannot be read, skip it, and go on "
        "(then exit 3 once the rest is done).",
    ),
]


def _envelope_damage(item: CheckpointBlob | PendingWrite) -> str | None:
    """Why a checkpoint's or a write's data is not intact, or ``None``.

    Nothing damaged is passed on. A write's data must also be filed under the key
    it names.
    """
    try:
        if isinstance(item, PendingWrite):
            _ENVELOPE_CHECK.key_id_of_write(item)
        else:
            _ENVELOPE_CHECK.key_id_of(item)
    except CorruptCheckpoint as exc:
        return exc.reason
    return None


def _write_key(write: PendingWrite) -> tuple[str, int]:
    return (write.task_id, write.index)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checkpoint read from the source, its intact pending writes, and its damaged ones."""

    blob: CheckpointBlob
    writes: list[PendingWrite]
    damaged_writes: list[DamagedRecord]


@dataclass(frozen=True, slots=True)
class Vanished:
    """A listed checkpoint that was deleted from the source before it was read."""

    info: CheckpointInfo


@dataclass(slots=True)
class Source:
    """What a copy or an export reads: the checkpoints of some traces, and what is damaged.

    Traces come sorted by code point, each oldest step first. This is the one
    place where reading the source meets damage: a record the listing found
    damaged, a trace that cannot be listed, and a checkpoint whose data is not
    intact come out of :meth:`items` as a :class:`~flowpoint.blob.DamagedRecord`.
    """

    store: BlobCheckpointStore
    listings: dict[TraceId, list[CheckpointInfo]]
    unlisted: list[DamagedRecord]

    @classmethod
    async def of(
        cls, store: BlobCheckpointStore, traces: list[TraceId], unnamed: list[DamagedRecord]
    ) -> Source:
        """List ``traces`` of ``store`` (their headers only), after the ``unnamed`` damage."""
        listings: dict[TraceId, list[CheckpointInfo]] = {}
        unlisted = list(unnamed)
        for trace in sorted(traces):
            infos, damaged = await list_trace(store, trace)
            unlisted += damaged
            if infos:  # none: deleted meanwhile, or every record damaged
                listings[trace] = infos[::-1]
        return cls(store, listings, unlisted)

    @property
    def checkpoints(self) -> int:
        """How many checkpoints were listed, damaged ones included."""
        listed = sum(len(infos) for infos in self.listings.values())
        return listed + sum(1 for record in self.unlisted if record.checkpoint_id is not None)

    async def items(self) -> AsyncIterator[Loaded | DamagedRecord | Vanished]:
        """What the listing found damaged, then each listed checkpoint, loaded and checked."""
        for damaged in self.unlisted:
            yield damaged
        for infos in self.listings.values():
            for info in infos:
                try:
                    blob = await self.store.load(info.checkpoint_id)
                except CorruptCheckpoint as exc:  # a header damaged since the listing
                    yield DamagedRecord(info.checkpoint_id, info.trace_id, info.step, exc.reason)
                    continue
                if blob is None:
                    yield Vanished(info)
                elif (reason := _envelope_damage(blob)) is not None:
                    yield DamagedRecord(blob.checkpoint_id, blob.trace_id, blob.step, reason)
                else:
                    yield await self._with_writes(blob)

    async def _with_writes(self, blob: CheckpointBlob) -> Loaded:
        """``blob`` and its pending writes, each checked as its data is."""

        def damaged(reason: str) -> DamagedRecord:
            return DamagedRecord(blob.checkpoint_id, blob.trace_id, blob.step, reason)

        try:
            writes = await self.store.load_writes(blob.checkpoint_id)
        except CorruptCheckpoint as exc:  # a damaged write record
            return Loaded(blob, [], [damaged(exc.reason)])
        intact: list[PendingWrite] = []
        broken: list[DamagedRecord] = []
        for write in writes:
            if write.trace_id != blob.trace_id or write.checkpoint_id != blob.checkpoint_id:
                broken.append(
                    damaged(
                        f"pending write {write.task_id!r:.80} is filed under checkpoint "
                        f"{write.checkpoint_id} of trace {write.trace_id!r:.80}"
                    )
                )
            elif (reason := _envelope_damage(write)) is not None:
                broken.append(damaged(reason))
            else:
                intact.append(write)
        return Loaded(blob, intact, broken)


@dataclass(slots=True)
class TransferReport:
    """Counts of a copy, an export or an import, and the damage skipped."""

    traces: int = 0
    copied: int = 0
    skipped: int = 0
    verified: int = 0
    vanished: int = 0
    writes_copied: int = 0
    writes_skipped: int = 0
    writes_verified: int = 0
    corrupt: list[DamagedRecord] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The counts, in a fixed key order; the damage skipped, if any was."""
        return {
            "traces": self.traces,
            "copied": self.copied,
            "skipped": self.skipped,
            "verified": self.verified,
            "vanished": self.vanished,
            "writes_copied": self.writes_copied,
            "writes_skipped": self.writes_skipped,
            "writes_verified": self.writes_verified,
            "skipped_corrupt": len(self.corrupt),
            "corrupt": [damage_json(damaged) for damaged in self.corrupt],
        }

    def describe(self) -> str:
        """One line for people."""
        line = (
            f"copied {self.copied} checkpoint(s) of {self.traces} trace(s), "
            f"verified {self.verified} (read back byte for byte), "
            f"skipped {self.skipped} (already there, identical)"
        )
        if self.writes_copied or self.writes_skipped:
            line += (
                f"; {self.writes_copied} pending write(s) copied and verified, "
                f"{self.writes_skipped} already there"
            )
        return line + self.describe_skipped()

    def describe_skipped(self) -> str:
        """What the line for people adds about damage skipped and checkpoints deleted."""
        line = ""
        if self.corrupt:
            line += f", skipped {len(self.corrupt)} corrupt"
        if self.vanished:
            line += f", {self.vanished} deleted from the source meanwhile"
        return line

    def damage_met(
        self, damaged: DamagedRecord, settings: Settings, *, skip: bool, source: str
    ) -> None:
        """Stop at ``damaged`` (exit 3); with ``skip``, say what is skipped and go on."""
        if not skip:
            verify = command_line(settings, "verify", store=source)
            fail(
                f"{describe_damage(damaged)}; stopped (run {verify} to see all damage, or pass "
                f"--skip-corrupt to go on without it)",
                ExitCode.CORRUPT,
            )
        self.corrupt.append(damaged)
        if not settings.json:  # the JSON document lists it
            print_warning(f"skipped: {describe_damage(damaged)}")

    def exit_code(self, source: str) -> ExitCode:
        """3 if damage was skipped, after the line that says so; else 0."""
        if not self.corrupt:
            return ExitCode.OK
        print_error(
            f"{len(self.corrupt)} corrupt checkpoint(s) or trace(s) of {shown(source)} "
            f"skipped; all the rest was done"
        )
        return ExitCode.CORRUPT


@dataclass(slots=True)
class TransferWriter:
    """Puts blobs into ``store`` without ever overwriting, and verifies what it wrote."""

    store: BlobCheckpointStore
    url: str
    report: TransferReport = field(default_factory=TransferReport)
    _pending: list[tuple[CheckpointInfo, bytes]] = field(default_factory=list)
    _pending_writes: dict[CheckpointId, dict[tuple[str, int], bytes]] = field(default_factory=dict)

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

    def _write_conflict(self, write: PendingWrite) -> NoReturn:
        fail(
            f"conflict: {shown(self.url)} already holds another version of pending write "
            f"{write.task_id!r:.80} {write.index} of checkpoint {write.checkpoint_id} (trace "
            f"{write.trace_id!r}). Nothing was overwritten; {self.report.copied} "
            f"checkpoint(s) copied before stopping"
        )

    async def put_writes(self, writes: list[PendingWrite]) -> None:
        """Save the pending writes of one checkpoint that the destination lacks.

        A write stored already, identical, is skipped; another one under its key
        (checkpoint, task id, index) stops the run, and nothing is overwritten.
        """
        if not writes:
            return
        checkpoint = writes[0].checkpoint_id
        stored = {_write_key(one): one for one in await self.store.load_writes(checkpoint)}
        new: list[PendingWrite] = []
        for write in writes:
            there = stored.get(_write_key(write))
            if there is None:
                new.append(write)
            elif there.trace_id == write.trace_id and there.data == write.data:
                self.report.writes_skipped += 1
            else:
                self._write_conflict(write)
        if not new:
            return
        try:
            # Without overwrite: a write saved meanwhile keeps its data; the read back
            # then finds it differs, and says so.
            await self.store.save_writes(new)
        except ValueError:  # the checkpoint's writes are stored under another trace
            self._write_conflict(new[0])
        digests = self._pending_writes.setdefault(checkpoint, {})
        for write in new:
            digests[_write_key(write)] = hashlib.sha256(write.data).digest()
        self.report.writes_copied += len(new)

    async def _verify_writes(self) -> None:
        pending, self._pending_writes = self._pending_writes, {}
        for checkpoint, digests in pending.items():
            back = {
                _write_key(one): hashlib.sha256(one.data).digest()
                for one in await self.store.load_writes(checkpoint)
            }
            for (task_id, index), digest in digests.items():
                found = back.get((task_id, index))
                if found == digest:
                    self.report.writes_verified += 1
                    continue
                problem = "is missing" if found is None else "reads back with other data"
                fail(
                    f"verification failed: pending write {task_id!r:.80} {index} of "
                    f"checkpoint {checkpoint} {problem} in {shown(self.url)}",
                    ExitCode.CORRUPT,
                )

    async def verify(self) -> None:
        """Read back everything saved since the last call; exit 3 on any difference."""
        await self._verify_writes()
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


async def _readable(
    reading: Source,
    report: TransferReport,
    settings: Settings,
    skip_corrupt: bool,
    source: str,
    doing: str,
) -> AsyncGenerator[Loaded, None]:
    """The checkpoints of ``reading`` that can be read, with their writes, under a progress bar.

    Damage stops the run, or is reported and skipped with ``skip_corrupt`` (a
    damaged write: that write only); checkpoints deleted since the listing are
    counted.
    """
    with progressbar(reading.checkpoints, doing, enabled=not settings.json) as bar:
        async for item in reading.items():
            if isinstance(item, DamagedRecord):
                report.damage_met(item, settings, skip=skip_corrupt, source=source)
            elif isinstance(item, Vanished):
                report.vanished += 1
            else:
                for damaged in item.damaged_writes:
                    report.damage_met(damaged, settings, skip=skip_corrupt, source=source)
                yield item
            if not isinstance(item, DamagedRecord) or item.checkpoint_id is not None:
                bar.advance()  # a trace that cannot be listed was never counted


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
    skip_corrupt: SkipCorruptOption = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Copy checkpoints from SRC_URL to DST_URL, trace by trace, oldest step first.

    Safe to run again after an interruption: checkpoints already copied are
    skipped. A different checkpoint in the way stops the copy (exit 1); nothing is
    overwritten. Everything copied is read back from DST_URL and compared. A
    corrupt checkpoint stops the copy (exit 3) unless --skip-corrupt is given.
    """
    settings = Settings.of(ctx, json=as_json, debug=debug)
    run(lambda: _copy(settings, source, destination, trace, skip_corrupt), debug=settings.debug)


async def _source(store: BlobCheckpointStore, only: str | None, url: str) -> Source:
    """The trace ``--trace`` names (exit 4 if the store lacks it), or every trace."""
    if only is None:
        return await Source.of(store, *await list_traces(store))
    await require_trace(store, only, url)
    return await Source.of(store, [TraceId(only)], [])


async def _copy(
    settings: Settings, source: str, destination: str, only: str | None, skip_corrupt: bool
) -> ExitCode:
    if source == destination:
        fail(f"the source and the destination are the same store: {shown(source)}")
    report = TransferReport()
    async with (
        opened_store(source, "read") as src,
        opened_store(destination, "create") as dst,
    ):
        reading = await _source(src, only, source)
        report.traces = len(reading.listings)
        writer = TransferWriter(dst, destination, report)
        last_trace: str | None = None
        loaded = _readable(reading, report, settings, skip_corrupt, source, "copying")
        async with aclosing(loaded):
            async for item in loaded:
                if item.blob.trace_id != last_trace:  # read back each trace once it is written
                    await writer.verify()
                    last_trace = item.blob.trace_id
                await writer.put(item.blob)
                await writer.put_writes(item.writes)
        await writer.verify()
    if settings.json:
        emit_json({"source": shown(source), "destination": shown(destination), **report.as_json()})
    else:
        stdout_console().print(report.describe(), markup=False)
    return report.exit_code(source)


# -- export ----------------------------------------------------------------------------


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
    skip_corrupt: SkipCorruptOption = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Write the store's checkpoints to a portable archive (data untouched).

    The same checkpoints give a byte-identical archive from any backend. With FILE
    '-' the archive goes to stdout and the summary to stderr. A corrupt checkpoint
    stops the export, leaving no archive (exit 3), unless --skip-corrupt is given.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _export(settings, target, trace, skip_corrupt), debug=settings.debug)


async def _export(
    settings: Settings, target: str, only: str | None, skip_corrupt: bool
) -> ExitCode:
    report = TransferReport()
    src_url = settings.store
    async with opened_store(src_url, "read") as src:
        reading = await _source(src, only, src_url)
        try:
            with archive_output(target) as stream:
                writer = ArchiveWriter(stream)
                loaded = _readable(reading, report, settings, skip_corrupt, src_url, "exporting")
                async with aclosing(loaded):
                    async for item in loaded:
                        writer.write(item.blob)
                        writer.write_writes(item.writes)
                        report.copied += 1
                summary = writer.finish()
        except OSError as exc:
            fail(f"cannot write the archive {target}: {exc.strerror or exc}")
    document = {
        "store": shown(settings.store),
        "archive": target,
        "traces": summary.traces,
        "checkpoints": summary.checkpoints,
        "writes": summary.writes,
        "vanished": report.vanished,
        "skipped_corrupt": len(report.corrupt),
        "corrupt": [damage_json(damaged) for damaged in report.corrupt],
    }
    if settings.json:
        emit_json(document, err=target == "-")
    else:
        console = stderr_console() if target == "-" else stdout_console()
        console.print(
            f"exported {summary.checkpoints} checkpoint(s) of {summary.traces} trace(s)"
            f"{f' with {summary.writes} pending write(s)' if summary.writes else ''} "
            f"to {'stdout' if target == '-' else target}{report.describe_skipped()}",
            markup=False,
        )
    return report.exit_code(settings.store)


# -- import ----------------------------------------------------------------------------


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

    The whole archive is checked (checksum, counts, order, each checkpoint's and
    pending write's data) before anything is written. Rerun-safe and verified as
    copy is.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug)
    run(lambda: _import(settings, source), debug=settings.debug)


async def _import(settings: Settings, source: str) -> None:
    report = TransferReport()
    with archive_input(source) as archive:
        try:
            # The whole archive, and every checkpoint's and write's data, is checked
            # before anything is written.
            summary = _checked_through(archive.first_pass(), source)
            stream = archive.second_pass()
            async with opened_store(settings.store, "create") as dst:
                writer = TransferWriter(dst, settings.store, report)
                report.traces = summary.traces
                with progressbar(
                    summary.checkpoints, "importing", enabled=not settings.json
                ) as bar:
                    await _import_records(read_archive(stream), writer, source, bar)
        except ArchiveError as exc:
            fail(
                f"archive {source}: {exc}",
                ExitCode.CORRUPT if exc.corrupt else ExitCode.ERROR,
            )
    if settings.json:
        emit_json({"archive": source, "store": shown(settings.store), **report.as_json()})
    else:
        stdout_console().print(report.describe(), markup=False)


Record = CheckpointBlob | PendingWrite


def _check_record(record: Record, source: str) -> None:
    """Exit 3 if the data of a checkpoint or write of the archive is not intact."""
    if (reason := _envelope_damage(record)) is None:
        return
    what = (
        f"pending write {record.task_id!r:.80} of checkpoint {record.checkpoint_id}"
        if isinstance(record, PendingWrite)
        else f"checkpoint {record.checkpoint_id} (trace {record.trace_id!r}, step {record.step})"
    )
    fail(f"archive {source}: {what} is corrupt: {reason}", ExitCode.CORRUPT)


def _checked_through(stream: ByteSource, source: str) -> ArchiveSummary:
    """Read a whole archive, checking its framing and every record's data; keep nothing."""
    reader = read_archive(stream)
    while True:
        try:
            _check_record(next(reader), source)
        except StopIteration as finished:
            summary: ArchiveSummary = finished.value
            return summary


async def _import_records(
    records: Iterable[Record], writer: TransferWriter, source: str, bar: Progressbar
) -> None:
    """Put each checkpoint of an archive, then its writes; read back each trace once written."""
    last_trace: str | None = None
    writes: list[PendingWrite] = []
    for record in records:
        _check_record(record, source)  # checked in the first pass; the file may have changed
        if isinstance(record, PendingWrite):
            writes.append(record)  # an archive keeps a checkpoint's writes right after it
            continue
        await writer.put_writes(writes)
        writes = []
        if record.trace_id != last_trace:
            await writer.verify()
            last_trace = record.trace_id
        await writer.put(record)
        bar.advance()
    await writer.put_writes(writes)
    await writer.verify()
