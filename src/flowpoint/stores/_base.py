"""The storage interface: bytes in, bytes out, asynchronous.

Every backend implements :class:`BlobCheckpointStore`. The contract is written
here once; a backend's own docstring says only where it differs.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import string
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar, cast
from uuid import UUID

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    DamagedRecord,
    PendingWrite,
    check_write_key,
)
from flowpoint.errors import CheckpointConflict, CheckpointStoreError, StorageError
from flowpoint.ids import CheckpointId, TraceId, coerce_checkpoint_id, validate_trace_id
from flowpoint.stores._thread import WorkThread

__all__ = [
    "HISTORY_PAGE",
    "BlobCheckpointStore",
    "BlockingBlobStore",
    "DamageReportingBlobStore",
    "DriverErrors",
    "PruneRule",
    "RewritableBlobStore",
    "check_blob",
    "check_read_only",
    "check_write_batch",
    "check_writes_trace",
    "different_header",
    "hex_prefix",
    "id_range",
    "in_caller_thread",
    "missing_driver",
    "rewrite_conflict",
    "run_in_caller_thread",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")

HISTORY_PAGE = 500
"""Headers read per call when a whole trace is walked (:meth:`BlobCheckpointStore.iter_history`)."""
_ID_CHARACTERS = frozenset(string.hexdigits.lower() + "-")
_CANONICAL_ID = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"


class PruneRule:
    """Which checkpoints of a trace :meth:`BlobCheckpointStore.prune` deletes.

    A checkpoint is deleted when it meets every rule given: it is not among the
    newest ``keep_latest`` steps, and it was created before ``now - older_than``.
    Giving neither rule is refused, so that a prune never empties a trace by accident.
    """

    __slots__ = ("cutoff", "keep_latest")

    def __init__(
        self,
        keep_latest: int | None,
        older_than: timedelta | None,
        now: datetime | None = None,
    ) -> None:
        if keep_latest is None and older_than is None:
            raise ValueError("prune needs keep_latest, older_than, or both")
        if keep_latest is not None and (
            isinstance(keep_latest, bool) or not isinstance(keep_latest, int) or keep_latest < 0
        ):
            raise ValueError(f"keep_latest must be an int >= 0, not {keep_latest!r}")
        if older_than is not None and (
            not isinstance(older_than, timedelta) or older_than < timedelta(0)
        ):
            raise ValueError(f"older_than must be a timedelta >= 0, not {older_than!r}")
        self.keep_latest = keep_latest
        self.cutoff = None if older_than is None else (now or datetime.now(UTC)) - older_than

    def doomed(self, newest_first: list[CheckpointInfo]) -> list[CheckpointInfo]:
        """The checkpoints to delete, given a whole trace listed newest first."""
        candidates = newest_first if self.keep_latest is None else newest_first[self.keep_latest :]
        if self.cutoff is None:
            return list(candidates)
        cutoff = self.cutoff
        return [info for info in candidates if info.created_at < cutoff]


def _no_conflict(exc: BaseException) -> Literal["step", "id"] | None:
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:300]


@dataclass(frozen=True, slots=True)
class DriverErrors:
    """A backend's table of its driver's exceptions, which the base class applies.

    An exception of one of the ``failures`` types, raised by anything a call to the
    backend does, becomes :class:`~flowpoint.errors.StorageError` (``describe``
    gives the message; the driver's exception is the cause). On a save, one that
    ``conflict`` names as a refusal of the one-winner rule (``"step"``: the trace's
    step is taken, ``"id"``: the checkpoint id is) becomes
    :class:`~flowpoint.errors.CheckpointConflict` instead. Other exceptions pass
    unchanged. A backend that expects a driver exception as an answer (a
    conditional write refused) catches that one where it makes the request.
    """

    failures: tuple[type[BaseException], ...]
    conflict: Callable[[BaseException], Literal["step", "id"] | None] = _no_conflict
    describe: Callable[[BaseException], str] = _first_line


_NO_DRIVER = DriverErrors(failures=())


class BlobCheckpointStore(abc.ABC):
    """Asynchronous storage of encoded checkpoints, indexed by trace and step.

    A store never decodes ``data``; it keeps the header fields beside it so that
    listings never read the bytes. Stores are used as async context managers:
    ``async with open_store(url) as store: ...`` closes the store on exit. A store
    closes the clients it created from a URL, never one the application gave it.

    The public methods check their arguments (an invalid trace id raises
    :class:`~flowpoint.errors.InvalidTraceId`, a ``ValueError``) and then call the
    ``_``-prefixed method a backend implements; any valid trace id must be kept
    safely (no path traversal, no key injection). Damage found in a backend's own
    data raises :class:`~flowpoint.errors.CorruptCheckpoint`; a backend failure
    raises :class:`~flowpoint.errors.StorageError` with the driver's exception as
    its cause. No other exception escapes for any stored bytes.

    After :meth:`close`, every method but ``close`` raises
    :class:`~flowpoint.errors.StorageError` saying the store is closed, and does
    nothing else; a call already running finishes.

    A store opened read-only (``open_store(url, read_only=True)``, or a backend's
    ``read_only=True``) changes nothing in its storage: the methods that write
    (:meth:`save`, :meth:`save_writes`, the deletes, :meth:`prune`, a rewrite)
    raise :class:`~flowpoint.errors.StorageError` saying so, and the others
    create no table, file or key. Opening storage that is not a flowpoint store
    read-only makes the first call raise :class:`~flowpoint.errors.StorageError`
    saying so, where the backend can tell (see each backend).

    How a backend's driver exceptions become these errors is declared once per
    backend (:meth:`_driver_errors`, a :class:`DriverErrors` table) and applied
    here, around every call to the backend.
    """

    _closed: bool = False
    _read_only: bool = False

    @property
    def read_only(self) -> bool:
        """Whether the store was opened read-only: then every method that writes refuses."""
        return self._read_only

    async def save(self, blob: CheckpointBlob) -> None:
        """Store ``blob`` durably; when this returns, the save survives a crash.

        A trace holds at most one checkpoint per step, and a checkpoint id is stored
        once: if either exists already, raise
        :class:`~flowpoint.errors.CheckpointConflict` and store nothing. Of N
        concurrent writers of one ``(trace_id, step)``, in this process or another,
        exactly one succeeds.
        """
        with self._calling("save", blob=blob, writes=True):
            check_blob("save", blob)
            await self._save(blob)

    async def load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        """The blob with this id, or ``None`` if there is none."""
        with self._calling("load"):
            return await self._load(coerce_checkpoint_id(checkpoint_id))

    async def load_latest(self, trace_id: TraceId | str) -> CheckpointBlob | None:
        """The blob with the highest step in the trace, or ``None`` for an empty trace.

        "Latest" is the highest step, not the last write to arrive.
        """
        with self._calling("load_latest"):
            return await self._load_latest(validate_trace_id(trace_id))

    async def writes_if_latest(self, blob: CheckpointBlob) -> list[PendingWrite] | None:
        """The writes of ``blob`` if it is, byte for byte, its trace's latest; else ``None``.

        For a caller that keeps the latest checkpoint it saved or loaded: one read
        tells whether the store holds anything newer in the trace (or other bytes
        under that id), and gives what :meth:`load_writes` gives for it.
        """
        if not isinstance(blob, CheckpointBlob):
            raise TypeError(f"writes_if_latest takes a CheckpointBlob, not {type(blob).__name__}")
        # No other check of the blob: one the store could not hold is not its latest.
        with self._calling("writes_if_latest"):
            found = await self._writes_if_latest(blob)
        return None if found is None else sorted(found, key=_write_key)

    async def history(
        self, trace_id: TraceId | str, limit: int = 50, before_step: int | None = None
    ) -> list[CheckpointInfo]:
        """Up to ``limit`` headers of the trace, newest (highest step) first.

        With ``before_step``, only steps below it: pass the last step of one page
        to get the next. An unknown trace gives an empty list. A damaged record
        in the page raises :class:`~flowpoint.errors.CorruptCheckpoint`
        (:meth:`history_entries` lists it and goes on).
        """
        with self._calling("history"):
            trace = validate_trace_id(trace_id)
            check_history_args(limit, before_step)
            return await self._history(trace, limit, before_step)

    async def history_entries(
        self, trace_id: TraceId | str, limit: int = 50, before_step: int | None = None
    ) -> list[CheckpointInfo | DamagedRecord]:
        """:meth:`history`, with a :class:`~flowpoint.blob.DamagedRecord` for each damaged record.

        A record whose header cannot be read (a column of the wrong kind, bad
        metadata JSON, a broken file header) takes its place in the page as a
        ``DamagedRecord`` with what is readable of it (its id and step, mostly)
        and the reason; the other headers are listed as :meth:`history` lists
        them. Page on with the step of the last entry that has one.
        """
        with self._calling("history"):
            trace = validate_trace_id(trace_id)
            check_history_args(limit, before_step)
            return await self._history_entries(trace, limit, before_step)

    async def traces(self) -> list[TraceId]:
        """Every trace that holds at least one checkpoint, sorted.

        A trace id that cannot be read back raises
        :class:`~flowpoint.errors.CorruptCheckpoint` (:meth:`trace_entries` lists it).
        """
        with self._calling("traces"):
            return await self._traces()

    async def trace_entries(self) -> list[TraceId | DamagedRecord]:
        """:meth:`traces`, then a :class:`~flowpoint.blob.DamagedRecord` for each unreadable one.

        A trace id that cannot be read back (stored damaged, or in a record whose
        header is damaged) is reported with what is known of where it is stored;
        the other traces are listed, sorted, before those.
        """
        with self._calling("traces"):
            return await self._trace_entries()

    async def iter_history(
        self, trace_id: TraceId | str, *, before_step: int | None = None
    ) -> AsyncGenerator[CheckpointInfo, None]:
        """Every header of the trace (below ``before_step``, if given), newest first.

        Reads :data:`HISTORY_PAGE` headers per call to the backend: this is how
        anything that walks a whole trace pages through it. A damaged record raises
        :class:`~flowpoint.errors.CorruptCheckpoint` when the walk reaches it.
        """
        entries = self.iter_history_entries(trace_id, before_step=before_step)
        async with contextlib.aclosing(entries):
            async for entry in entries:
                if isinstance(entry, DamagedRecord):
                    raise entry.error()
                yield entry

    async def iter_history_entries(
        self, trace_id: TraceId | str, *, before_step: int | None = None
    ) -> AsyncGenerator[CheckpointInfo | DamagedRecord, None]:
        """:meth:`iter_history`, reporting each damaged record as :meth:`history_entries` does.

        The walk goes on past damaged records. One whose step cannot be read is
        reported once, where the backend sorts it.
        """
        with self._calling("history"):
            trace = validate_trace_id(trace_id)
            check_history_args(1, before_step)
        before = before_step
        reported: set[tuple[CheckpointId | None, str]] = set()
        while True:
            with self._calling("history"):
                page = await self._history_entries(trace, HISTORY_PAGE, before)
            for entry in page:
                if isinstance(entry, DamagedRecord) and entry.step is None:
                    # A damaged step may sort into the next page too.
                    if (entry.checkpoint_id, entry.reason) in reported:
                        continue
                    reported.add((entry.checkpoint_id, entry.reason))
                yield entry
            steps = [entry.step for entry in page if entry.step is not None]
            if not steps or (before is not None and min(steps) >= before):
                return  # the end, or a page of nothing but unreadable steps
            before = min(steps)

    async def ids_with_prefix(self, prefix: str, limit: int = 2) -> list[CheckpointId]:
        """Up to ``limit`` stored checkpoint ids whose text starts with ``prefix``, ascending.

        The text of an id is its canonical form, lowercase hex with dashes
        (``01a219cb-c63a-7371-...``); ``prefix`` may be given in either case. This is
        how a person refers to a checkpoint by the first few characters of its id:
        ask for two, and one found means the prefix is unique. A prefix that could
        not start an id (not hex digits and dashes, or longer than 36 characters)
        raises ``ValueError``.
        """
        with self._calling("ids_with_prefix"):
            wanted = prefix.lower() if isinstance(prefix, str) else prefix
            if (
                not isinstance(wanted, str)
                or not 1 <= len(wanted) <= 36
                or not set(wanted) <= _ID_CHARACTERS
            ):
                raise ValueError(f"not the start of a checkpoint id: {prefix!r:.60}")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"limit must be an int >= 1, not {limit!r}")
            return await self._ids_with_prefix(wanted, limit)

    async def load_steps(
        self, trace_id: TraceId | str, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        """The trace's blobs with ``first_step <= step <= last_step``, ascending by step.

        Steps the trace does not hold are skipped; an empty range or an unknown
        trace gives an empty list. This is how a checkpoint stored as changes gets
        the checkpoints before it in one call instead of one call each.
        """
        with self._calling("load_steps"):
            trace = validate_trace_id(trace_id)
            for name, value in (("first_step", first_step), ("last_step", last_step)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be an int >= 0, not {value!r}")
            if first_step > last_step:
                return []
            return await self._load_steps(trace, first_step, last_step)

    async def save_writes(self, writes: Iterable[PendingWrite], *, overwrite: bool = False) -> int:
        """Save task writes against the checkpoint their task ran from; all or none.

        Every write of one call belongs to the same trace and checkpoint. A write is
        keyed by ``(checkpoint_id, task_id, index)``. Without ``overwrite`` the first
        write of a key wins: a key stored already keeps its data, and that is not an
        error, so a task is recorded once however often its writes are sent (a retry,
        a rerun after a crash, a second worker). Of concurrent writers of one key, in
        this process or another, exactly one stores it. With ``overwrite=True`` the
        new data replaces what is stored (a later attempt's error, re-encryption).
        Returns how many writes were stored or replaced. When this returns, the
        writes are as durable as a save; a call that fails stores none of them.

        The store does not check that the checkpoint exists, but the writes of one
        checkpoint belong to one trace: a call naming another trace than the writes
        already stored for its checkpoint raises ``ValueError`` and stores nothing.
        Deleting a checkpoint id (also one that is not stored), its trace, or pruning
        it deletes its writes.
        """
        with self._calling("save_writes", writes=True):
            batch = check_write_batch(writes)
            if not batch:
                return 0
            return await self._save_writes(batch, overwrite=bool(overwrite))

    async def load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        """The writes saved against the checkpoint, by task id, then index; ``[]`` if none.

        A damaged write record raises :class:`~flowpoint.errors.CorruptCheckpoint`
        naming the checkpoint.
        """
        with self._calling("load_writes"):
            writes = await self._load_writes(coerce_checkpoint_id(checkpoint_id))
        return sorted(writes, key=_write_key)

    async def load_writes_many(
        self, checkpoint_ids: Iterable[CheckpointId]
    ) -> dict[CheckpointId, list[PendingWrite]]:
        """The writes of each of these checkpoints, as :meth:`load_writes` gives them.

        Every id asked for is a key, with ``[]`` for a checkpoint without writes
        (or not stored). Backends that can read them in one query do; the others
        read one checkpoint after another.
        """
        with self._calling("load_writes_many"):
            wanted = list(dict.fromkeys(coerce_checkpoint_id(one) for one in checkpoint_ids))
            found = await self._load_writes_many(wanted) if wanted else {}
        return {one: sorted(found.get(one, ()), key=_write_key) for one in wanted}

    async def delete(self, checkpoint_id: CheckpointId) -> bool:
        """Delete one checkpoint and its writes; ``False`` (and no error) if it was not there.

        Deleting a trace's newest checkpoint makes the next one down the latest. The
        writes saved against the id go whether or not the checkpoint was stored.
        """
        with self._calling("delete", writes=True):
            return await self._delete(coerce_checkpoint_id(checkpoint_id))

    async def delete_many(self, checkpoint_ids: Iterable[CheckpointId]) -> int:
        """Delete these checkpoints and their writes; return how many checkpoints were there.

        Ids not stored are skipped. Backends that can delete in one transaction
        (and one durable commit) do so; the others delete one by one.
        """
        with self._calling("delete_many", writes=True):
            wanted = list(dict.fromkeys(coerce_checkpoint_id(one) for one in checkpoint_ids))
            if not wanted:
                return 0
            return await self._delete_many(wanted)

    async def delete_trace(self, trace_id: TraceId | str) -> int:
        """Delete every checkpoint of the trace (and every write) and return how many there were."""
        with self._calling("delete_trace", writes=True):
            return await self._delete_trace(validate_trace_id(trace_id))

    async def prune(self, trace_id: TraceId | str, rule: PruneRule) -> int:
        """Delete the checkpoints of the trace that ``rule`` selects, with their writes.

        Returns how many checkpoints were deleted.
        """
        with self._calling("prune", writes=True):
            if not isinstance(rule, PruneRule):
                raise TypeError(f"prune takes a PruneRule, not {type(rule).__name__}")
            return await self._prune(validate_trace_id(trace_id), rule)

    async def close(self) -> None:
        """Release what the store opened; then every other call is refused. Twice is harmless."""
        if self._closed:
            return
        self._closed = True
        with self._driver_boundary("close"):
            await self._close()

    def _calling(
        self, action: str, *, blob: CheckpointBlob | None = None, writes: bool = False
    ) -> _DriverBoundary:
        """Refuse the call if the store is closed (or it ``writes`` to a read-only store).

        Then map the driver errors raised inside it: ``blob`` is the checkpoint a
        save stores, so that a conflict the driver reports becomes its
        :class:`~flowpoint.errors.CheckpointConflict`.
        """
        if self._closed:
            raise StorageError(f"{self!r} is closed: {action} refused")
        if writes and self._read_only:
            raise StorageError(f"{self!r} is opened read-only: {action} refused")
        return _DriverBoundary(self, action, blob)

    def _driver_boundary(self, action: str, blob: CheckpointBlob | None = None) -> _DriverBoundary:
        """Where a driver's exception becomes a flowpoint error (see :class:`DriverErrors`)."""
        return _DriverBoundary(self, action, blob)

    def _driver_errors(self) -> DriverErrors:
        """The backend's table of driver exceptions; a store without a driver has none."""
        return _NO_DRIVER

    async def _close(self) -> None:  # noqa: B027 - a store that holds nothing has nothing to close
        """Release what the backend opened; called once, by :meth:`close`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # What a backend implements. Arguments have been checked by the public methods.

    @abc.abstractmethod
    async def _save(self, blob: CheckpointBlob) -> None: ...

    @abc.abstractmethod
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None: ...

    @abc.abstractmethod
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None: ...

    @abc.abstractmethod
    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]: ...

    @abc.abstractmethod
    async def _traces(self) -> list[TraceId]: ...

    async def _writes_if_latest(self, blob: CheckpointBlob) -> list[PendingWrite] | None:
        """A backend that can check and read in one query overrides this."""
        latest = await self._load_latest(blob.trace_id)
        if latest is None or latest.checkpoint_id != blob.checkpoint_id or latest.data != blob.data:
            return None
        return await self._load_writes(blob.checkpoint_id)

    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        """A page that lists damaged records; a store that cannot tell them apart raises.

        :class:`DamageReportingBlobStore` implements it and derives ``_history``.
        """
        return list(await self._history(trace_id, limit, before_step))

    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        """The traces, and damaged ones; a store that cannot tell them apart raises."""
        return list(await self._traces())

    @abc.abstractmethod
    async def _delete(self, checkpoint_id: CheckpointId) -> bool: ...

    @abc.abstractmethod
    async def _delete_trace(self, trace_id: TraceId) -> int: ...

    @abc.abstractmethod
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int: ...

    @abc.abstractmethod
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]: ...

    async def _load_writes_many(
        self, checkpoint_ids: list[CheckpointId]
    ) -> dict[CheckpointId, list[PendingWrite]]:
        """One :meth:`_load_writes` per checkpoint. Backends that read many at once override this.

        Each checkpoint's writes under its id; ids without writes may be left out.
        """
        return {one: await self._load_writes(one) for one in checkpoint_ids}

    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        """Walk every trace's headers. Backends with an index by id override this."""
        found: list[CheckpointId] = []
        for trace in await self._traces():
            async for info in self.iter_history(trace):
                if str(info.checkpoint_id).startswith(prefix):
                    found.append(info.checkpoint_id)
        return sorted(found)[:limit]

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        """List the range's headers, then load each blob.

        Backends that can read a step range in one query override this.
        """
        found: list[CheckpointBlob] = []
        infos = self.iter_history(trace_id, before_step=last_step + 1)
        async with contextlib.aclosing(infos):
            async for info in infos:
                if info.step < first_step:
                    break
                blob = await self._load(info.checkpoint_id)
                if blob is not None:  # None: deleted since the listing
                    found.append(blob)
        return found[::-1]

    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        """Delete one by one. Backends that can delete a batch at once override this."""
        deleted = 0
        for checkpoint_id in checkpoint_ids:
            deleted += await self._delete(checkpoint_id)
        return deleted

    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        """List the whole trace and delete what ``rule`` selects, one by one.

        Backends that can select and delete in one statement override this.
        """
        infos = [info async for info in self.iter_history(trace_id)]
        deleted = 0
        for info in rule.doomed(infos):
            deleted += await self._delete(info.checkpoint_id)
        return deleted


class DamageReportingBlobStore(BlobCheckpointStore):
    """A store whose listings tell a damaged record from the others: an ability.

    It implements :meth:`_history_entries` and :meth:`_trace_entries`; the strict
    listings raise for the first damaged record they hold. Every backend of
    flowpoint has it; a store without it lists nothing past damage.
    """

    @abc.abstractmethod
    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]: ...

    @abc.abstractmethod
    async def _trace_entries(self) -> list[TraceId | DamagedRecord]: ...

    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        return _undamaged(await self._history_entries(trace_id, limit, before_step))

    async def _traces(self) -> list[TraceId]:
        return _undamaged(await self._trace_entries())


_E = TypeVar("_E")


def _undamaged(entries: list[_E | DamagedRecord]) -> list[_E]:
    """The entries, or the error of the first damaged record among them."""
    for entry in entries:
        if isinstance(entry, DamagedRecord):
            raise entry.error()
    return cast("list[_E]", entries)


class RewritableBlobStore(BlobCheckpointStore):
    """A store that can replace the data of a checkpoint it holds: an optional ability.

    Rekeying (:meth:`flowpoint.TypedCheckpointStore.rekey`) needs it, to re-encrypt
    checkpoints under a new key without changing anything else about them.
    """

    async def rewrite(self, blob: CheckpointBlob) -> bool:
        """Replace the stored data of checkpoint ``blob.checkpoint_id`` with ``blob.data``.

        The checkpoint must be stored with exactly ``blob``'s header (id, trace,
        step, parent, graph hash, creation time, node and metadata, with the same
        types): only the data changes. Returns ``False``, changing nothing, if the
        store has no checkpoint with that id (it was deleted, say); raises
        :class:`~flowpoint.errors.CheckpointConflict`, changing nothing, if it has
        one with another header. The replacement is atomic and durable as a save
        is: a reader sees the old data or the new, never a mix, and when this
        returns the new data survives a crash.
        """
        with self._calling("rewrite", writes=True):
            check_blob("rewrite", blob)
            return await self._rewrite(blob)

    @abc.abstractmethod
    async def _rewrite(self, blob: CheckpointBlob) -> bool: ...


def different_header(stored: CheckpointHeader, new: CheckpointHeader) -> str | None:
    """The first header field in which ``new`` differs from ``stored``, or ``None``."""
    return stored.first_difference(new)


def rewrite_conflict(new: CheckpointBlob, field: str) -> CheckpointConflict:
    """The error for a rewrite whose header differs from the stored one in ``field``."""
    return CheckpointConflict(
        new.trace_id,
        new.step,
        f"checkpoint {new.checkpoint_id} is stored with another {field}; "
        f"a rewrite replaces the data only",
    )


def check_writes_trace(write: PendingWrite, stored_trace: str) -> None:
    """Raise ``ValueError`` if the checkpoint's writes are stored under another trace."""
    if stored_trace != write.trace_id:
        raise ValueError(
            f"the writes of checkpoint {write.checkpoint_id} are stored under trace "
            f"{stored_trace!r:.80}, not {write.trace_id!r:.80}"
        )


def _write_key(write: PendingWrite) -> tuple[str, int]:
    return (write.task_id, write.index)


def hex_prefix(prefix: str) -> str | None:
    """The hex digits of a checkpoint id's text start, or ``None`` if a dash is out of place.

    >>> hex_prefix("01a219cb-c6")
    '01a219cbc6'
    """
    if any((ch == "-") != (_CANONICAL_ID[i] == "-") for i, ch in enumerate(prefix)):
        return None
    return prefix.replace("-", "")


def id_range(prefix: str) -> tuple[CheckpointId, CheckpointId | None] | None:
    """The ids whose canonical text starts with ``prefix`` (lowercase), as a range.

    Returns the lowest such id and the lowest id above them all (``None`` when
    none is), or ``None`` when no id's text can start so (a dash out of place).
    Ids compare as their 16 bytes do, which is how SQL indexes order them.

    >>> low, high = id_range("01a2")
    >>> str(low), str(high)
    ('01a20000-0000-0000-0000-000000000000', '01a30000-0000-0000-0000-000000000000')
    """
    digits = hex_prefix(prefix)
    if digits is None:
        return None
    if not digits:
        return CheckpointId(UUID(int=0)), None
    shift = 4 * (32 - len(digits))
    low = int(digits, 16) << shift
    high = (int(digits, 16) + 1) << shift
    return CheckpointId(UUID(int=low)), None if high >> 128 else CheckpointId(UUID(int=high))


class _DriverBoundary:
    """:meth:`BlobCheckpointStore._driver_boundary`: around every call a store makes.

    A class rather than a generator's context manager, since every call of every
    store enters one: this costs a fraction of a microsecond, that a few.
    """

    __slots__ = ("_action", "_blob", "_store")

    def __init__(
        self, store: BlobCheckpointStore, action: str, blob: CheckpointBlob | None
    ) -> None:
        self._store = store
        self._action = action
        self._blob = blob

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, CheckpointStoreError):
            return
        table = self._store._driver_errors()
        if not isinstance(exc, table.failures):
            return  # not the driver's: a bug, or an argument refused
        blob = self._blob
        refused = table.conflict(exc) if blob is not None else None
        if blob is not None and refused is not None:
            detail = f"checkpoint id {blob.checkpoint_id} exists" if refused == "id" else None
            raise CheckpointConflict(blob.trace_id, blob.step, detail) from exc
        raise StorageError(
            f"{self._store!r}: {self._action} failed: {table.describe(exc)}"
        ) from exc


