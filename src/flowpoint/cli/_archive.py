r"""The portable archive of ``flowpoint export`` and ``flowpoint import``.

An archive is a stream::

    magic     b"\x89FPA\r\n\x1a\n" (8 bytes)
    version   u16, big-endian (2; version 1 is read too)
    records   each: u32 big-endian length, then MessagePack
    trailer   a last record of the same framing

Each checkpoint record is a MessagePack map tagged ``"type": "checkpoint"`` holding
every header field (ids as canonical UUID strings, the graph hash as an unsigned
64-bit int, the creation time as a MessagePack timestamp in UTC, metadata with its
value types kept) and the data bytes untouched, so encrypted data stays encrypted.
Records come trace by trace, traces sorted by code point, steps ascending. After
a checkpoint come the pending writes saved against it (version 2), each a map
tagged ``"type": "write"`` holding its key (trace id, checkpoint id, task id,
index) and its data untouched, sorted by task id, then index. Nothing else (no
store URL, no export time) is written, so exporting the same checkpoints from any
backend gives the same bytes. The trailer (``"type": "end"``) counts the traces,
checkpoints and writes (version 1 has no writes and does not count them) and
holds the SHA-256 of every byte before it; nothing may follow it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Generator
from datetime import UTC, datetime
from typing import IO, Protocol
from uuid import UUID

import msgspec

from flowpoint.blob import (
    MAX_METADATA_SIZE,
    CheckpointBlob,
    MetadataValue,
    PendingWrite,
    check_header,
    check_write_key,
    validate_current_node,
    validate_metadata,
)
from flowpoint.codec._serde import DEFAULT_MAX_PAYLOAD_SIZE
from flowpoint.ids import CheckpointId, validate_trace_id

__all__ = [
    "MAGIC",
    "READABLE_VERSIONS",
    "VERSION",
    "ArchiveError",
    "ArchiveSummary",
    "ArchiveWriter",
    "ByteSource",
    "read_archive",
    "scan_archive",
]

MAGIC = b"\x89FPA\r\n\x1a\n"
VERSION = 2
"""The version written: 2 added pending writes."""
READABLE_VERSIONS = (1, 2)
_PREFIX = struct.Struct(">8sH")
_LENGTH = struct.Struct(">I")
MAX_RECORD_SIZE = DEFAULT_MAX_PAYLOAD_SIZE + 128 * 1024
"""A record holds one checkpoint's data (64 MiB at most) and its header."""
MAX_RECORD_METADATA_SIZE = 2 * MAX_METADATA_SIZE
"""Encoded metadata larger than this cannot hold valid metadata; it is refused unread."""


class ByteSource(Protocol):
    """What an archive is read from: a binary file, or anything with its ``read``."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end."""
        ...


class ArchiveError(ValueError):
    """The stream is not a readable archive; ``corrupt`` if it is one, but damaged."""

    def __init__(self, message: str, *, corrupt: bool) -> None:
        super().__init__(message)
        self.corrupt = corrupt


class _Checkpoint(msgspec.Struct, tag="checkpoint", forbid_unknown_fields=True):
    checkpoint_id: UUID
    trace_id: str
    step: int
    parent_id: UUID | None
    graph_hash: int
    created_at: datetime
    current_node: str | None
    # Kept encoded until its size is checked: a map of millions of tiny entries
    # fits in a record, and would cost gigabytes as Python objects.
    metadata: msgspec.Raw
    data: bytes


class _Write(msgspec.Struct, tag="write", forbid_unknown_fields=True):
    trace_id: str
    checkpoint_id: UUID
    task_id: str
    index: int
    data: bytes


class _Trailer(msgspec.Struct, tag="end", forbid_unknown_fields=True):
    traces: int
    checkpoints: int
    sha256: bytes
    writes: int = 0  # version 2


class ArchiveSummary(msgspec.Struct, frozen=True):
    """What an archive holds, from its trailer."""

    traces: int
    checkpoints: int
    writes: int = 0


_encoder = msgspec.msgpack.Encoder(order="deterministic")
_decoder = msgspec.msgpack.Decoder(_Checkpoint | _Write | _Trailer)
_metadata_decoder = msgspec.msgpack.Decoder(dict[str, MetadataValue])


def _sort_key(blob: CheckpointBlob) -> tuple[str, int]:
    return (blob.trace_id, blob.step)


def _write_key(write: PendingWrite) -> tuple[str, int]:
    return (write.task_id, write.index)


