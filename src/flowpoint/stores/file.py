"""``file:///dir``: one file per checkpoint in a directory tree a person can read with ``ls``.

Where this backend differs from the interface contract:

- **Latest and history cost one listing of the trace's directory** (O(n) in the
  trace's checkpoints) plus one read per checkpoint returned; listings read file
  headers only, never ``data``.
- **Layout**::

      <dir>/traces/<trace-dir>/<step:020d>.ckpt     one record per checkpoint
      <dir>/ids/<last 2 hex of id>/<id hex>          symlink to ../../traces/<trace-dir>/<step>.ckpt

  ``<trace-dir>`` is the percent-quoted trace id (at most 120 characters) then ``~``
  and 16 hex digits of its BLAKE2b hash: ``user-42/session-7`` lives in
  ``user-42%2Fsession-7~<hash>``. Names never leave ``<dir>`` and never collide,
  also on case-insensitive file systems.
- **Durability**: a record is written to a temp file, fsynced, hard-linked to its
  final name (the exclusive create that lets one writer per step win, across
  processes), and the directories are fsynced before ``save`` returns. POSIX only
  (symlinks, hard links and directory fsync).
- **Rewrites** (:meth:`~flowpoint.stores.base.RewritableBlobStore.rewrite`) write
  the new record to a temp file, fsync it, rename it over the old one and fsync
  the directory. Deletes and rewrites take an advisory ``flock`` on the record
  they change (readers never do), so a rewrite never brings back a record that a
  delete removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO
from urllib.parse import quote

from flowpoint.blob import CheckpointBlob, CheckpointInfo, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores.base import (
    BlockingBlobStore,
    RewritableBlobStore,
    check_writes_trace,
    different_header,
    hex_prefix,
    rewrite_conflict,
)
from flowpoint.stores.records import (
    RecordFormat,
    RecordHeader,
    WritesHeader,
    record_header,
    resolve_writes,
    writes_header,
)

__all__ = ["FileBlobStore", "trace_dir_name"]

# Record: magic, header length (u32 BE), header JSON, CRC32 of the header JSON (u32 BE), data.

_SLUG_MAX = 120
_SLUG_SAFE = "-_.@+=,"
_TRACE_DIR = re.compile(r".*~[0-9a-f]{16}\Z", re.DOTALL)
_STEP_FILE = re.compile(r"([0-9]{20})\.ckpt\Z")
_CONTINUATION_ESCAPE = re.compile(r"%[89AB][0-9A-F]")
_TEMP_PREFIX = ".tmp-"
_MKDIR_ATTEMPTS = 8
# On macOS fsync() leaves the data in the drive's cache; F_FULLFSYNC flushes it.
_FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)


_RECORDS = RecordFormat(b"FPFILE1\n", RecordHeader)
_WRITES = RecordFormat(b"FPWRIT1\n", WritesHeader)
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


class FileBlobStore(RewritableBlobStore, BlockingBlobStore):
    """Keeps each checkpoint in its own file under ``directory`` (see the module docs).

    The constructor touches no file; the directory tree is made by the first save.
    Every file system call runs in a worker thread, never on the event loop.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        path = os.fspath(directory)
        if not isinstance(path, str):
            raise TypeError(f"directory must be a str path, not {type(path).__name__}")
        self._root = os.path.abspath(path)
        self._traces_root = os.path.join(self._root, "traces")
        self._writes_root = os.path.join(self._root, "writes")
        self._ids_root = os.path.join(self._root, "ids")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._root!r})"

    # The async interface: each method runs its blocking twin in a thread.

    async def _save(self, blob: CheckpointBlob) -> None:
        with _storage_errors("save"):
            await self._blocking(self._save_sync, blob)

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        with _storage_errors("load"):
            return await self._blocking(self._load_sync, checkpoint_id)

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        with _storage_errors("load_latest"):
            return await self._blocking(self._load_latest_sync, trace_id)

    async def _history(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        with _storage_errors("history"):
            return await self._blocking(self._history_sync, trace_id, limit, before_step)

    async def _traces(self) -> list[TraceId]:
        with _storage_errors("traces"):
            return await self._blocking(self._traces_sync)

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        with _storage_errors("delete"):
            return await self._blocking(self._delete_sync, checkpoint_id)

    async def _delete_trace(self, trace_id: TraceId) -> int:
        with _storage_errors("delete_trace"):
            return await self._blocking(self._delete_trace_sync, trace_id)

    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        with _storage_errors("rewrite"):
            return await self._blocking(self._rewrite_sync, blob)

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        with _storage_errors("save_writes"):
            return await self._blocking(self._save_writes_sync, writes, overwrite)

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        with _storage_errors("load_writes"):
            return await self._blocking(self._load_writes_sync, checkpoint_id)

    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        with _storage_errors("ids_with_prefix"):
            return await self._blocking(self._ids_with_prefix_sync, prefix, limit)

    # Blocking implementations.

    def _save_sync(self, blob: CheckpointBlob) -> None:
        dir_name = trace_dir_name(blob.trace_id)
        trace_dir = os.path.join(self._traces_root, dir_name)
        final = os.path.join(trace_dir, _step_file(blob.step))
        shard_dir, link = self._id_link(blob.checkpoint_id)
        record = _RECORDS.encode(record_header(RecordHeader, blob), blob.data)

        # 1. Claim the id. The link is made first so that a record that survives a
        #    crash can always be found by id; a link without its record reads as absent.
        _ensure_dir(shard_dir)
        try:
            os.symlink(_link_target(dir_name, blob.step), link)
        except FileExistsError:
            raise CheckpointConflict(
                blob.trace_id, blob.step, f"checkpoint id {blob.checkpoint_id} exists"
            ) from None
        linked = False
        try:
            _fsync_dir(shard_dir)
            # 2. Write the whole record to a temp file and make it durable.
            temp, fd = _create_temp(trace_dir, blob.step)
            try:
                with open(fd, "wb") as file:
                    for part in record:
                        file.write(part)
                    file.flush()
                    _fsync(file.fileno())
                # 3. Publish it: link() fails if the name exists, so one writer per step wins.
                try:
                    os.link(temp, final)
                except FileExistsError:
                    raise CheckpointConflict(blob.trace_id, blob.step) from None
                linked = True
                os.unlink(temp)
            finally:
                if not linked:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
            # 4. Make the new name (and the temp file's removal) durable.
            _fsync_dir(trace_dir)
        except BaseException:
            if not linked:
                # Nothing of ours is stored: release the id for nobody to find.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
            raise

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
            temp, fd = _create_temp(writes_dir, seq)
            try:
                with open(fd, "wb") as file:
                    for part in _WRITES.encode(header, data):
                        file.write(part)
                    file.flush()
                    _fsync(file.fileno())
                # 3. Publish it under the next number: link() fails if another call took
                #    that number; then read what that call stored, and try again.
                try:
                    os.link(temp, os.path.join(writes_dir, _writes_file(seq)))
                except FileExistsError:
                    continue
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            _fsync_dir(writes_dir)
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
        _ensure_dir(shard_dir)
        try:
            os.symlink(target, link)
        except FileExistsError:
            claimed = self._writes_dir(first.checkpoint_id)
            if claimed is not None and claimed != writes_dir:
                records = self._writes_records(claimed)
                if records:
                    check_writes_trace(first, self._read_writes(records[0])[0].trace_id)
                _replace_symlink(target, link)
                _fsync_dir(shard_dir)
        else:
            _fsync_dir(shard_dir)
        _ensure_dir(writes_dir)
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
        for name in sorted(_list(writes_dir), reverse=True):
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
                _fsync_dir(shard_dir)

    def _delete_trace_writes(self, dir_name: str) -> None:
        """Remove the writes of every checkpoint of a trace, and the trace's writes directory."""
        trace_writes = os.path.join(self._writes_root, dir_name)
        for name in _list(trace_writes):
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
            for shard in _list(self._ids_root)
            for name in _list(os.path.join(self._ids_root, shard))
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

    def _history_sync(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo]:
        dir_name = trace_dir_name(trace_id)
        steps = self._steps(dir_name)
        if before_step is not None:
            steps = [step for step in steps if step < before_step]
        infos: list[CheckpointInfo] = []
        for step in sorted(steps, reverse=True):
            try:
                header, _ = self._read(dir_name, step, None, with_data=False)
            except FileNotFoundError:
                continue  # deleted since the listing
            infos.append(header.info())
            if len(infos) == limit:
                break
        return infos

    def _traces_sync(self) -> list[TraceId]:
        found: list[TraceId] = []
        for dir_name in _list(self._traces_root):
            if not _TRACE_DIR.match(dir_name):
                continue
            # The directory name cannot be reversed (slugs are cut), so one header says.
            for step in self._steps(dir_name):
                try:
                    header, _ = self._read(dir_name, step, None, with_data=False)
                except FileNotFoundError:
                    continue
                found.append(TraceId(header.trace_id))
                break
        return sorted(found)

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
        with _locked(path) as file:
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
        _fsync_dir(trace_dir)
        shard_dir, link = self._id_link(checkpoint_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
            _fsync_dir(shard_dir)
        return True

    def _delete_trace_sync(self, trace_id: TraceId) -> int:
        dir_name = trace_dir_name(trace_id)
        trace_dir = os.path.join(self._traces_root, dir_name)
        deleted = 0
        shards: set[str] = set()
        for step in self._steps(dir_name):
            path = os.path.join(trace_dir, _step_file(step))
            with _locked(path) as file:
                if file is None:
                    continue  # deleted concurrently
                try:
                    header: RecordHeader | None = _read_header(file, dir_name, step, None)
                except CorruptCheckpoint:
                    header = None  # deleted all the same; its id link dangles harmlessly
                os.unlink(path)
            deleted += 1
            if header is not None:
                shard_dir, link = self._id_link(CheckpointId(header.checkpoint_id))
                with contextlib.suppress(FileNotFoundError):
                    if os.readlink(link) == _link_target(dir_name, step):
                        os.unlink(link)
                        shards.add(shard_dir)
        if deleted:
            _fsync_dir(trace_dir)
        for shard_dir in sorted(shards):
            _fsync_dir(shard_dir)
        try:
            os.rmdir(trace_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A concurrent save has put a file there (or its temp file is in flight).
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        else:
            _fsync_dir(self._traces_root)
        self._delete_trace_writes(dir_name)
        return deleted

    def _rewrite_sync(self, blob: CheckpointBlob) -> bool:
        located = self._locate(blob.checkpoint_id)
        if located is None:
            return False
        dir_name, step = located
        trace_dir = os.path.join(self._traces_root, dir_name)
        path = os.path.join(trace_dir, _step_file(step))
        record = _RECORDS.encode(record_header(RecordHeader, blob), blob.data)
        with _locked(path) as file:
            if file is None:
                return False  # deleted
            header = _read_header(file, dir_name, step, blob.checkpoint_id)
            if header.checkpoint_id != blob.checkpoint_id:
                return False  # deleted, and the step saved again by another checkpoint
            field = different_header(header.info(), blob)
            if field is not None:
                raise rewrite_conflict(blob, field)
            # Write the new record beside the old one, make it durable, then swap it in:
            # readers see the old file or the new one, never a mix.
            temp, fd = _create_temp(trace_dir, step)
            replaced = False
            try:
                with open(fd, "wb") as out:
                    for part in record:
                        out.write(part)
                    out.flush()
                    _fsync(out.fileno())
                os.replace(temp, path)
                replaced = True
            finally:
                if not replaced:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp)
            _fsync_dir(trace_dir)
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
        names = sorted(name for name in _list(writes_dir) if _WRITES_FILE.match(name))
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
        for name in _list(os.path.join(self._traces_root, dir_name)):
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


@contextlib.contextmanager
def _locked(path: str) -> Iterator[IO[bytes] | None]:
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


@contextlib.contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Turn a failed file system call into :class:`StorageError`, the OS error its cause."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"file store: {action} failed: {exc}") from exc


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


def _replace_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` in one step: a new symlink renamed over it."""
    temp = f"{link}{_TEMP_PREFIX}{uuid.uuid4().hex}"
    os.symlink(target, temp)
    try:
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


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
    if trace_dir_name(header.trace_id) != dir_name:
        raise CorruptCheckpoint(
            who, f"{where}: header names trace {header.trace_id!r}, not this directory's"
        )
    if header.step != step:
        raise CorruptCheckpoint(who, f"{where}: header names step {header.step}")
    return header


def _list(directory: str) -> list[str]:
    """The names in a directory; an absent directory is empty."""
    try:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries]
    except FileNotFoundError:
        return []


def _create_temp(trace_dir: str, step: int) -> tuple[str, int]:
    """Create a fresh temp file in the trace directory, making the directory if needed."""
    for attempt in range(_MKDIR_ATTEMPTS):
        _ensure_dir(trace_dir)
        temp = os.path.join(trace_dir, f"{_TEMP_PREFIX}{step}-{uuid.uuid4().hex}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            # delete_trace removed the (empty) directory between our mkdir and open.
            if attempt == _MKDIR_ATTEMPTS - 1:
                raise
            continue
        return temp, fd
    raise AssertionError("unreachable")


def _ensure_dir(path: str) -> None:
    """Make ``path`` and its missing parents, fsyncing each parent that gained an entry.

    Safe against concurrent creators; a non-directory in the way raises an ``OSError``.
    """
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _ensure_dir(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        if os.path.isdir(path):
            return  # made by a concurrent writer
        raise
    _fsync_dir(parent)


def _fsync(fd: int) -> None:
    if _FULLFSYNC is not None:
        fcntl.fcntl(fd, _FULLFSYNC)
    else:
        os.fsync(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        _fsync(fd)
    finally:
        os.close(fd)