def check_write_batch(writes: Iterable[PendingWrite]) -> list[PendingWrite]:
    """The writes of one ``save_writes`` call, checked: one checkpoint's, each key once."""
    batch = list(writes)
    if not batch:
        return batch
    first = batch[0]
    for write in batch:
        _check_write(write)
        if (write.trace_id, write.checkpoint_id) != (first.trace_id, first.checkpoint_id):
            raise ValueError(
                "one save_writes call takes the writes of one checkpoint: "
                f"{write.checkpoint_id} of {write.trace_id!r:.80} is not "
                f"{first.checkpoint_id} of {first.trace_id!r:.80}"
            )
    keys = {(write.task_id, write.index) for write in batch}
    if len(keys) != len(batch):
        raise ValueError("one save_writes call names a (task_id, index) twice")
    return batch


def _check_write(write: PendingWrite) -> None:
    if not isinstance(write, PendingWrite):
        raise TypeError(f"save_writes takes PendingWrite objects, not {type(write).__name__}")
    validate_trace_id(write.trace_id)
    coerce_checkpoint_id(write.checkpoint_id)
    check_write_key(write.task_id, write.index)
    if not isinstance(write.data, bytes):
        raise TypeError(f"a write's data must be bytes, not {type(write.data).__name__}")


def check_blob(action: str, blob: CheckpointBlob) -> None:
    if not isinstance(blob, CheckpointBlob):
        raise TypeError(f"{action} takes a CheckpointBlob, not {type(blob).__name__}")
    validate_trace_id(blob.trace_id)  # InvalidTraceId, as the other methods raise
    try:
        blob.check()
    except ValueError as exc:
        raise ValueError(f"cannot store checkpoint {blob.checkpoint_id}: {exc}") from None


