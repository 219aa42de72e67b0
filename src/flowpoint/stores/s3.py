"""``s3://bucket/prefix``: one object per checkpoint in S3 or an S3-compatible service.

The driver is obstore (``pip install 'flowpoint[s3]'``). Where this backend
differs from the interface contract:

- **What it needs from the service**: create-only PUTs (``If-None-Match: *``, the
  one-winner rule), ``ListObjectsV2`` in ascending key order (as S3 specifies),
  ranged GETs, and for :meth:`~S3BlobStore.rewrite` conditional PUTs
  (``If-Match: <ETag>``, refused with 412 or 404 when the object changed or is
  gone) and ETags on GETs. AWS S3, SeaweedFS (4.48 tested) and moto (5.2.5 tested,
  behind the tests' one-request-at-a-time lock) have them all.
- **Rewrite** (the optional ability, :class:`~flowpoint.stores._base.RewritableBlobStore`):
  the store reads the id's record and its ETag, checks the header, and PUTs the
  same header (its save token included) with the new data only if the object
  still has that ETag. A record deleted, re-saved or rewritten in between makes
  the PUT fail instead of coming back or being clobbered; the rewrite then reads
  again, a few times, before it returns ``False`` (gone) or raises
  :class:`~flowpoint.errors.CheckpointConflict` (another header, or the record
  kept changing). A PUT replaces an object whole: readers see the old record or
  the new.
- **Layout** (under the bucket's prefix)::

      traces/<trace>/<2**63-1 - step:020d>.ckpt   one record per checkpoint
      ids/<last 2 hex of id>/<id hex>              the key of the id's record
      writes/<trace>/<id hex>/<n:020d>.wr           one record per save_writes call
      ids/<last 2 hex of id>/<id hex>.w            the key prefix of the id's writes

  Step keys sort newest first, so the latest checkpoint is the first key of one
  small LIST request, then one GET; ``history`` pages on with the LIST offset and
  reads headers with ranged GETs, never ``data``; ``load`` reads the id's index
  object, then the record (two GETs). ``<trace>`` is the trace id with every
  character but ``A-Z a-z 0-9 -`` written as ``_XX`` per UTF-8 byte
  (``user-42/session-7`` is ``user-42_2Fsession-7``); ids whose escaped form
  would exceed 400 characters keep the first 300, then ``~`` and 32 hex digits of
  their BLAKE2b hash, and :meth:`~S3BlobStore.traces` reads their exact id from a
  header. Record formats: :mod:`.records`. ``ids_with_prefix`` LISTs each id
  shard from the first key the prefix allows (256 small LISTs, whatever the
  store's size), then checks the few ids found.
- **Concurrency**: of N writers of one step, across processes and hosts, the
  service lets exactly one create the key. A ``save_writes`` call reads the
  writes records made before it, stores only the keys they do not hold (all the
  keys with ``overwrite``) in one record, created with a create-only PUT of the
  next number; a call that loses the number reads the winner's record and tries
  the next. So a call is all there or not at all, and of N writers of one key
  exactly one stores it; reads apply the records in order. ``delete`` checks the id in the
  record's header, then deletes the key: S3 has no conditional delete, so a
  delete that races a re-save of the same step may remove the new checkpoint. A
  rewrite is conditional (see above) and never brings a deleted record back.
- **Durability**: a save returns once the service acknowledged the PUT, and is as
  durable as the service makes an acknowledged object (S3: stored redundantly
  before it answers). A save that fails with :class:`~flowpoint.errors.StorageError`
  may or may not have stored the checkpoint; its id then stays claimed.
- **Read-only** (``read_only=True``): reads never write; S3 cannot tell an empty
  prefix from one that never held a store, so such a store reads as empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import random
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from flowpoint.blob import CheckpointBlob, CheckpointInfo, DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id
from flowpoint.stores._base import (
    DamageReportingBlobStore,
    DriverErrors,
    PruneRule,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    hex_prefix,
    missing_driver,
    rewrite_conflict,
)
from flowpoint.stores._columns import damaged_id
from flowpoint.stores._records import (
    RecordFormat,
    RecordHeader,
    WritesHeader,
    checkpoint_records,
    resolve_writes,
    writes_header,
    writes_records,
)

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["S3BlobStore", "trace_segment"]

# Record: magic, header length (u32 BE), header JSON, CRC32 of the header JSON (u32 BE), data.
_MIN_RECORD = RecordFormat.prefix_size + 1 + RecordFormat.checksum_size
# A header is a few hundred bytes: one ranged GET of this size reads it whole.
_FIRST_READ = 4096
# Reads in flight at once, per call (history, traces, load_steps, delete_trace, prune).
_READ_CONCURRENCY = 16
# Reads and conditional PUTs a rewrite tries before it gives up on a record that
# keeps changing under it (other rewrites winning each time).
_REWRITE_ATTEMPTS = 6

_MAX_STEP = 2**63 - 1
_SEGMENT_MAX = 400
_SLUG_MAX = 300
_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})+\Z")
_HASHED = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})*~[0-9a-f]{32}\Z")
_KEY = re.compile(r"traces/([A-Za-z0-9_~-]+)/([0-9]{20})\.ckpt\Z")
_TRACES = "traces/"
_WRITES_ROOT = "writes/"
_WRITES_FILE = re.compile(r"([0-9]{20})\.wr")
_WRITES_PREFIX = re.compile(rb"writes/([A-Za-z0-9_~-]+)/([0-9a-f]{32})/")
_ID_INDEX = re.compile(r"ids/[0-9a-f]{2}/[0-9a-f]{32}\Z")
_HEX = re.compile(r"[0-9a-f]{32}\Z")
# Records a save_writes call may find taken by others before it gives up: each one
# it meets is another call's that succeeded.
_WRITES_ATTEMPTS = 1000

_URL_OPTIONS = frozenset(
    {"endpoint", "region", "access_key_id", "secret_access_key", "session_token", "allow_http"}
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

_T = TypeVar("_T")


# A record's header adds the token of the save call that wrote it ("writer"): a PUT
# retried by the client after a lost response meets its own object, which is a
# success, not a conflict.
_RECORDS = checkpoint_records(b"FPS3OB1\n", extra=("writer",))
_WRITES = writes_records(b"FPS3WR1\n")


def trace_segment(trace_id: str) -> str:
    """The key segment of a trace: the id with unsafe characters escaped as ``_XX``.

    >>> trace_segment("user-42/session-7")
    'user-42_2Fsession-7'
    """
    escaped = "".join(
        ch if ch in _KEEP else "".join(f"_{byte:02X}" for byte in ch.encode("utf-8"))
        for ch in trace_id
    )
    if len(escaped) <= _SEGMENT_MAX:
        return escaped
    cut = _SLUG_MAX
    # Never cut an _XX escape in half.
    underscore = escaped.rfind("_", cut - 2, cut)
    if underscore != -1:
        cut = underscore
    digest = hashlib.blake2b(trace_id.encode("utf-8"), digest_size=16).hexdigest()
    return f"{escaped[:cut]}~{digest}"


def _trace_of_segment(segment: str) -> TraceId | None:
    """The trace id an escaped segment spells, or ``None`` if it is not one of ours."""
    if not _ESCAPED.match(segment):
        return None
    raw = bytearray()
    position = 0
    while position < len(segment):
        if segment[position] == "_":
            raw.append(int(segment[position + 1 : position + 3], 16))
            position += 3
        else:
            raw.append(ord(segment[position]))
            position += 1
    try:
        trace_id = validate_trace_id(raw.decode("utf-8"))
    except ValueError:  # bad UTF-8, or not a valid trace id
        return None
    # Only the canonical spelling names the trace: "_41" is not "A".
    return trace_id if trace_segment(trace_id) == segment else None


def _checkpoint_key(segment: str, step: int) -> str:
    return f"{_TRACES}{segment}/{_MAX_STEP - step:020d}.ckpt"


def _id_key(checkpoint_id: CheckpointId) -> str:
    hex_id = checkpoint_id.hex
    return f"ids/{hex_id[-2:]}/{hex_id}"


def _writes_index_key(checkpoint_id: CheckpointId) -> str:
    return f"{_id_key(checkpoint_id)}.w"


def _writes_prefix(segment: str, checkpoint_id: CheckpointId) -> str:
    return f"{_WRITES_ROOT}{segment}/{checkpoint_id.hex}/"


def _writes_file(seq: int) -> str:
    return f"{seq:020d}.wr"


def _parse_key(key: str) -> tuple[str, int] | None:
    """The segment and step of a checkpoint key, or ``None`` for another key."""
    match = _KEY.match(key)
    if match is None:
        return None
    inverted = int(match.group(2))
    if inverted > _MAX_STEP:
        return None
    return match.group(1), _MAX_STEP - inverted


@dataclass(frozen=True, slots=True)
class _Listed:
    """A checkpoint key found by a listing."""

    key: str
    step: int
    size: int


class S3BlobStore(RewritableBlobStore, DamageReportingBlobStore):
    """Keeps each checkpoint in its own object (see the module docs).

    ``S3BlobStore(store)`` uses an obstore store the application made (an
    ``obstore.store.S3Store``, usually with a ``prefix``). obstore stores hold
    no resources to release: :meth:`close` only makes this object refuse further
    calls, for a store given or made by :meth:`from_url` alike.
    """

    def __init__(self, store: ObjectStore, *, read_only: bool = False) -> None:
        try:
            import obstore  # noqa: F401 - only to fail early without the driver
        except ImportError as exc:
            raise missing_driver("s3", exc) from None
        self._read_only = check_read_only(read_only)
        self._store: ObjectStore = store
        self._description = repr(store)

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False, **options: Any) -> S3BlobStore:
        """Open ``s3://bucket/prefix?endpoint=...&region=...&allow_http=true``.

        URL options: ``endpoint``, ``region``, ``access_key_id``,
        ``secret_access_key``, ``session_token``, ``allow_http``. What is not given
        comes from the usual variables (``AWS_ENDPOINT_URL``, ``AWS_REGION`` or
        ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_SESSION_TOKEN``, ``AWS_ALLOW_HTTP``). ``options`` go to
        ``obstore.store.S3Store`` and win over the URL: e.g. ``client_options``
        (timeouts) and ``retry_config``. A malformed URL raises ``ValueError``.
        """
        bucket, prefix, config, allow_http = _parse_url(url)
        try:
            from obstore.exceptions import BaseError
            from obstore.store import S3Store
        except ImportError as exc:
            raise missing_driver("s3", exc) from None
        client_options = dict(options.pop("client_options", None) or {})
        if allow_http is not None:
            client_options.setdefault("allow_http", allow_http)
        try:
            store = S3Store(
                bucket,
                prefix=prefix or None,
                client_options=client_options or None,  # type: ignore[arg-type]
                **(config | options),
            )
        except (BaseError, ValueError) as exc:
            # obstore names the option it refuses; credentials are never parsed, so
            # never quoted.
            summary = str(exc).split("\n", 1)[0][:200]
            raise ValueError(
                f"cannot configure an S3 store for {_redacted(url)}: {summary}"
            ) from exc
        return cls(store, read_only=read_only)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._description})"

    async def _close(self) -> None:
        """The obstore store itself has nothing to close."""
        # obstore 0.12 (pyo3-async-runtimes) resolves a future from a tokio thread that
        # then waits for the GIL once more; if the interpreter is finalizing by then,
        # CPython ends that thread and the process aborts (SIGABRT). Releasing the GIL
        # for a moment lets the thread finish before a typical `asyncio.run` returns.
        await asyncio.sleep(0.01)

    def _driver_errors(self) -> DriverErrors:
        return _driver_error_table()

    # The interface.

    async def _save(self, blob: CheckpointBlob) -> None:
        import obstore

        store = self._store
        segment = trace_segment(blob.trace_id)
        key = _checkpoint_key(segment, blob.step)
        id_key = _id_key(blob.checkpoint_id)
        writer = uuid.uuid4().hex
        record = _encode_record(blob, writer)

        # 1. Claim the id. The index is written first so that a record that exists
        #    can always be found by id; an index without its record reads as absent.
        index = f"{key}\n{writer}".encode()
        if not await self._create(id_key, index) and await self._get(id_key) != index:
            raise CheckpointConflict(
                blob.trace_id, blob.step, f"checkpoint id {blob.checkpoint_id} exists"
            )
        # 2. Create the record: the service lets one writer of the key win.
        if await self._create(key, record):
            return
        found = await self._read_header(key, segment, blob.step, blob.checkpoint_id, None)
        if found is not None and found[0].extra["writer"] == writer:
            return  # our own PUT, retried after its response was lost
        # Nothing of ours is stored under the step: release the id.
        await obstore.delete_async(store, id_key)
        raise CheckpointConflict(blob.trace_id, blob.step)

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        located = await self._locate(checkpoint_id)
        if located is None:
            return None
        key, segment, step = located
        raw = await self._get(key)
        if raw is None:
            return None  # a save that failed before its record was made, or a delete
        header, data = _decode_record(raw, key, segment, step, checkpoint_id)
        if header.checkpoint_id != checkpoint_id:
            return None  # the step belongs to another checkpoint now
        return header.info().with_data(data)

    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        segment = trace_segment(trace_id)
        while True:
            newest = await self._first(segment)
            if newest is None:
                return None
            raw = await self._get(newest.key)
            if raw is None:
                continue  # deleted since the listing: list again
            header, data = _decode_record(raw, newest.key, segment, newest.step, None)
            return header.info().with_data(data)

    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        segment = trace_segment(trace_id)
        # Keys sort newest first: the steps below before_step follow its key.
        offset = None
        if before_step is not None and before_step <= _MAX_STEP:
            offset = _checkpoint_key(segment, before_step)
        entries: list[CheckpointInfo | DamagedRecord] = []
        async with contextlib.aclosing(self._listing(segment, offset, limit)) as batches:
            async for batch in batches:
                reads = await self._read_headers(segment, batch)
                for found, read in zip(batch, reads, strict=True):
                    if isinstance(read, CorruptCheckpoint):
                        entry = DamagedRecord(damaged_id(read), trace_id, found.step, read.reason)
                        entries.append(entry)
                    elif read is not None:
                        entries.append(read.info())
                    if len(entries) == limit:
                        return entries
        return entries

    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        if first_step > _MAX_STEP:
            return []
        segment = trace_segment(trace_id)
        # Keys sort newest first: the steps up to last_step follow the key of the next.
        offset = None if last_step >= _MAX_STEP else _checkpoint_key(segment, last_step + 1)
        listed: list[_Listed] = []
        async with contextlib.aclosing(self._listing(segment, offset, 1000)) as batches:
            async for batch in batches:
                listed.extend(found for found in batch if found.step >= first_step)
                if batch[-1].step < first_step:
                    break

        async def one(found: _Listed) -> CheckpointBlob | None:
            raw = await self._get(found.key)
            if raw is None:
                return None  # deleted since the listing
            header, data = _decode_record(raw, found.key, segment, found.step, None)
            return header.info().with_data(data)

        blobs = await _bounded([one(found) for found in reversed(listed)])
        return [blob for blob in blobs if blob is not None]

    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        import obstore

        store = self._store
        listed = await obstore.list_with_delimiter_async(store, _TRACES)
        segments = [
            prefix[len(_TRACES) :].rstrip("/")
            for prefix in listed["common_prefixes"]
            if prefix.startswith(_TRACES)
        ]
        found = await _bounded(
            [
                self._trace_of(segment)
                for segment in segments
                if _ESCAPED.match(segment) or _HASHED.match(segment)
            ]
        )
        traces = sorted(trace for trace in found if isinstance(trace, str))
        return [*traces, *(entry for entry in found if isinstance(entry, DamagedRecord))]

    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        first = writes[0]
        prefix = _writes_prefix(trace_segment(first.trace_id), first.checkpoint_id)
        for _ in range(_WRITES_ATTEMPTS):
            # 1. Claim the checkpoint's writes for this trace (an index object, made once).
            await self._claim_writes(first, prefix)
            # 2. Read the keys the records made so far hold; write a new record of what
            #    this call adds to them, under the next number.
            records = await self._writes_records(prefix)
            seq = records[-1][1] + 1 if records else 0
            stored = writes
            if not overwrite:
                headers = await _bounded([self._read_writes(key, size) for key, _, size in records])
                taken = set().union(*(header.keys() for header, _ in headers))
                stored = [w for w in writes if (w.task_id, w.index) not in taken]
                if not stored:
                    return 0
            header, data = writes_header(stored, overwrite=overwrite)
            record = b"".join(_WRITES.encode(header, data))
            # 3. A create-only PUT: another call that took the number makes this one
            #    read what that call stored, and try the next.
            if await self._create(f"{prefix}{_writes_file(seq)}", record):
                return len(stored)
        raise StorageError(
            f"S3 store: save_writes of checkpoint {first.checkpoint_id} met another "
            f"call's record each of {_WRITES_ATTEMPTS} times"
        )

    async def _claim_writes(self, first: PendingWrite, prefix: str) -> None:
        """Make the id's writes index name ``prefix``, unless it names another trace's writes."""
        index_key = _writes_index_key(first.checkpoint_id)
        body = prefix.encode()
        read = await self._get_versioned(index_key)
        if read is None:
            if await self._create(index_key, body):
                return
            read = await self._get_versioned(index_key)
            if read is None:
                raise StorageError(f"S3 store: {index_key} keeps vanishing")
        claimed, e_tag = read
        if claimed == body:
            return
        claimed_prefix = self._writes_prefix_of(first.checkpoint_id, claimed)
        records = await self._writes_records(claimed_prefix)
        if records:
            header, _ = await self._read_writes(records[0][0], records[0][2])
            check_writes_trace(first, header.trace_id)
        # The claim of a call that died before it stored a record: take it over.
        if e_tag is None or not await self._replace(index_key, body, e_tag):
            raise StorageError(f"S3 store: cannot take over {index_key} from {claimed!r:.80}")

    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        prefix = await self._writes_prefix(checkpoint_id)
        if prefix is None:
            return []

        async def one(key: str) -> tuple[WritesHeader, bytes] | None:
            raw = await self._get(key)
            if raw is None:
                return None  # being deleted
            header = _WRITES.read_header(raw, key, checkpoint_id, len(raw))
            if header.checkpoint_id != checkpoint_id:
                raise CorruptCheckpoint(checkpoint_id, f"{key}: holds another checkpoint's")
            return header, raw[len(raw) - header.data_length :]

        records = await _bounded([one(key) for key, _, _ in await self._writes_records(prefix)])
        return resolve_writes(record for record in records if record is not None)

    async def _delete_writes(self, checkpoint_ids: list[CheckpointId]) -> None:
        """Delete the records of these checkpoints' writes, then their indexes."""
        prefixes = await _bounded([self._writes_prefix(each) for each in checkpoint_ids])
        listed = await _bounded([self._writes_records(p) for p in prefixes if p is not None])
        await self._delete_keys(
            [key for records in listed for key, _, _ in records],
            [_writes_index_key(one) for one, p in zip(checkpoint_ids, prefixes, strict=True) if p],
        )

    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        wanted = hex_prefix(prefix)
        if wanted is None:
            return []
        if len(wanted) == 32:
            candidates = [CheckpointId(uuid.UUID(hex=wanted))]
        else:
            # Ids are indexed under their last two digits: a LIST of each shard, from
            # the first key that could start so.
            shards = [f"{n:02x}/" for n in range(256) if f"{n:02x}".startswith(wanted[30:])]
            listed = await _bounded([self._keys(f"ids/{shard}", wanted) for shard in shards])
            candidates = sorted(
                CheckpointId(uuid.UUID(hex=key[-32:]))
                for keys in listed
                for key, _ in keys
                if _ID_INDEX.match(key)
            )
        found: list[CheckpointId] = []
        for checkpoint_id in candidates:
            # An index whose record is not there (a save that failed) names no checkpoint.
            if await self._header_of(checkpoint_id) is not None:
                found.append(checkpoint_id)
                if len(found) == limit:
                    break
        return found

    async def _header_of(self, checkpoint_id: CheckpointId) -> RecordHeader | None:
        located = await self._locate(checkpoint_id)
        if located is None:
            return None
        key, segment, step = located
        found = await self._read_header(key, segment, step, checkpoint_id, None)
        if found is None or found[0].checkpoint_id != checkpoint_id:
            return None
        return found[0]

    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        deleted = await self._delete_record(checkpoint_id)
        # After the record: a failure in between leaves writes of a deleted checkpoint,
        # which a later delete of the id (or of the trace) removes.
        await self._delete_writes([checkpoint_id])
        return deleted

    async def _delete_record(self, checkpoint_id: CheckpointId) -> bool:
        import obstore

        located = await self._locate(checkpoint_id)
        if located is None:
            return False
        key, segment, step = located
        try:
            found = await self._read_header(key, segment, step, checkpoint_id, None)
        except CorruptCheckpoint:
            found = None
            # The id index vouches for the key: damaged records stay deletable.
            if await self._size(key) is None:
                return False
        else:
            if found is None or found[0].checkpoint_id != checkpoint_id:
                return False
        store = self._store
        await obstore.delete_async(store, key)
        await obstore.delete_async(store, _id_key(checkpoint_id))
        return True

    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        for attempt in range(_REWRITE_ATTEMPTS):
            if attempt:
                # Another writer changed the record between our read and our PUT.
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            located = await self._locate(blob.checkpoint_id)
            if located is None:
                return False
            key, segment, step = located
            read = await self._get_versioned(key)
            if read is None:
                return False  # deleted, or a save that failed before its record was made
            raw, e_tag = read
            header, _ = _decode_record(raw, key, segment, step, blob.checkpoint_id)
            if header.checkpoint_id != blob.checkpoint_id:
                return False  # deleted, and the step saved again by another checkpoint
            field = different_header(header.header, blob)
            if field is not None:
                raise rewrite_conflict(blob, field)
            if e_tag is None:
                raise StorageError(
                    f"S3 store: rewrite failed: the service gave no ETag for {key}, "
                    f"so the record cannot be replaced conditionally"
                )
            # The stored header, save token included, stays as it is: only the data
            # (and its length) change.
            record = b"".join(
                _RECORDS.encode(dataclasses.replace(header, data_length=len(blob.data)), blob.data)
            )
            if await self._replace(key, record, e_tag):
                return True
        raise CheckpointConflict(
            blob.trace_id,
            blob.step,
            f"checkpoint {blob.checkpoint_id} changed during each of {_REWRITE_ATTEMPTS} "
            f"attempts to rewrite it",
        )

    async def _delete_trace(self, trace_id: TraceId) -> int:
        segment = trace_segment(trace_id)
        listed = [found async for batch in self._listing(segment, None, 1000) for found in batch]
        ids = await _bounded([self._id_of(segment, found) for found in listed])
        await self._delete_keys(
            [found.key for found in listed],
            [_id_key(checkpoint_id) for checkpoint_id in ids if checkpoint_id is not None],
        )
        # Every write of the trace, also of checkpoints never saved.
        writes = await self._keys(f"{_WRITES_ROOT}{segment}/")
        written = {key.split("/")[2] for key, _ in writes}
        await self._delete_keys(
            [key for key, _ in writes],
            [_writes_index_key(CheckpointId(uuid.UUID(hex=h))) for h in written if _HEX.match(h)],
        )
        return len(listed)

    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        segment = trace_segment(trace_id)
        doomed = rule.doomed([info async for info in self.iter_history(trace_id)])
        await self._delete_keys(
            [_checkpoint_key(segment, info.step) for info in doomed],
            [_id_key(info.checkpoint_id) for info in doomed],
        )
        await self._delete_writes([info.checkpoint_id for info in doomed])
        return len(doomed)

    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        deleted = 0
        for checkpoint_id in checkpoint_ids:
            deleted += await self._delete_record(checkpoint_id)
        await self._delete_writes(checkpoint_ids)
        return deleted

    # Requests, each inside the error boundary.

    async def _create(self, key: str, body: bytes) -> bool:
        """PUT ``body`` if ``key`` does not exist; ``False`` if it does."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            await obstore.put_async(self._store, key, body, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return False
        return True

    async def _replace(self, key: str, body: bytes, e_tag: str) -> bool:
        """PUT ``body`` if ``key`` still has ``e_tag``; ``False`` if it changed or is gone."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        try:
            await obstore.put_async(self._store, key, body, mode={"e_tag": e_tag})
        except (AlreadyExistsError, NotFoundError, PreconditionError, FileNotFoundError):
            # S3 answers 412 for another ETag and 404 for a missing key; obstore reports
            # both (and a 409 of concurrent conditional writes) as a failed precondition.
            return False
        return True

    async def _get(self, key: str) -> bytes | None:
        """The whole object, or ``None`` if there is none."""
        read = await self._get_versioned(key)
        return None if read is None else read[0]

    async def _get_versioned(self, key: str) -> tuple[bytes, str | None] | None:
        """The whole object and its ETag, or ``None`` if there is none."""
        import obstore

        store = self._store
        try:
            result = await obstore.get_async(store, key)
            return bytes(await result.bytes_async()), result.meta["e_tag"]
        except FileNotFoundError:
            return None

    async def _get_range(self, key: str, start: int, end: int) -> tuple[bytes, int] | None:
        """Bytes ``start:end`` of the object and its whole size, or ``None`` if absent."""
        import obstore

        store = self._store
        try:
            result = await obstore.get_async(store, key, options={"range": (start, end)})
            return bytes(await result.bytes_async()), result.meta["size"]
        except FileNotFoundError:
            return None

    async def _size(self, key: str) -> int | None:
        """The object's size, or ``None`` if there is none."""
        import obstore

        store = self._store
        try:
            return (await obstore.head_async(store, key))["size"]
        except FileNotFoundError:
            return None

    async def _listing(
        self, segment: str, offset: str | None, chunk: int
    ) -> AsyncGenerator[list[_Listed], None]:
        """The trace's checkpoint keys in key order (newest first), in batches."""
        import obstore

        store = self._store
        prefix = f"{_TRACES}{segment}/"
        stream = obstore.list(store, prefix, offset=offset, chunk_size=chunk)
        while True:
            try:
                metas = await anext(stream)
            except StopAsyncIteration:
                return
            batch: list[_Listed] = []
            for meta in metas:
                parsed = _parse_key(meta["path"])
                if parsed is not None and parsed[0] == segment:  # skip keys not ours
                    batch.append(_Listed(meta["path"], parsed[1], meta["size"]))
            if batch:
                yield batch

    async def _keys(self, prefix: str, start: str = "") -> list[tuple[str, int]]:
        """The keys under the ``prefix`` folder that go on with ``start``, with their sizes.

        In key order. A LIST names a folder (``a/b/`` holds ``a/b/c``, not ``a/bc``):
        the keys that go on with ``start`` are read from the first that could.
        """
        import obstore

        store = self._store
        found: list[tuple[str, int]] = []
        # No key equals the offset (ours end in whole ids or names), so none is skipped.
        offset = prefix + start if start else None
        stream = obstore.list(store, prefix, offset=offset, chunk_size=1000)
        while True:
            try:
                metas = await anext(stream)
            except StopAsyncIteration:
                return found
            for meta in metas:
                if not meta["path"].startswith(prefix + start):
                    return found
                found.append((meta["path"], meta["size"]))

    async def _writes_records(self, prefix: str) -> list[tuple[str, int, int]]:
        """A checkpoint's writes records (key, number, size), in the order they were made."""
        records = []
        for key, size in await self._keys(prefix):
            match = _WRITES_FILE.fullmatch(key[len(prefix) :])
            if match:
                records.append((key, int(match.group(1)), size))
        return records

    async def _writes_prefix(self, checkpoint_id: CheckpointId) -> str | None:
        """The key prefix of the checkpoint's writes records, from its index; ``None``: none."""
        claimed = await self._get(_writes_index_key(checkpoint_id))
        return None if claimed is None else self._writes_prefix_of(checkpoint_id, claimed)

    def _writes_prefix_of(self, checkpoint_id: CheckpointId, claimed: bytes) -> str:
        match = _WRITES_PREFIX.fullmatch(claimed)
        if match is None or match.group(2).decode() != checkpoint_id.hex:
            raise CorruptCheckpoint(
                checkpoint_id,
                f"writes index {_writes_index_key(checkpoint_id)} holds {claimed[:80]!r}",
            )
        return claimed.decode()

    async def _read_writes(self, key: str, size: int) -> tuple[WritesHeader, int]:
        """A writes record's checked header (read with ranged GETs), and the record's size."""
        if size < _MIN_RECORD:
            raise CorruptCheckpoint(None, f"{key}: truncated to {size} bytes")
        first = await self._get_range(key, 0, min(size, _FIRST_READ))
        if first is None:
            raise CorruptCheckpoint(None, f"{key}: vanished while it was read")
        head, size = first
        needed = _WRITES.header_end(head, key, None, size)
        if needed > len(head):
            rest = await self._get_range(key, len(head), needed)
            if rest is None:
                raise CorruptCheckpoint(None, f"{key}: vanished while it was read")
            head += rest[0]
        return _WRITES.read_header(head, key, None, size), size

    async def _first(self, segment: str) -> _Listed | None:
        """The trace's newest checkpoint key: the first key of one small listing."""
        async with contextlib.aclosing(self._listing(segment, None, 1)) as batches:
            async for batch in batches:
                return batch[0]
        return None

    async def _delete_keys(self, keys: list[str], id_keys: list[str]) -> None:
        """Delete records, then their id indexes (bulk requests)."""
        import obstore

        store = self._store
        if keys:
            await obstore.delete_async(store, keys)
        if id_keys:
            await obstore.delete_async(store, id_keys)

    # Reading records.

    async def _locate(self, checkpoint_id: CheckpointId) -> tuple[str, str, int] | None:
        """The key, segment and step the id's index names, or ``None``."""
        id_key = _id_key(checkpoint_id)
        index = await self._get(id_key)
        if index is None:
            return None
        key, _, writer = index.partition(b"\n")
        try:
            parsed = _parse_key(key.decode("ascii"))
        except UnicodeDecodeError:
            parsed = None
        if parsed is None or not re.fullmatch(rb"[0-9a-f]{32}", writer):
            raise CorruptCheckpoint(checkpoint_id, f"id index {id_key} holds {index[:80]!r}")
        return key.decode("ascii"), *parsed

    async def _read_header(
        self,
        key: str,
        segment: str,
        step: int,
        checkpoint_id: CheckpointId | None,
        size: int | None,
    ) -> tuple[RecordHeader, int] | None:
        """A record's checked header and the object's size; ``None`` if it is absent.

        ``size`` (from a listing) spares a HEAD request: a range of an empty object
        is an HTTP error, not an empty answer, so tiny objects are not fetched.
        """
        if size is None:
            size = await self._size(key)
            if size is None:
                return None
        if size < _MIN_RECORD:
            raise CorruptCheckpoint(checkpoint_id, f"{key}: truncated to {size} bytes")
        first = await self._get_range(key, 0, min(size, _FIRST_READ))
        if first is None:
            return None
        head, size = first
        needed = _RECORDS.header_end(head, key, checkpoint_id, size)
        if needed > len(head):
            rest = await self._get_range(key, len(head), needed)
            if rest is None:
                return None
            head += rest[0]
        header = _check_header(head, key, segment, step, checkpoint_id, size)
        return header, size

    async def _read_headers(
        self, segment: str, batch: list[_Listed]
    ) -> list[RecordHeader | CorruptCheckpoint | None]:
        """The headers of listed keys, read concurrently.

        ``None`` where one vanished, the error where one is damaged.
        """

        async def one(found: _Listed) -> RecordHeader | CorruptCheckpoint | None:
            try:
                read = await self._read_header(found.key, segment, found.step, None, found.size)
            except CorruptCheckpoint as exc:
                return exc
            return None if read is None else read[0]

        return await _bounded([one(found) for found in batch])

    async def _trace_of(self, segment: str) -> TraceId | DamagedRecord | None:
        """The trace a listed segment holds, or ``None`` if it holds no checkpoint.

        A hashed segment whose records are all damaged is reported.
        """
        # Some services (SeaweedFS) keep a prefix listed after its last object is gone.
        newest = await self._first(segment)
        if newest is None:
            return None
        trace = _trace_of_segment(segment)
        if trace is not None:
            return trace
        # A hashed segment cannot be reversed: a header says.
        failure: CorruptCheckpoint | None = None
        async for batch in self._listing(segment, None, 100):
            for read in await self._read_headers(segment, batch):
                if isinstance(read, CorruptCheckpoint):
                    failure = failure or read
                elif read is not None:
                    return read.header.trace_id
        if failure is None:
            return None
        reason = f"no record under traces/{segment}/ can be read: {failure.reason}"
        return DamagedRecord(damaged_id(failure), None, None, reason)

    async def _id_of(self, segment: str, found: _Listed) -> CheckpointId | None:
        """The checkpoint id in a listed record's header; ``None`` if absent or damaged."""
        try:
            read = await self._read_header(found.key, segment, found.step, None, found.size)
        except CorruptCheckpoint:
            return None  # deleted all the same; its id index dangles harmlessly
        return None if read is None else CheckpointId(read[0].checkpoint_id)


