"""Where ``copy`` and ``import`` write: a store that is never overwritten, and what was done.

A checkpoint or a pending write the destination holds already, identical, is
skipped; a different one in its place stops the run. Everything written is read
back and compared.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NoReturn

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.cli._common import Settings, command_line, shown
from flowpoint.cli._damage import damage_json, describe_damage
from flowpoint.cli._output import ExitCode, fail, print_error, print_warning
from flowpoint.cli._source import write_key
from flowpoint.errors import CheckpointConflict
from flowpoint.ids import CheckpointId
from flowpoint.stores._base import BlobCheckpointStore, different_header

__all__ = ["TransferReport", "TransferWriter"]


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
        stored = {write_key(one): one for one in await self.store.load_writes(checkpoint)}
        new: list[PendingWrite] = []
        for write in writes:
            there = stored.get(write_key(write))
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
            digests[write_key(write)] = hashlib.sha256(write.data).digest()
        self.report.writes_copied += len(new)

    async def _verify_writes(self) -> None:
        pending, self._pending_writes = self._pending_writes, {}
        for checkpoint, digests in pending.items():
            back = {
                write_key(one): hashlib.sha256(one.data).digest()
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