_IN_CALLER_THREAD: ContextVar[bool] = ContextVar("flowpoint_in_caller_thread", default=False)


class BlockingBlobStore(BlobCheckpointStore):
    """A store whose work is blocking calls: files, SQLite, or plain memory.

    Async callers get that work done in worker threads (:meth:`_blocking`), so the
    event loop never waits on I/O. The blocking facade instead drives the store's
    coroutines with :func:`run_in_caller_thread`: the work then runs right in the
    calling thread, without an event loop or a thread hop. Such a store's
    coroutines await nothing but :meth:`_blocking`.
    """

    _work_thread: WorkThread | None = None
    """Where :meth:`_blocking` runs work for async callers; ``None``: the loop's executor."""

    async def _blocking(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` in a worker thread, or at once under :func:`run_in_caller_thread`."""
        if _IN_CALLER_THREAD.get():
            return fn(*args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        if self._work_thread is not None:
            return await self._work_thread.run(call)
        return await asyncio.get_running_loop().run_in_executor(None, call)


def in_caller_thread() -> bool:
    """Whether :func:`run_in_caller_thread` is driving the current call."""
    return _IN_CALLER_THREAD.get()


def run_in_caller_thread(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a :class:`BlockingBlobStore`'s coroutine to its end in this thread.

    No event loop is involved: the store's blocking work runs here, directly.
    Raises ``RuntimeError`` if the coroutine waits on anything (it was not only a
    blocking store's work).
    """
    token = _IN_CALLER_THREAD.set(True)
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    finally:
        _IN_CALLER_THREAD.reset(token)
    coroutine.close()
    raise RuntimeError("a blocking store's coroutine waited on an event loop")


def check_read_only(read_only: object) -> bool:
    """``read_only`` if it is a bool; anything else raises ``ValueError``."""
    if not isinstance(read_only, bool):
        raise ValueError(f"read_only must be a bool, not {read_only!r:.40}")
    return read_only


def missing_driver(extra: str, cause: ImportError) -> ImportError:
    """The error for a backend whose driver is not installed: it names the extra."""
    error = ImportError(
        f"this backend needs its driver ({cause.name or cause}): pip install 'flowpoint[{extra}]'"
    )
    error.__cause__ = cause
    return error


def check_history_args(limit: int, before_step: int | None) -> None:
    """Raise ``ValueError`` for a limit below 1 or a negative ``before_step``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, not {limit!r}")
    if before_step is not None and (
        isinstance(before_step, bool) or not isinstance(before_step, int) or before_step < 0
    ):
        raise ValueError(f"before_step must be an int >= 0 or None, not {before_step!r}")
