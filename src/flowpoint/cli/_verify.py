"""``verify``: load and decode every checkpoint and pending write; name each one damaged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import typer

from flowpoint._chains import MissingBase
from flowpoint.blob import CheckpointInfo, DamagedRecord
from flowpoint.cli._common import (
    DebugOption,
    JsonOption,
    KeyringOption,
    Settings,
    StoreOption,
    TypeOption,
    import_state_type,
    make_codec,
    opened_store,
    require_trace,
    shown,
)
from flowpoint.cli._damage import list_trace, list_traces
from flowpoint.cli._output import (
    ExitCode,
    emit_json,
    print_error,
    progressbar,
    run,
    stdout_console,
    table,
)
from flowpoint.codec._base import WriteCodec
from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.ids import TraceId
from flowpoint.stores._base import BlobCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__all__ = ["Problem", "VerifyReport", "check_checkpoint", "check_writes", "verify"]

ProblemKind = Literal["corrupt", "undecodable"]


@dataclass(frozen=True, slots=True)
class Problem:
    """A checkpoint that failed: ``corrupt`` (damaged) or ``undecodable`` (a missing key...).

    ``trace_id`` and ``step`` are ``None`` where the damage hides them.
    """

    kind: ProblemKind
    trace_id: str | None
    reason: str
    checkpoint_id: str | None = None
    step: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The problem as JSON-ready values, in a fixed key order."""
        return {
            "kind": self.kind,
            "checkpoint_id": self.checkpoint_id,
            "trace_id": self.trace_id,
            "step": self.step,
            "reason": self.reason,
        }


