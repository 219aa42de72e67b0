"""``file:///dir``: one file per checkpoint in a directory tree a person can read with ``ls``.

Where this backend differs from the interface contract:

- **Latest and history cost one listing of the trace's directory** (O(n) in the
  trace's checkpoints) plus one read per checkpoint returned; listings read file
  headers only, never ``data``. ``traces()`` reads no file but where a trace id
  is too long to be spelled out in its directory's name.
- **Layout**::

      <dir>/traces/<trace-dir>/<step:020d>.ckpt      one record per checkpoint
      <dir>/writes/<trace-dir>/<id hex>/<n:020d>.wr  one record per save_writes call
      <dir>/ids/<last 2 hex of id>/<id hex>          symlink to ../../traces/<trace-dir>/<step>.ckpt
      <dir>/ids/<last 2 hex of id>/<id hex>.w        symlink to ../../writes/<trace-dir>/<id hex>

  ``<trace-dir>`` is the percent-quoted trace id (at most 120 characters) then ``~``
  and 16 hex digits of its BLAKE2b hash: ``user-42/session-7`` lives in
  ``user-42%2Fsession-7~<hash>``. Names never leave ``<dir>`` and never collide,
  also on case-insensitive file systems. Record formats: :mod:`.records`.
- **Durability**: a record is written to a temp file and fsynced; then, holding
  the advisory ``flock`` of its id's ``ids/`` shard directory, the save claims the
  id (the symlink) and hard-links the record to its final name (the exclusive
  create that lets one writer per step win, across processes); the directories
  are fsynced before ``save`` returns. POSIX only (symlinks, hard links, ``flock``
  and directory fsync).
- **Interrupted saves**: a save killed between its claim and its record leaves a
  claim without a record, which reads as absent. Since every save holds its
  shard's lock from its claim to its record, and the kernel releases the lock of
  a process that dies, the next save of that checkpoint (a rerun of ``flowpoint
  copy`` or ``import``) finds such a claim under the lock, knows no save is
  behind it, and takes it over; a claim whose save is still running makes it
  wait for that save, and then conflict with it.
- **Pending writes**: each :meth:`~flowpoint.stores._base.BlobCheckpointStore.save_writes`
  call is one record, numbered in the order the calls were made and published
  with an exclusive ``link()`` of the next number: a call reads the records made
  before it, stores only the keys they do not hold (all the keys with
  ``overwrite``), and on losing the number to another call reads that call's
  record and tries the next. A call is thus all there or not at all, and of any
  number of writers of a key, in any process, exactly one stores it. Reads apply
  the records in order, the first write of a key winning unless a later record
  overwrote it. A delete removes the checkpoint's record, then its writes.
- **Rewrites** (:meth:`~flowpoint.stores._base.RewritableBlobStore.rewrite`) write
  the new record to a temp file, fsync it, rename it over the old one and fsync
  the directory. Deletes and rewrites take an advisory ``flock`` on the record
  they change (readers never do), so a rewrite never brings back a record that a
  delete removed.
- **Read-only** (``read_only=True``): the first call refuses a directory that is
  missing or holds neither ``traces/`` nor ``ids/`` (it is not a store); reads
  create nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable
from typing import IO, ParamSpec, TypeVar
from urllib.parse import quote, unquote

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id
from flowpoint.stores import _files as files
from flowpoint.stores._base import (
    BlockingBlobStore,
    DamageReportingBlobStore,
    DriverErrors,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    hex_prefix,
    rewrite_conflict,
)
from flowpoint.stores._columns import damaged_id
from flowpoint.stores._records import (
    RecordHeader,
    WritesHeader,
    checkpoint_records,
    resolve_writes,
    writes_header,
    writes_records,
)

__all__ = ["FileBlobStore", "trace_dir_name"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Record: magic, header length (u32 BE), header JSON, CRC32 of the header JSON (u32 BE), data.

_SLUG_MAX = 120
_SLUG_SAFE = "-_.@+=,"
_TRACE_DIR = re.compile(r".*~[0-9a-f]{16}\Z", re.DOTALL)
_STEP_FILE = re.compile(r"([0-9]{20})\.ckpt\Z")
# A range of steps up to this long is read by trying each step's file name, not by a listing.
_STEPS_BY_NAME = 512
_CONTINUATION_ESCAPE = re.compile(r"%[89AB][0-9A-F]")


# The file system's errors are the driver's.
_DRIVER_ERRORS = DriverErrors(failures=(OSError,), describe=str)

_RECORDS = checkpoint_records(b"FPFILE1\n")
_WRITES = writes_records(b"FPWRIT1\n")
_WRITES_FILE = re.compile(r"[0-9]{20}\.wr\Z")
_WRITES_LINK_SUFFIX = ".w"
_ID_HEX = re.compile(r"[0-9a-f]{32}\Z")
# Records a save_writes call may find taken by others before it gives up: each one
# it meets is another call's that succeeded.
_WRITES_ATTEMPTS = 1000


def trace_dir_name(trace_id: str) -> str:
    """The directory name of a trace: a readable slug of the id, ``~``, and its hash.

    >>> trace_dir_name("user-42/session-7")
    'user-42%2Fsession-7~821050a9f2f4df5f'
    """
    slug = quote(trace_id, safe=_SLUG_SAFE)
    if len(slug) > _SLUG_MAX:
        cut = _SLUG_MAX
        # Never cut a %XX escape in half...
        percent = slug.rfind("%", cut - 2, cut)
        if percent != -1:
            cut = percent
        # ...nor a character's UTF-8 sequence, so the slug stays readable.
        while cut > 0 and _CONTINUATION_ESCAPE.match(slug, cut):
            cut -= 3
        slug = slug[:cut]
    digest = hashlib.blake2b(trace_id.encode("utf-8"), digest_size=8).hexdigest()
    return f"{slug}~{digest}"


class FileBlobStore(RewritableBlobStore, DamageReportingBlobStore, BlockingBlobStore):
    """Keeps each checkpoint in its own file under ``directory`` (see the module docs).

    The constructor touches no file; the directory tree is made by the first save.
    Every file system call runs in a worker thread, never on the event loop.
    """

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False) -> None:
        path = os.fspath(directory)
        if not isinstance(path, str):
            raise TypeError(f"directory must be a str path, not {type(path).__name__}")
        self._read_only = check_read_only(read_only)
        self._root = os.path.abspath(path)
        self._traces_root = os.path.join(self._root, "traces")
        self._writes_root = os.path.join(self._root, "writes")
        self._ids_root = os.path.join(self._root, "ids")
        self._found_store = False  # read-only: the directory was seen to be a store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._root!r})"

    async def _blocking(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._read_only and not self._found_store:
            await super()._blocking(self._check_is_store)
        return await super()._blocking(fn, *args, **kwargs)

    def _check_is_store(self) -> None:
        """Refuse a directory that is missing or holds no store (see the module docs)."""
        if not os.path.isdir(self._root):
            raise StorageError(f"{self!r} is not a flowpoint store: no such directory")
        if not (os.path.isdir(self._traces_root) or os.path.isdir(self._ids_root)):
            raise StorageError(
                f"{self!r} is not a flowpoint store: the directory holds no traces/ or ids/"
            )
        self._found_store = True

    def _driver_errors(self) -> DriverErrors:
        return _DRIVER_ERRORS

    # The async interface: each method runs its blocking twin in a thread.

    async def _save(self, blob: CheckpointBlob) -> None:
        await self._blocking(self._save_sync, blob)

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        return await self._blocking(self._load_sync, checkpoint_id)

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        return await self._blocking(self._load_latest_sync, trace_id)

    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        return await self._blocking(self._history_sync, trace_id, limit, before_step)

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        return await self._blocking(self._load_steps_sync, trace_id, first_step, last_step)

    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        return await self._blocking(self._traces_sync)

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        return await self._blocking(self._delete_sync, checkpoint_id)

    async def _delete_trace(self, trace_id: TraceId) -> int:
        return await self._blocking(self._delete_trace_sync, trace_id)

    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        return await self._blocking(self._rewrite_sync, blob)

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        return await self._blocking(self._save_writes_sync, writes, overwrite)

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        return await self._blocking(self._load_writes_sync, checkpoint_id)

    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        return await self._blocking(self._ids_with_prefix_sync, prefix, limit)

    # Blocking implementations.

    def _save_sync(self, blob: CheckpointBlob) -> None:
        dir_name = trace_dir_name(blob.trace_id)
        trace_dir = os.path.join(self._traces_root, dir_name)
        final = os.path.join(trace_dir, _step_file(blob.step))
        shard_dir, link = self._id_link(blob.checkpoint_id)
        target = _link_target(dir_name, blob.step)
        record = _RECORDS.encode(RecordHeader.of(blob), blob.data)

        # 1. Write the whole record to a temp file and make it durable.
        temp, fd = files.create_temp(trace_dir, blob.step)
        try:
            with open(fd, "wb") as file:
                for part in record:
                    file.write(part)
                file.flush()
                files.fsync(file.fileno())
            files.ensure_dir(shard_dir)
            with files.locked_dir(shard_dir):
                # 2. Claim the id, holding the lock of its shard: a claim without its
                #    record is then one whose save died (SIGKILL, power loss) before
                #    step 3, and is taken over. The claim comes first so that a record
                #    that survives a crash can always be found by id.
                try:
                    os.symlink(target, link)
                except FileExistsError:
                    if self._claim_holds(blob.checkpoint_id):
                        raise CheckpointConflict(
                            blob.trace_id, blob.step, f"checkpoint id {blob.checkpoint_id} exists"
                        ) from None
                    files.replace_symlink(target, link)
                try:
                    files.fsync_dir(shard_dir)
                    # 3. Publish the record: link() fails if the name exists, so one
                    #    writer per step wins.
                    try:
                        os.link(temp, final)
                    except FileExistsError:
                        raise CheckpointConflict(blob.trace_id, blob.step) from None
                except BaseException:
                    # Nothing of ours is stored: release the id for nobody to find.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(link)
                    raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        # 4. Make the new name (and the temp file's removal) durable.
        files.fsync_dir(trace_dir)

    def _claim_holds(self, checkpoint_id: CheckpointId) -> bool:
        """Whether the id's link names a record of this checkpoint (or one too damaged to tell).

        Called holding the shard's lock, which every save holds from its claim to its
        record: no save is between the two, so a link to a missing record, or to
        another checkpoint's, is left by a save that died there.
        """
        try:
            return self._load_header(checkpoint_id) is not None
        except CorruptCheckpoint:
            return True  # a damaged link or record of this id, perhaps: it stays claimed

    def _release_claim(self, checkpoint_id: CheckpointId, target: str) -> bool:
        """Remove the id's link if it still names ``target`` and no record of the id is there.

        Holds the shard's lock, so that a save taking the claim over meanwhile keeps it.
        """
        shard_dir, link = self._id_link(checkpoint_id)
        with files.locked_dir(shard_dir):
            try:
                if os.readlink(link) != target or self._claim_holds(checkpoint_id):
                    return False
                os.unlink(link)
            except FileNotFoundError:
                return False
        return True

    def _save_writes_sync(self, writes: list[PendingWrite], overwrite: bool) -> int:
        first = writes[0]
        dir_name = trace_dir_name(first.trace_id)
        for _ in range(_WRITES_ATTEMPTS):
            # 1. Claim the checkpoint's writes for this trace (a symlink, made once).
            writes_dir = self._claim_writes(first, dir_name)
            # 2. Read the keys the records made so far hold; write a new record of what
            #    this call adds to them.
            records = self._writes_records(writes_dir)
            seq = int(os.path.basename(records[-1])[:20]) + 1 if records else 0
            stored = writes
            if not overwrite:
                taken = set().union(*(self._read_writes(path)[0].keys() for path in records))
                stored = [w for w in writes if (w.task_id, w.index) not in taken]
                if not stored:
                    return 0
            header, data = writes_header(stored, overwrite=overwrite)
            temp, fd = files.create_temp(writes_dir, seq)
            try:
                with open(fd, "wb") as file:
                    for part in _WRITES.encode(header, data):
                        file.write(part)
                    file.flush()
                    files.fsync(file.fileno())
                # 3. Publish it under the next number: link() fails if another call took
                #    that number; then read what that call stored, and try again.
                try:
                    os.link(temp, os.path.join(writes_dir, _writes_file(seq)))
                except FileExistsError:
                    continue
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            files.fsync_dir(writes_dir)
            # 4. A delete of the checkpoint may have taken the claim meanwhile: the
            #    writes just stored stay findable.
            self._claim_writes(first, dir_name)
            return len(stored)
        raise StorageError(
            f"file store: save_writes of checkpoint {first.checkpoint_id} met another "
            f"call's record each of {_WRITES_ATTEMPTS} times"
        )

    def _claim_writes(self, first: PendingWrite, dir_name: str) -> str:
        """Link the checkpoint's id to its writes directory in the trace; make the directory.

        Raises ``ValueError`` if the id's writes are stored under another trace; a
        claim of another trace that holds no record (its call died) is taken over.
        """
        shard_dir, link = self._writes_link(first.checkpoint_id)
        target = _writes_target(dir_name, first.checkpoint_id)
        writes_dir = os.path.join(self._writes_root, dir_name, first.checkpoint_id.hex)
        files.ensure_dir(shard_dir)
        # After a checkpoint's first call its claim is there: seeing it takes no lock.
        if self._writes_dir(first.checkpoint_id) != writes_dir:
            with files.locked_dir(shard_dir):
                claimed = self._writes_dir(first.checkpoint_id)
                if claimed is None:
                    os.symlink(target, link)
                elif claimed != writes_dir:
                    records = self._writes_records(claimed)
                    if records:
                        check_writes_trace(first, self._read_writes(records[0])[0].trace_id)
                    files.replace_symlink(target, link)
            files.fsync_dir(shard_dir)
        files.ensure_dir(writes_dir)
        return writes_dir

    def _load_writes_sync(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        writes_dir = self._writes_dir(checkpoint_id)
        if writes_dir is None:
            return []
        records = []
        for path in self._writes_records(writes_dir):
            try:
                header, data = self._read_writes(path, with_data=True)
            except FileNotFoundError:
                break  # being deleted: the records left are the oldest
            if header.checkpoint_id != checkpoint_id:
                raise CorruptCheckpoint(checkpoint_id, f"{path}: holds another checkpoint's")
            records.append((header, data))
        return resolve_writes(records)

    def _delete_writes(self, checkpoint_id: CheckpointId) -> None:
        writes_dir = self._writes_dir(checkpoint_id)
        if writes_dir is not None:
            self._remove_writes_dir(writes_dir, checkpoint_id)

    def _remove_writes_dir(self, writes_dir: str, checkpoint_id: CheckpointId) -> None:
        """Remove a checkpoint's writes: records (newest first), directory, then the claim."""
        for name in sorted(files.names(writes_dir), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(writes_dir, name))
        try:
            os.rmdir(writes_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A save_writes call linked a record after the listing: its writes stay.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return
        shard_dir, link = self._writes_link(checkpoint_id)
        with contextlib.suppress(FileNotFoundError, CorruptCheckpoint):
            if self._writes_dir(checkpoint_id) == writes_dir:
                os.unlink(link)
                files.fsync_dir(shard_dir)

    def _delete_trace_writes(self, dir_name: str) -> None:
        """Remove the writes of every checkpoint of a trace, and the trace's writes directory."""
        trace_writes = os.path.join(self._writes_root, dir_name)
        for name in files.names(trace_writes):
            if _ID_HEX.match(name):
                checkpoint_id = CheckpointId(uuid.UUID(hex=name))
                self._remove_writes_dir(os.path.join(trace_writes, name), checkpoint_id)
        with contextlib.suppress(OSError):  # absent, or a save_writes call is in it
            os.rmdir(trace_writes)

    def _ids_with_prefix_sync(self, prefix: str, limit: int) -> list[CheckpointId]:
        wanted = hex_prefix(prefix)
        if wanted is None:
            return []
        # Ids are sharded by their last two digits: the start of an id is in any shard.
        candidates = sorted(
            CheckpointId(uuid.UUID(hex=name))
            for shard in files.names(self._ids_root)
            for name in files.names(os.path.join(self._ids_root, shard))
            if _ID_HEX.match(name) and name.startswith(wanted)
        )
        found: list[CheckpointId] = []
        for checkpoint_id in candidates:
            # A link whose record is not there (a save that died) names no checkpoint.
            if self._load_header(checkpoint_id) is not None:
                found.append(checkpoint_id)
                if len(found) == limit:
                    break
        return found

    def _load_header(self, checkpoint_id: CheckpointId) -> RecordHeader | None:
        """The header of the checkpoint's record, or ``None`` if it is not there."""
        located = self._locate(checkpoint_id)
        if located is None:
            return None
        dir_name, step = located
        try:
            header, _ = self._read(dir_name, step, checkpoint_id, with_data=False)
        except FileNotFoundError:
            return None
        return header if header.checkpoint_id == checkpoint_id else None

    def _load_sync(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        located = self._locate(checkpoint_id)
        if located is None:
            return None
        dir_name, step = located
        try:
            header, data = self._read(dir_name, step, checkpoint_id, with_data=True)
        except FileNotFoundError:
            return None  # a save that crashed before its record was published, or a delete
        if header.checkpoint_id != checkpoint_id:
            return None  # the step belongs to another checkpoint now
        assert data is not None
        return header.info().with_data(data)

    def _load_latest_sync(self, trace_id: TraceId) -> CheckpointBlob | None:
        dir_name = trace_dir_name(trace_id)
        while steps := self._steps(dir_name):
            try:
                header, data = self._read(dir_name, max(steps), None, with_data=True)
            except FileNotFoundError:
                continue  # deleted since the listing: list again
            assert data is not None
            return header.info().with_data(data)
        return None

    def _load_steps_sync(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        """A range of steps in one call: each record opened by its name, or found by a listing.

        A short range (a chain of deltas) tries each step's file name, which costs
        less than listing a long trace; a longer one lists the directory once.
        """
        dir_name = trace_dir_name(trace_id)
        steps: Iterable[int]
        if last_step - first_step < _STEPS_BY_NAME:
            steps = range(first_step, last_step + 1)
        else:
            listed = self._steps(dir_name)
            steps = sorted(step for step in listed if first_step <= step <= last_step)
        found: list[CheckpointBlob] = []
        for step in steps:
            try:
                header, data = self._read(dir_name, step, None, with_data=True)
            except FileNotFoundError:
                continue  # no such step (or deleted since the listing)
            assert data is not None
            found.append(header.info().with_data(data))
        return found

    def _history_sync(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        dir_name = trace_dir_name(trace_id)
        steps = self._steps(dir_name)
        if before_step is not None:
            steps = [step for step in steps if step < before_step]
        entries: list[CheckpointInfo | DamagedRecord] = []
        for step in sorted(steps, reverse=True):
            try:
                header, _ = self._read(dir_name, step, None, with_data=False)
            except FileNotFoundError:
                continue  # deleted since the listing
            except CorruptCheckpoint as exc:
                entries.append(DamagedRecord(damaged_id(exc), trace_id, step, exc.reason))
            else:
                entries.append(header.info())
            if len(entries) == limit:
                break
        return entries

    def _traces_sync(self) -> list[TraceId | DamagedRecord]:
        found: list[TraceId] = []
        damaged: list[DamagedRecord] = []
        for dir_name in files.names(self._traces_root):
            if not _TRACE_DIR.match(dir_name):
                continue
            steps = sorted(self._steps(dir_name))
            if not steps:
                continue
            named = _trace_of_dir_name(dir_name)
            if named is not None:
                found.append(named)
                continue
            # A slug cut short cannot be reversed: a header says.
            failure: CorruptCheckpoint | None = None
            for step in steps:
                try:
                    header, _ = self._read(dir_name, step, None, with_data=False)
                except FileNotFoundError:
                    continue
                except CorruptCheckpoint as exc:
                    failure = failure or exc
                    continue
                found.append(header.header.trace_id)
                break
            else:
                if failure is not None:
                    reason = f"no record in {dir_name} can be read: {failure.reason}"
                    damaged.append(DamagedRecord(damaged_id(failure), None, None, reason))
        return [*sorted(found), *damaged]

    def _delete_sync(self, checkpoint_id: CheckpointId) -> bool:
        deleted = self._delete_record(checkpoint_id)
        # After the record: a crash in between leaves writes of a deleted checkpoint,
        # which a later delete of the id (or of the trace) removes.
        self._delete_writes(checkpoint_id)
        return deleted

    def _delete_record(self, checkpoint_id: CheckpointId) -> bool:
        located = self._locate(checkpoint_id)
        if located is None:
            return False
        dir_name, step = located
        trace_dir = os.path.join(self._traces_root, dir_name)
        path = os.path.join(trace_dir, _step_file(step))
        with files.locked(path) as file:
            if file is None:
                return False
            try:
                header: RecordHeader | None = _read_header(file, dir_name, step, checkpoint_id)
            except CorruptCheckpoint:
                # The id link vouches for the file: damaged records stay deletable.
                header = None
            if header is not None and header.checkpoint_id != checkpoint_id:
                return False  # the step belongs to another checkpoint now
            os.unlink(path)
        files.fsync_dir(trace_dir)
        if self._release_claim(checkpoint_id, _link_target(dir_name, step)):
            files.fsync_dir(self._id_link(checkpoint_id)[0])
        return True

    def _delete_trace_sync(self, trace_id: TraceId) -> int:
        dir_name = trace_dir_name(trace_id)
        trace_dir = os.path.join(self._traces_root, dir_name)
        deleted = 0
        shards: set[str] = set()
        for step in self._steps(dir_name):
            path = os.path.join(trace_dir, _step_file(step))
            with files.locked(path) as file:
                if file is None:
                    continue  # deleted concurrently
                try:
                    header: RecordHeader | None = _read_header(file, dir_name, step, None)
                except CorruptCheckpoint:
                    header = None  # deleted all the same; its id link dangles harmlessly
                os.unlink(path)
            deleted += 1
            if header is not None:
                checkpoint_id = CheckpointId(header.checkpoint_id)
                if self._release_claim(checkpoint_id, _link_target(dir_name, step)):
                    shards.add(self._id_link(checkpoint_id)[0])
        if deleted:
            files.fsync_dir(trace_dir)
        for shard_dir in sorted(shards):
            files.fsync_dir(shard_dir)
        try:
            os.rmdir(trace_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A concurrent save has put a file there (or its temp file is in flight).
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        else:
            files.fsync_dir(self._traces_root)
        self._delete_trace_writes(dir_name)
        return deleted

    def _rewrite_sync(self, blob: CheckpointBlob) -> bool:
        located = self._locate(blob.checkpoint_id)
        if located is None:
            return False
        dir_name, step = located
        trace_dir = os.path.join(self._traces_root, dir_name)
        path = os.path.join(trace_dir, _step_file(step))
        record = _RECORDS.encode(RecordHeader.of(blob), blob.data)
        with files.locked(path) as file:
            if file is None:
                return False  # deleted
            header = _read_header(file, dir_name, step, blob.checkpoint_id)
            if header.checkpoint_id != blob.checkpoint_id:
                return False  # deleted, and the step saved again by another checkpoint
            field = different_header(header.header, blob)
            if field is not None:
                raise rewrite_conflict(blob, field)
            # Write the new record beside the old one, make it durable, then swap it in:
            # readers see the old file or the new one, never a mix.
            temp, fd = files.create_temp(trace_dir, step)
            replaced = False
            try:
                with open(fd, "wb") as out:
                    for part in record:
                        out.write(part)
                    out.flush()
                    files.fsync(out.fileno())
                os.replace(temp, path)
                replaced = True
            finally:
                if not replaced:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
            files.fsync_dir(trace_dir)
        return True

    # Helpers that know the layout.

    def _id_link(self, checkpoint_id: CheckpointId) -> tuple[str, str]:
        """The shard directory of an id, and the path of its symlink."""
        hex_id = checkpoint_id.hex
        shard_dir = os.path.join(self._ids_root, hex_id[-2:])
        return shard_dir, os.path.join(shard_dir, hex_id)

    def _writes_link(self, checkpoint_id: CheckpointId) -> tuple[str, str]:
        """The shard directory of an id, and the path of its writes' symlink."""
        shard_dir, link = self._id_link(checkpoint_id)
        return shard_dir, f"{link}{_WRITES_LINK_SUFFIX}"

    def _writes_dir(self, checkpoint_id: CheckpointId) -> str | None:
        """The writes directory the id's writes link names, or ``None`` if it has none."""
        _, link = self._writes_link(checkpoint_id)
        parts = _link_parts(checkpoint_id, link, "writes")
        if parts is None:
            return None
        if parts[4] != checkpoint_id.hex:
            raise CorruptCheckpoint(checkpoint_id, f"{link} points to {'/'.join(parts)!r}")
        return os.path.join(self._writes_root, parts[3], parts[4])

    def _writes_records(self, writes_dir: str) -> list[str]:
        """The paths of a checkpoint's writes records, in the order they were made."""
        names = sorted(name for name in files.names(writes_dir) if _WRITES_FILE.match(name))
        return [os.path.join(writes_dir, name) for name in names]

    def _read_writes(self, path: str, *, with_data: bool = False) -> tuple[WritesHeader, bytes]:
        """A writes record's checked header (and with ``with_data``, its data)."""
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(_WRITES.prefix_size)
            end = _WRITES.header_end(prefix, path, None, size)
            header = _WRITES.read_header(prefix + file.read(end - len(prefix)), path, None, size)
            data = file.read() if with_data else b""
        if with_data and len(data) != header.data_length:
            raise CorruptCheckpoint(
                CheckpointId(header.checkpoint_id),
                f"{path}: data is {len(data)} bytes, the header says {header.data_length}",
            )
        return header, data

    def _locate(self, checkpoint_id: CheckpointId) -> tuple[str, int] | None:
        """The trace directory name and step the id's symlink names, or ``None``."""
        _, link = self._id_link(checkpoint_id)
        parts = _link_parts(checkpoint_id, link, "traces")
        if parts is None:
            return None
        step = _STEP_FILE.match(parts[4])
        if step is None:
            raise CorruptCheckpoint(checkpoint_id, f"{link} points to {'/'.join(parts)!r}")
        return parts[3], int(step.group(1))

    def _steps(self, dir_name: str) -> list[int]:
        """The steps stored in a trace directory (unsorted); temp files are skipped."""
        steps: list[int] = []
        for name in files.names(os.path.join(self._traces_root, dir_name)):
            match = _STEP_FILE.match(name)
            if match:
                steps.append(int(match.group(1)))
        return steps

    def _read(
        self, dir_name: str, step: int, checkpoint_id: CheckpointId | None, *, with_data: bool
    ) -> tuple[RecordHeader, bytes | None]:
        """Read and check one record; ``FileNotFoundError`` if it is not there."""
        path = os.path.join(self._traces_root, dir_name, _step_file(step))
        with open(path, "rb") as file:
            header = _read_header(file, dir_name, step, checkpoint_id)
            if not with_data:
                return header, None
            data = file.read()
        if len(data) != header.data_length:
            raise CorruptCheckpoint(
                checkpoint_id or CheckpointId(header.checkpoint_id),
                f"{path}: data is {len(data)} bytes, the header says {header.data_length}",
            )
        return header, data


def _trace_of_dir_name(dir_name: str) -> TraceId | None:
    """The trace id a directory name spells, unless its slug was cut (or it is not one)."""
    slug = dir_name.rpartition("~")[0]
    try:
        trace_id = validate_trace_id(unquote(slug, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        return None
    return trace_id if trace_dir_name(trace_id) == dir_name else None


def _step_file(step: int) -> str:
    return f"{step:020d}.ckpt"


def _link_target(dir_name: str, step: int) -> str:
    return f"../../traces/{dir_name}/{_step_file(step)}"


def _link_parts(checkpoint_id: CheckpointId, link: str, root: str) -> list[str] | None:
    """The five parts of ``../../<root>/<trace dir>/<name>`` an id's link holds.

    ``None`` if there is no link; :class:`CorruptCheckpoint` for a link of another
    shape (never followed outside the store).
    """
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise CorruptCheckpoint(checkpoint_id, f"{link} is not a symlink") from None
        raise
    parts = target.split("/")
    if len(parts) != 5 or parts[:3] != ["..", "..", root] or not _TRACE_DIR.match(parts[3]):
        raise CorruptCheckpoint(checkpoint_id, f"{link} points to {target!r}")
    return parts


def _writes_file(seq: int) -> str:
    return f"{seq:020d}.wr"


def _writes_target(dir_name: str, checkpoint_id: CheckpointId) -> str:
    return f"../../writes/{dir_name}/{checkpoint_id.hex}"


def _read_header(
    file: IO[bytes], dir_name: str, step: int, checkpoint_id: CheckpointId | None
) -> RecordHeader:
    """Read and check a record's header, leaving ``file`` at the start of its data."""
    where = file.name if isinstance(file.name, str) else "record"
    size = os.fstat(file.fileno()).st_size
    prefix = file.read(_RECORDS.prefix_size)
    end = _RECORDS.header_end(prefix, where, checkpoint_id, size)
    header = _RECORDS.read_header(prefix + file.read(end - len(prefix)), where, checkpoint_id, size)
    who = checkpoint_id or CheckpointId(header.checkpoint_id)
    if trace_dir_name(header.header.trace_id) != dir_name:
        raise CorruptCheckpoint(
            who, f"{where}: header names trace {header.header.trace_id!r}, not this directory's"
        )
    if header.header.step != step:
        raise CorruptCheckpoint(who, f"{where}: header names step {header.header.step}")
    return header
