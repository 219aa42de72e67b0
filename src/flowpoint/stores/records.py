r"""The records files and objects hold: the store's own header, then the data.

Layout (integers big-endian)::

    8 bytes   magic, one per backend and kind of record
    4 bytes   header length H
    H bytes   header: JSON (a :class:`RecordHeader` or a :class:`WritesHeader`)
    4 bytes   CRC-32 of the header
    ...       data, exactly as many bytes as the header's ``data_length`` says

A checkpoint's record (magic ``b"FPFILE1\n"``, ``b"FPS3OB1\n"``) holds its header
fields and its data. A writes record (``b"FPWRIT1\n"``, ``b"FPS3WR1\n"``) holds what
one :meth:`~flowpoint.stores.base.BlobCheckpointStore.save_writes` call stored: the
keys and lengths of its writes in the header, their data one after another.

The header is checked on its own (magic, length, CRC, field kinds), so a listing
reads headers only and finds damage without touching the data. Whether the record
sits where its header says it belongs (trace, step) is the backend's to check.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Generic, Protocol, TypeVar

import msgspec

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointInfo,
    MetadataValue,
    PendingWrite,
    check_header,
    check_write_key,
    utc,
    validate_metadata,
)
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = [
    "RecordFormat",
    "RecordHeader",
    "WritesHeader",
    "record_header",
    "resolve_writes",
    "writes_header",
]

_PREFIX = struct.Struct(">8sI")
_CRC = struct.Struct(">I")
_MAX_HEADER = 2**32 - 1


class RecordHeader(msgspec.Struct, forbid_unknown_fields=True):
    """The store's own header of a checkpoint's record; a backend may add fields in a subclass."""

    checkpoint_id: uuid.UUID
    trace_id: str
    step: int
    parent_id: uuid.UUID | None
    graph_hash: int
    created_at: str
    current_node: str | None
    metadata: dict[str, MetadataValue]
    data_length: Annotated[int, msgspec.Meta(ge=0)]

    def info(self) -> CheckpointInfo:
        """The checkpoint's header, with ``size`` the data's length."""
        return CheckpointInfo(
            checkpoint_id=CheckpointId(self.checkpoint_id),
            trace_id=TraceId(self.trace_id),
            step=self.step,
            parent_id=None if self.parent_id is None else CheckpointId(self.parent_id),
            graph_hash=self.graph_hash,
            created_at=utc(datetime.fromisoformat(self.created_at)),
            current_node=self.current_node,
            metadata=self.metadata,
            size=self.data_length,
        )

    def check(self) -> None:
        """Raise ``ValueError`` for a value no checkpoint header may hold."""
        validate_trace_id(self.trace_id)
        check_header(self.step, self.graph_hash, datetime.fromisoformat(self.created_at))
        validate_metadata(self.metadata)


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
        if len({(task_id, index) for task_id, index, _ in self.writes}) != len(self.writes):
            raise ValueError("a key is in the record twice")
        if sum(length for _, _, length in self.writes) != self.data_length:
            raise ValueError("the writes' lengths do not add up to the data's")

    def keys(self) -> set[tuple[str, int]]:
        """The keys of the writes this record holds."""
        return {(task_id, index) for task_id, index, _ in self.writes}

    def split(self, data: bytes) -> list[PendingWrite]:
        """The record's writes, given its data."""
        writes, offset = [], 0
        checkpoint_id = CheckpointId(self.checkpoint_id)
        for task_id, index, length in self.writes:
            writes.append(
                PendingWrite(
                    TraceId(self.trace_id),
                    checkpoint_id,
                    task_id,
                    index,
                    data[offset : offset + length],
                )
            )
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


R = TypeVar("R", bound=RecordHeader)


def record_header(header_type: type[R], blob: CheckpointBlob, **extra: Any) -> R:
    """The header of ``blob``'s record; ``extra`` fills a subclass's own fields."""
    return header_type(
        checkpoint_id=blob.checkpoint_id,
        trace_id=blob.trace_id,
        step=blob.step,
        parent_id=blob.parent_id,
        graph_hash=blob.graph_hash,
        created_at=utc(blob.created_at).isoformat(timespec="microseconds"),
        current_node=blob.current_node,
        metadata=validate_metadata(blob.metadata),
        data_length=len(blob.data),
        **extra,
    )


class _Header(Protocol):
    """What the record format needs of a header type."""

    @property
    def checkpoint_id(self) -> uuid.UUID: ...

    @property
    def data_length(self) -> int: ...

    def check(self) -> None: ...


H = TypeVar("H", bound=_Header)

_encode_json = msgspec.json.Encoder().encode


class RecordFormat(Generic[H]):
    """Writes and reads records with one magic and one header type."""

    prefix_size = _PREFIX.size
    checksum_size = _CRC.size

    def __init__(self, magic: bytes, header_type: type[H]) -> None:
        if len(magic) != 8:
            raise ValueError("a record magic is 8 bytes")
        self.magic = magic
        self.header_type = header_type
        self._decode_json: Callable[[bytes], H] = msgspec.json.Decoder(header_type).decode

    def encode(self, header: H, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """The parts of a record: prefix, header JSON, its CRC, data.

        Raises ``ValueError`` if the header cannot be stored: what is written must
        read back, so a value of the wrong kind is refused now, not found as damage later.
        """
        checkpoint_id = CheckpointId(header.checkpoint_id)
        try:
            header_json = _encode_json(header)
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

        ``head`` must reach at least to the end of the header's CRC.
        """
        end = self.header_end(head, where, checkpoint_id, size)
        if len(head) < end:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: truncated inside the header")
        header_json = head[_PREFIX.size : end - _CRC.size]
        (crc,) = _CRC.unpack_from(head, end - _CRC.size)
        if zlib.crc32(header_json) != crc:
            raise CorruptCheckpoint(checkpoint_id, f"{where}: header checksum mismatch")
        header = self.decode_header(header_json, checkpoint_id, where)
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
            header = self._decode_json(header_json)
            header.check()
        except ValueError as exc:
            # msgspec.DecodeError, InvalidTraceId and a bad ISO date are all ValueErrors.
            raise CorruptCheckpoint(checkpoint_id, f"{where}: bad header: {exc}") from None
        return header
