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

from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from typing import Annotated

import typer

from flowpoint.blob import CheckpointBlob, DamagedRecord, PendingWrite
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
    opened_store,
    require_trace,
    shown,
)
from flowpoint.cli._damage import damage_json, list_traces
from flowpoint.cli._files import archive_input, archive_output
from flowpoint.cli._output import (
    ExitCode,
    Progressbar,
    emit_json,
    fail,
    progressbar,
    run,
    stderr_console,
    stdout_console,
)
from flowpoint.cli._sink import TransferReport, TransferWriter
from flowpoint.cli._source import Loaded, Source, Vanished, envelope_damage
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore

__all__ = ["copy", "export", "import_"]

SkipCorruptOption = Annotated[
    bool,
    typer.Option(
        "--skip-corrupt",
        help="Report each checkpoint that cannot be read, skip it, and go on "
        "(then exit 3 once the rest is done).",
    ),
]


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
    if (reason := envelope_damage(record)) is None:
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