class ArchiveWriter:
    """Writes an archive to a binary stream: :meth:`write` each checkpoint, then :meth:`finish`.

    Checkpoints must come in archive order (traces sorted, steps ascending), each
    followed by its pending writes (:meth:`write_writes`) sorted by task id, then
    index; anything else raises ``ValueError``, so that equal stores give equal
    archives.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self._last: tuple[str, int] | None = None
        self._last_checkpoint: CheckpointBlob | None = None
        self._last_write: tuple[str, int] | None = None
        self._traces = 0
        self._checkpoints = 0
        self._writes = 0
        self._put(_PREFIX.pack(MAGIC, VERSION))

    def _put(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._stream.write(chunk)

    def _record(self, record: _Checkpoint | _Write | _Trailer) -> bytes:
        body = _encoder.encode(record)
        return _LENGTH.pack(len(body)) + body

    def write(self, blob: CheckpointBlob) -> None:
        """Append one checkpoint, its data as it is."""
        key = _sort_key(blob)
        if self._last is not None and key <= self._last:
            raise ValueError(f"archive order broken: {key} after {self._last}")
        if self._last is None or key[0] != self._last[0]:
            self._traces += 1
        self._last = key
        self._checkpoints += 1
        record = _Checkpoint(
            checkpoint_id=blob.checkpoint_id,
            trace_id=blob.trace_id,
            step=blob.step,
            parent_id=blob.parent_id,
            graph_hash=blob.graph_hash,
            created_at=blob.created_at.astimezone(UTC),
            current_node=blob.current_node,
            metadata=msgspec.Raw(_encoder.encode(dict(blob.metadata))),
            data=bytes(blob.data),
        )
        self._put(self._record(record))
        self._last_checkpoint, self._last_write = blob, None

    def write_writes(self, writes: list[PendingWrite]) -> None:
        """Append pending writes of the checkpoint written last, their data as it is."""
        for write in writes:
            last = self._last_checkpoint
            if last is None or (write.trace_id, write.checkpoint_id) != (
                last.trace_id,
                last.checkpoint_id,
            ):
                raise ValueError(
                    f"archive order broken: a write of checkpoint {write.checkpoint_id} "
                    f"is not of the checkpoint before it"
                )
            key = _write_key(write)
            if self._last_write is not None and key <= self._last_write:
                raise ValueError(f"archive order broken: write {key} after {self._last_write}")
            self._last_write = key
            self._writes += 1
            key_fields = (write.trace_id, write.checkpoint_id, write.task_id, write.index)
            self._put(self._record(_Write(*key_fields, bytes(write.data))))

    def finish(self) -> ArchiveSummary:
        """Write the trailer; return what the archive holds."""
        trailer = _Trailer(self._traces, self._checkpoints, self._hash.digest(), self._writes)
        self._stream.write(self._record(trailer))
        self._stream.flush()
        return ArchiveSummary(self._traces, self._checkpoints, self._writes)


def _read_exactly(stream: ByteSource, size: int, what: str) -> bytes:
    chunk = stream.read(size)
    if len(chunk) != size:
        raise ArchiveError(f"the archive is truncated (in {what})", corrupt=True)
    return chunk


def _blob(record: _Checkpoint) -> CheckpointBlob:
    """The record as a blob, with every header field checked as a store would."""
    try:
        trace = validate_trace_id(record.trace_id)
        check_header(record.step, record.graph_hash, record.created_at)
        node = validate_current_node(record.current_node)
        if len(record.metadata) > MAX_RECORD_METADATA_SIZE:
            raise ValueError(
                f"its metadata takes {len(record.metadata)} bytes, over the limit of "
                f"{MAX_RECORD_METADATA_SIZE}"
            )
        metadata = validate_metadata(_metadata_decoder.decode(record.metadata))
    except ValueError as exc:  # msgspec.DecodeError included
        raise ArchiveError(
            f"checkpoint {record.checkpoint_id} in the archive has an impossible header: {exc}",
            corrupt=True,
        ) from None
    return CheckpointBlob(
        checkpoint_id=CheckpointId(record.checkpoint_id),
        trace_id=trace,
        step=record.step,
        parent_id=None if record.parent_id is None else CheckpointId(record.parent_id),
        graph_hash=record.graph_hash,
        created_at=record.created_at,
        current_node=node,
        metadata=metadata,
        data=record.data,
    )


def _write(record: _Write, after: CheckpointBlob | None, version: int) -> PendingWrite:
    """The record as a pending write of checkpoint ``after``, its key checked as a store would."""
    if version < 2:
        raise ArchiveError("a pending write in an archive of version 1", corrupt=True)
    what = f"pending write {record.task_id!r:.80} of checkpoint {record.checkpoint_id}"
    if after is None or (record.trace_id, record.checkpoint_id) != (
        after.trace_id,
        after.checkpoint_id,
    ):
        raise ArchiveError(f"{what} is not of the checkpoint before it", corrupt=True)
    try:
        check_write_key(record.task_id, record.index)
        if len(record.data) > DEFAULT_MAX_PAYLOAD_SIZE:
            raise ValueError(f"its data takes {len(record.data)} bytes, over the limit")
    except ValueError as exc:
        raise ArchiveError(
            f"{what} in the archive has an impossible key: {exc}", corrupt=True
        ) from None
    return PendingWrite(
        after.trace_id, after.checkpoint_id, record.task_id, record.index, record.data
    )


def read_archive(
    stream: ByteSource,
) -> Generator[CheckpointBlob | PendingWrite, None, ArchiveSummary]:
    """The checkpoints of an archive, each followed by its pending writes; checks the trailer.

    Raises :class:`ArchiveError`: not ``corrupt`` for a stream that is not a
    flowpoint archive (or of a newer version), ``corrupt`` for truncation, a bad
    record, records out of order (a write not right after its checkpoint's
    record, or after its checkpoint's other writes in key order), counts or a
    checksum that disagree, or bytes after the trailer. A record is yielded
    before the checksum is known: callers that must not act on a damaged archive
    read it through once first. The return value (of the generator) is the
    :class:`ArchiveSummary`.
    """
    prefix = stream.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[: len(MAGIC)] != MAGIC:
        raise ArchiveError("not a flowpoint archive (bad magic)", corrupt=False)
    _, version = _PREFIX.unpack(prefix)
    if version not in READABLE_VERSIONS:
        raise ArchiveError(
            f"archive format version {version}; this flowpoint reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
            corrupt=False,
        )
    digest = hashlib.sha256(prefix)
    last: tuple[str, int] | None = None
    last_blob: CheckpointBlob | None = None
    last_write: tuple[str, int] | None = None
    traces = checkpoints = writes = 0
    while True:
        length_bytes = stream.read(_LENGTH.size)
        if len(length_bytes) != _LENGTH.size:
            raise ArchiveError("the archive is truncated (no trailer)", corrupt=True)
        (length,) = _LENGTH.unpack(length_bytes)
        if length > MAX_RECORD_SIZE:
            raise ArchiveError(
                f"a record claims {length} bytes, over the limit of {MAX_RECORD_SIZE}",
                corrupt=True,
            )
        number = checkpoints + writes + 1
        body = _read_exactly(stream, length, f"record {number}")
        try:
            record = _decoder.decode(body)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise ArchiveError(f"record {number} is not readable: {exc}", corrupt=True) from None
        if isinstance(record, _Trailer):
            break
        digest.update(length_bytes)
        digest.update(body)
        if isinstance(record, _Write):
            write = _write(record, last_blob, version)
            if last_write is not None and _write_key(write) <= last_write:
                raise ArchiveError(
                    f"pending writes out of order: task {write.task_id!r:.80} index "
                    f"{write.index} after task {last_write[0]!r:.80} index {last_write[1]}",
                    corrupt=True,
                )
            last_write = _write_key(write)
            writes += 1
            yield write
            continue
        blob = _blob(record)
        key = _sort_key(blob)
        if last is not None and key <= last:
            raise ArchiveError(
                f"records out of order: trace {key[0]!r} step {key[1]} after "
                f"trace {last[0]!r} step {last[1]}",
                corrupt=True,
            )
        if last is None or key[0] != last[0]:
            traces += 1
        last, last_blob, last_write = key, blob, None
        checkpoints += 1
        yield blob
    if stream.read(1):
        raise ArchiveError("bytes follow the archive's trailer", corrupt=True)
    if record.sha256 != digest.digest():
        raise ArchiveError("the archive's checksum does not match its contents", corrupt=True)
    if (record.traces, record.checkpoints, record.writes) != (traces, checkpoints, writes):
        raise ArchiveError(
            f"the trailer counts {record.traces} trace(s), {record.checkpoints} "
            f"checkpoint(s) and {record.writes} pending write(s); the archive holds "
            f"{traces}, {checkpoints} and {writes}",
            corrupt=True,
        )
    return ArchiveSummary(traces, checkpoints, writes)


def scan_archive(stream: ByteSource) -> ArchiveSummary:
    """Read a whole archive, checking everything :func:`read_archive` checks; keep nothing."""
    reader = read_archive(stream)
    while True:
        try:
            next(reader)
        except StopIteration as finished:
            summary: ArchiveSummary = finished.value
            return summary
