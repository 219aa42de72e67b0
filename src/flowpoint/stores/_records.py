r"""The records files and objects hold: the store's own header, then the data.

Layout (integers big-endian)::

    8 bytes   magic, one per backend and kind of record
    4 bytes   header length H
    H bytes   header: a JSON object
    4 bytes   CRC-32 of the header
    ...       data, exactly as many bytes as the header's ``data_length`` says

A checkpoint's record (magic ``b"FPFILE1\n"``, ``b"FPS3OB1\n"``) holds a
:class:`RecordHeader`: the checkpoint's header fields (the
:class:`~flowpoint.blob.CheckpointHeader` as JSON: ids and times as text), the
data's length and the fields its backend adds, then the checkpoint's data. A writes
record (``b"FPWRIT1\n"``, ``b"FPS3WR1\n"``) holds what one
:meth:`~flowpoint.stores._base.BlobCheckpointStore.save_writes` call stored: the
keys and lengths of its writes in a :class:`WritesHeader`, their data one after
another.

The header is checked on its own (magic, length, CRC, field kinds), so a listing
reads headers only and finds damage without touching the data. Whether the record
sits where its header says it belongs (trace, step) is the backend's to check.
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec

from flowpoint.blob import (
    HEADER_FIELDS,
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    PendingWrite,
    check_write_key,
    utc,
)
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = [
    "RecordFormat",
    "RecordHeader",
    "WritesHeader",
    "checkpoint_records",
    "readable_id",
    "resolve_writes",
    "writes_header",
    "writes_records",
]

_PREFIX = struct.Struct(">8sI")
_CRC = struct.Struct(">I")
_MAX_HEADER = 2**32 - 1
_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The header of a checkpoint's record: the checkpoint's, and what the record adds.

    ``extra`` holds the text fields a backend adds (the S3 store's ``writer``).
    """

    header: CheckpointHeader
    data_length: int
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def checkpoint_id(self) -> CheckpointId:
        """The id of the checkpoint the record holds."""
        return self.header.checkpoint_id

    def info(self) -> CheckpointInfo:
        """The checkpoint's header, with ``size`` the data's length."""
        return self.header.with_size(self.data_length)

    @classmethod
    def of(cls, blob: CheckpointBlob, **extra: str) -> RecordHeader:
        """The header of ``blob``'s record (its time in UTC), with a backend's ``extra``."""
        header = dataclasses.replace(blob.header, created_at=utc(blob.created_at))
        return cls(header, len(blob.data), extra)


class WritesHeader(msgspec.Struct, forbid_unknown_fields=True):
    """The header of a writes record: whose writes, and each one's key and data length.

    ``overwrite`` says whether the call replaced stored keys; without it, the call
    stored only keys no earlier record of the checkpoint holds.
    """

    trace_id: str
    checkpoint_id: uuid.UUID
    overwrite: bool
    writes: list[tuple[str, int, Annotated[int, msgspec.Meta(ge=0)]]]
    data_length: Annotated[int, msgspec.Meta(ge=0)]

    def check(self) -> None:
        """Raise ``ValueError`` for keys or lengths no save_writes call stores."""
        validate_trace_id(self.trace_id)
        for task_id, index, _ in self.writes:
            check_write_key(task_id, index)
        if len(self.keys()) != len(self.writes):
            raise ValueError("a key is in the record twice")
        if sum(length for _, _, length in self.writes) != self.data_length:
            raise ValueError("the writes' lengths do not add up to the data's")

    def keys(self) -> set[tuple[str, int]]:
        """The keys of the writes this record holds."""
        return {(task_id, index) for task_id, index, _ in self.writes}

    def split(self, data: bytes) -> list[PendingWrite]:
        """The record's writes, given its data."""
        writes, offset = [], 0
        trace_id, checkpoint_id = TraceId(self.trace_id), CheckpointId(self.checkpoint_id)
        for task_id, index, length in self.writes:
            chunk = data[offset : offset + length]
            writes.append(PendingWrite(trace_id, checkpoint_id, task_id, index, chunk))
            offset += length
        return writes


def writes_header(writes: list[PendingWrite], *, overwrite: bool) -> tuple[WritesHeader, bytes]:
    """The header and data of a record of ``writes`` (all of one checkpoint)."""
    first = writes[0]
    header = WritesHeader(
        trace_id=first.trace_id,
        checkpoint_id=first.checkpoint_id,
        overwrite=overwrite,
        writes=[(write.task_id, write.index, len(write.data)) for write in writes],
        data_length=sum(len(write.data) for write in writes),
    )
    return header, b"".join(write.data for write in writes)


def resolve_writes(records: Iterable[tuple[WritesHeader, bytes]]) -> list[PendingWrite]:
    """The writes of a checkpoint, given its records in the order they were made.

    The first write of a key wins, unless a later record overwrote it.
    """
    resolved: dict[tuple[str, int], PendingWrite] = {}
    for header, data in records:
        for write in header.split(data):
            key = (write.task_id, write.index)
            if header.overwrite or key not in resolved:
                resolved[key] = write
    return list(resolved.values())


class _Header(Protocol):
    """What the record format needs of a header."""

    @property
    def checkpoint_id(self) -> uuid.UUID: ...

    @property
    def data_length(self) -> int: ...


H = TypeVar("H", bound=_Header)