async def _bounded(calls: list[Awaitable[_T]]) -> list[_T]:
    """Await ``calls`` concurrently, at most a few requests in flight; keep the order."""
    limit = asyncio.Semaphore(_READ_CONCURRENCY)

    async def run(call: Awaitable[_T]) -> _T:
        async with limit:
            return await call

    return list(await asyncio.gather(*(run(call) for call in calls)))


@functools.cache
def _driver_error_table() -> DriverErrors:
    from obstore.exceptions import BaseError

    # obstore's first line names the request (method, URL, status); never credentials.
    return DriverErrors(failures=(BaseError, OSError))


# The record format.


def _encode_record(blob: CheckpointBlob, writer: str) -> bytes:
    """The object of a checkpoint; ``ValueError`` if the header cannot be stored."""
    return b"".join(_RECORDS.encode(RecordHeader.of(blob, writer=writer), blob.data))


def _check_header(
    head: bytes,
    key: str,
    segment: str,
    step: int,
    checkpoint_id: CheckpointId | None,
    size: int,
) -> RecordHeader:
    """Check a record's header, and that it belongs under its key."""
    header = _RECORDS.read_header(head, key, checkpoint_id, size)
    who = checkpoint_id or CheckpointId(header.checkpoint_id)
    if trace_segment(header.header.trace_id) != segment:
        raise CorruptCheckpoint(who, f"{key}: header names trace {header.header.trace_id!r}")
    if header.header.step != step:
        raise CorruptCheckpoint(who, f"{key}: header names step {header.header.step}")
    return header