@dataclass(slots=True)
class VerifyReport:
    """What ``verify`` found; checkpoints deleted while it ran count as ``vanished``.

    ``writes`` counts the pending writes checked; a damaged one is a problem of
    its checkpoint, which is counted ``ok`` if it is intact itself.
    """

    traces: int = 0
    checked: int = 0
    ok: int = 0
    vanished: int = 0
    writes: int = 0
    problems: list[Problem] = field(default_factory=list)

    def count(self, kind: ProblemKind) -> int:
        """How many problems of ``kind`` were found."""
        return sum(1 for problem in self.problems if problem.kind == kind)

    @property
    def exit_code(self) -> ExitCode:
        """3 if anything is corrupt; else 1 if anything could not be decoded; else 0."""
        if self.count("corrupt"):
            return ExitCode.CORRUPT
        return ExitCode.ERROR if self.problems else ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready values, in a fixed key order."""
        return {
            "traces": self.traces,
            "checked": self.checked,
            "ok": self.ok,
            "corrupt": self.count("corrupt"),
            "undecodable": self.count("undecodable"),
            "vanished": self.vanished,
            "writes": self.writes,
            "problems": [problem.as_json() for problem in self.problems],
        }


async def check_checkpoint(
    reader: TypedCheckpointStore[Any], info: CheckpointInfo
) -> Problem | Literal["vanished"] | None:
    """Load one listed checkpoint and decode it (and its chain) without a graph check.

    ``None`` if it is intact; ``"vanished"`` if it was deleted since the listing
    (also while its chain was read); otherwise the :class:`Problem`. Storage
    failures are not caught: they stop the run.
    """

    def problem(kind: ProblemKind, reason: str) -> Problem:
        return Problem(kind, info.trace_id, reason, str(info.checkpoint_id), info.step)

    try:
        blob = await reader.store.load(info.checkpoint_id)
        if blob is None:
            return "vanished"
        if blob.checkpoint_id != info.checkpoint_id or blob.trace_id != info.trace_id:
            return problem(
                "corrupt",
                f"the store returned checkpoint {blob.checkpoint_id} of trace {blob.trace_id!r}",
            )
        await reader.decode(blob, None)
    except CorruptCheckpoint as exc:
        # A chain read while a prune rewrote it: damage only if the checkpoint is still there.
        if isinstance(exc, MissingBase) and await reader.store.load(info.checkpoint_id) is None:
            return "vanished"
        return problem("corrupt", exc.reason)
    except CodecError as exc:
        return problem("undecodable", str(exc))
    return None


async def check_writes(
    store: BlobCheckpointStore, codec: WriteCodec, info: CheckpointInfo
) -> tuple[int, list[Problem]]:
    """Load the pending writes of a listed checkpoint and decode each one.

    Returns how many there are and what is wrong with them: a write must decode
    (checksum, the key it is filed under, decryption) and be filed under the
    checkpoint's own trace. Storage failures are not caught.
    """

    def problem(kind: ProblemKind, reason: str) -> Problem:
        return Problem(kind, info.trace_id, reason, str(info.checkpoint_id), info.step)

    try:
        writes = await store.load_writes(info.checkpoint_id)
    except CorruptCheckpoint as exc:  # a damaged write record
        return 0, [problem("corrupt", exc.reason)]
    problems: list[Problem] = []
    for write in writes:
        if write.checkpoint_id != info.checkpoint_id or write.trace_id != info.trace_id:
            problems.append(
                problem(
                    "corrupt",
                    f"pending write {write.task_id!r:.80} is filed under checkpoint "
                    f"{write.checkpoint_id} of trace {write.trace_id!r:.80}, but the "
                    f"checkpoint is of trace {info.trace_id!r:.80}",
                )
            )
            continue
        try:
            codec.decode_write(write)
        except CorruptCheckpoint as exc:
            problems.append(problem("corrupt", exc.reason))
        except CodecError as exc:
            problems.append(problem("undecodable", str(exc)))
    return len(writes), problems


def verify(
    ctx: typer.Context,
    trace: Annotated[
        str | None,
        typer.Argument(
            metavar="TRACE",
            help="Verify only this trace (default: every trace).",
            show_default=False,
        ),
    ] = None,
    type_: TypeOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Check every checkpoint's integrity: checksum, header, decryption, decoding.

    Each checkpoint's pending writes are checked too, and must be filed under
    its trace. A record the listing finds damaged is corrupt; the rest is still
    checked. Names each bad checkpoint and why. Exits 3 if any is corrupt, 1 if
    some could not be decoded (an encrypted store without its --keyring, a state
    that does not fit --type) but none is corrupt, 0 if all are intact.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    run(lambda: _verify(settings, trace, import_state_type(type_)), debug=settings.debug)


async def _verify(settings: Settings, only: str | None, state_type: Any) -> ExitCode:
    codec = make_codec(settings, state_type)
    report = VerifyReport()
    async with opened_store(settings.store, "read") as store:
        # One facade for the run: each checkpoint's fields are kept, for the delta after it.
        reader = TypedCheckpointStore(store, codec)
        damaged: list[DamagedRecord] = []
        if only is not None:
            await require_trace(store, only, settings.store)
            names = [TraceId(only)]
        else:
            names, damaged = await list_traces(store)
        listings: list[list[CheckpointInfo]] = []
        for trace in names:
            infos, trace_damage = await list_trace(store, trace)
            listings.append(infos)
            damaged += trace_damage
        report.problems += [_damage_problem(record) for record in damaged]
        # A damaged record is a checkpoint checked (and found corrupt); a trace that
        # cannot be listed at all is not counted as one.
        report.checked += sum(1 for record in damaged if record.checkpoint_id is not None)
        report.traces = len(names)
        total = sum(len(infos) for infos in listings)
        with progressbar(total, "verifying", enabled=not settings.json) as bar:
            for infos in listings:
                for info in reversed(infos):  # oldest first, as the trace was written
                    outcome = await check_checkpoint(reader, info)
                    report.checked += 1
                    if outcome is None:
                        report.ok += 1
                    elif outcome == "vanished":
                        report.vanished += 1
                    else:
                        report.problems.append(outcome)
                    if outcome != "vanished":
                        writes, problems = await check_writes(store, codec, info)
                        report.writes += writes
                        report.problems += problems
                    bar.advance()
    _print_report(settings, report)
    return report.exit_code


def _damage_problem(record: DamagedRecord) -> Problem:
    """A record the listing found damaged, as the problem ``verify`` reports."""
    reason = record.reason
    if record.checkpoint_id is None:
        reason = f"listing the trace failed: {reason}"
    return Problem(
        "corrupt",
        record.trace_id,
        reason,
        None if record.checkpoint_id is None else str(record.checkpoint_id),
        record.step,
    )


def _print_report(settings: Settings, report: VerifyReport) -> None:
    corrupt, undecodable = report.count("corrupt"), report.count("undecodable")
    if settings.json:
        emit_json({"store": shown(settings.store), **report.as_json()})
    else:
        _print_table(report, corrupt, undecodable)
    # The line that explains a non-zero exit, in JSON mode too (stdout holds the document).
    if corrupt:
        print_error(f"{corrupt} corrupt checkpoint(s) or trace(s) in {shown(settings.store)}")
    elif undecodable:
        print_error(
            f"{undecodable} checkpoint(s) could not be decoded (is --keyring or --type missing?)"
        )


def _print_table(report: VerifyReport, corrupt: int, undecodable: int) -> None:
    console = stdout_console()
    if report.problems:
        grid = table("problem", "checkpoint id", "trace", "step", "reason")
        for problem in report.problems:
            grid.add_row(
                problem.kind,
                problem.checkpoint_id or "—",
                "—" if problem.trace_id is None else problem.trace_id,
                "—" if problem.step is None else str(problem.step),
                problem.reason,
            )
        console.print(grid)
    summary = (
        f"{report.checked} checkpoint(s) in {report.traces} trace(s): {report.ok} ok, "
        f"{corrupt} corrupt, {undecodable} undecodable"
    )
    if report.writes:
        summary += f"; {report.writes} pending write(s) checked"
    if report.vanished:
        summary += f", {report.vanished} deleted while verifying"
    console.print(summary, markup=False, style="green" if not report.problems else None)