class RecordFormat(Generic[H]):
    """Writes and reads records with one magic and one kind of header.

    ``encode`` gives a header's JSON; ``decode`` reads one back and checks its
    values, raising ``ValueError`` for any it refuses.
    """

    prefix_size = _PREFIX.size
    checksum_size = _CRC.size

    def __init__(
        self, magic: bytes, encode: Callable[[H], bytes], decode: Callable[[bytes], H]
    ) -> None:
        if len(magic) != 8:
            raise ValueError("a record magic is 8 bytes")
        self.magic = magic
        self._encode = encode
        self._decode = decode

    def encode(self, header: H, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """The parts of a record: prefix, header JSON, its CRC, data.

        Raises ``ValueError`` if the header cannot be stored: what is written must
        read back, so a value of the wrong kind is refused now, not found as damage later.
        """
        checkpoint_id = CheckpointId(header.checkpoint_id)
        try:
            header_json = self._encode(header)
            if len(header_json) > _MAX_HEADER:
                raise ValueError(f"the header is {len(header_json)} bytes")
            self.decode_header(header_json, checkpoint_id, "the new header")
        except (TypeError, ValueError, CorruptCheckpoint) as exc:
            raise ValueError(f"cannot store checkpoint {checkpoint_id}: {exc}") from exc
        return (
            _PREFIX.pack(self.magic, len(header_json)),
            header_json,
            _CRC.pack(zlib.crc32(header_json)),
            bytes(data),
        )

    def header_end(
        self, prefix: bytes, where: str, checkpoint_id: CheckpointId | None, size: int
    ) -> int:
        """Where the header and its CRC end, from a record's first bytes and its size."""
        if len(prefix) < _PREFIX.size:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: truncated to {len(prefix)} bytes")
        magic, header_length = _PREFIX.unpack_from(prefix)
        if magic != self.magic:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: bad magic {magic!r}")
        end: int = _PREFIX.size + header_length + _CRC.size
        if header_length == 0 or end > size:
            raise CorruptCheckpoint(
                checkpoint_id,
                f"{where}: header length {header_length} does not fit in {size} bytes",
            )
        return end

    def read_header(
        self, head: bytes, where: str, checkpoint_id: CheckpointId | None, size: int
    ) -> H:
        """The checked header of a record of ``size`` bytes whose first bytes are ``head``.

        ``head`` must reach at least to the end of the header's CRC. The
        :class:`CorruptCheckpoint` raised for a damaged header names the id the
        caller gave, or else the id the header holds if it can be read at all.
        """
        end = self.header_end(head, where, checkpoint_id, size)
        if len(head) < end:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: truncated inside the header")
        header_json = head[_PREFIX.size : end - _CRC.size]
        (crc,) = _CRC.unpack_from(head, end - _CRC.size)
        if zlib.crc32(header_json) != crc:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: header checksum mismatch")
        header = self.decode_header(header_json, checkpoint_id or readable_id(header_json), where)
        if size != end + header.data_length:
            raise CorruptCheckpoint(
                checkpoint_id or CheckpointId(header.checkpoint_id),
                f"{where}: the record is {size} bytes, the header says "
                f"{end + header.data_length} ({header.data_length} bytes of data)",
            )
        return header

    def decode_header(
        self, header_json: bytes, checkpoint_id: CheckpointId | None, where: str
    ) -> H:
        """Decode a header and check its values, or raise :class:`CorruptCheckpoint`."""
        try:
            return self._decode(header_json)
        except ValueError as exc:
            # msgspec's errors, InvalidTraceId and a bad ISO date are all ValueErrors.
            raise CorruptCheckpoint(checkpoint_id, f"{where}: bad header: {exc}") from None


def readable_id(header_json: bytes) -> CheckpointId | None:
    """The checkpoint id a header holds, if it is JSON with one, however damaged the rest."""
    try:
        document = msgspec.json.decode(header_json)
        return CheckpointId(uuid.UUID(document["checkpoint_id"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def checkpoint_records(magic: bytes, extra: tuple[str, ...] = ()) -> RecordFormat[RecordHeader]:
    """The format of checkpoint records with ``magic``, whose headers add the ``extra`` fields."""
    fields = frozenset({*HEADER_FIELDS, "data_length", *extra})

    def encode(record: RecordHeader) -> bytes:
        document: dict[str, Any] = msgspec.to_builtins(record.header)
        document["data_length"] = record.data_length
        document.update(record.extra)
        return _encode_json(document)

    def decode(header_json: bytes) -> RecordHeader:
        document = msgspec.json.decode(header_json)
        if type(document) is not dict:
            raise ValueError("not a JSON object")
        if document.keys() != fields:
            unknown, missing = document.keys() - fields, fields - document.keys()
            raise ValueError(f"unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        values = {name: document[name] for name in HEADER_FIELDS}
        header = msgspec.convert(values, CheckpointHeader)
        header.check()
        data_length = document["data_length"]
        if type(data_length) is not int or data_length < 0:
            raise ValueError(f"data_length is {data_length!r:.40}, not an int >= 0")
        added = {name: document[name] for name in extra}
        if any(type(value) is not str for value in added.values()):
            raise ValueError(f"the fields {sorted(added)} must be text")
        return RecordHeader(
            dataclasses.replace(header, created_at=utc(header.created_at)), data_length, added
        )

    return RecordFormat(magic, encode, decode)


def writes_records(magic: bytes) -> RecordFormat[WritesHeader]:
    """The format of writes records with ``magic``."""
    decode_json = msgspec.json.Decoder(WritesHeader).decode

    def decode(header_json: bytes) -> WritesHeader:
        header = decode_json(header_json)
        header.check()
        return header

    return RecordFormat(magic, _encode_json, decode)