def _decode_record(
    raw: bytes, key: str, segment: str, step: int, checkpoint_id: CheckpointId | None
) -> tuple[RecordHeader, bytes]:
    """A whole record's checked header and its data."""
    header = _check_header(raw, key, segment, step, checkpoint_id, len(raw))
    return header, raw[len(raw) - header.data_length :]


# URLs.


def _parse_url(url: str) -> tuple[str, str, dict[str, str], bool | None]:
    """Bucket, prefix, S3 settings and ``allow_http`` of an ``s3://`` URL."""
    if not isinstance(url, str):
        raise ValueError(f"an S3 store URL must be a str, not {type(url).__name__}")
    shown = _redacted(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError(f"an S3 store URL starts with s3://, not {shown}")
    if parts.fragment:
        raise ValueError(f"an S3 store URL has no #fragment: {shown}")
    bucket = parts.netloc
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", bucket):
        raise ValueError(f"an S3 store URL is s3://bucket/prefix?options, not {shown}")
    prefix = unquote(parts.path).strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"the prefix of an S3 store URL has an empty, . or .. part: {shown}")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"malformed options in S3 store URL {shown}") from None
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - _URL_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown S3 store URL option(s) {unknown} in {shown}; known: {sorted(_URL_OPTIONS)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"S3 store URL option(s) {repeated} given twice in {shown}")
    config = dict(pairs)
    allow_http = None
    if "allow_http" in config:
        flag = config.pop("allow_http").lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"allow_http must be true or false in S3 store URL {shown}")
        allow_http = flag in _TRUE
    endpoint = config.get("endpoint")
    if endpoint is not None and not re.match(r"https?://[^/?#]", endpoint):
        raise ValueError(f"endpoint must be an http:// or https:// URL in S3 store URL {shown}")
    return bucket, prefix, config, allow_http


def _redacted(url: str) -> str:
    """The URL without its options and user info, which may hold credentials."""
    bare = url.split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = bare.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return repr(f"{scheme}{separator}{authority}{slash}{path}")
