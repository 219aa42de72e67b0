r"""The self-describing byte format of a checkpoint's ``data``.

Layout (integers big-endian)::

    offset  size  field
    0       4     magic  b"\x89FPC"
    4       1     format version (1)
    5       4     header length H
    9       H     header: a MessagePack array (see :class:`EnvelopeHeader`)
    9+H     ...   body: the encoded state, in the format the header names
    end-8   8     XXH3-64 checksum of every byte before it

The header names the body's format and any compression or encryption, and
repeats the checkpoint's own header (id, trace, step, parent, graph hash, time,
node, metadata) so that bytes stored under the wrong checkpoint are caught. The
leading 0x89 byte, as in PNG, catches transfers that strip the high bit.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

import msgspec
import xxhash

from flowpoint.blob import CheckpointBlob, MetadataValue
from flowpoint.errors import CorruptCheckpoint

__all__ = ["FORMAT_VERSION", "MAGIC", "EnvelopeHeader", "open_envelope", "seal_envelope"]

MAGIC = b"\x89FPC"
FORMAT_VERSION = 1

_PREFIX = struct.Struct(">4sBI")
_CHECKSUM = struct.Struct(">Q")
_MIN_LENGTH = _PREFIX.size + _CHECKSUM.size


class EnvelopeHeader(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The header inside ``data``.

    New fields go last, with defaults, so that data written before them still decodes.
    """

    body_format: str
    compression: str | None
    key_id: str | None
    checkpoint_id: UUID
    trace_id: str
    step: int
    parent_id: UUID | None
    graph_hash: int
    created_at: datetime
    current_node: str | None
    metadata: dict[str, MetadataValue]


_header_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_header_decoder = msgspec.msgpack.Decoder(EnvelopeHeader)


def seal_envelope(header: EnvelopeHeader, body: bytes) -> bytes:
    """Frame ``body`` behind ``header`` and append the checksum."""
    encoded_header = _header_encoder.encode(header)
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(encoded_header)) + encoded_header
    # The checksum runs on over the parts, so the body is copied once, into the result.
    checksum = xxhash.xxh3_64(head)
    checksum.update(body)
    return b"".join((head, body, _CHECKSUM.pack(checksum.intdigest())))


def open_envelope(blob: CheckpointBlob) -> tuple[EnvelopeHeader, memoryview]:
    """Check ``blob.data``'s framing and checksum, and that its header is ``blob``'s.

    Returns the envelope header and a view of the body. Raises
    :class:`CorruptCheckpoint` for anything else, whatever the bytes.
    """
    data = blob.data

    def corrupt(reason: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(blob.checkpoint_id, reason)

    if not isinstance(data, bytes):
        raise corrupt(f"data is {type(data).__name__}, not bytes")
    if len(data) < _MIN_LENGTH:
        raise corrupt(f"data is truncated: {len(data)} bytes")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise corrupt(f"not a flowpoint checkpoint (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise corrupt(
            f"format version {version} is not one this flowpoint reads ({FORMAT_VERSION})"
        )
    body_end = len(data) - _CHECKSUM.size
    if _PREFIX.size + header_length > body_end:
        raise corrupt("data is truncated: the header runs past the end")
    view = memoryview(data)
    (stored_checksum,) = _CHECKSUM.unpack_from(data, body_end)
    if xxhash.xxh3_64_intdigest(view[:body_end]) != stored_checksum:
        raise corrupt("checksum mismatch: the bytes were changed or cut short")
    try:
        header = _header_decoder.decode(view[_PREFIX.size : _PREFIX.size + header_length])
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        # ValueError: msgspec lets UnicodeDecodeError through for invalid UTF-8.
        raise corrupt(f"unreadable envelope header ({exc})") from exc
    _check_same_checkpoint(blob, header)
    return header, view[_PREFIX.size + header_length : body_end]


def _as_dict(metadata: object) -> object:
    return dict(metadata) if isinstance(metadata, Mapping) else metadata


def _check_same_checkpoint(blob: CheckpointBlob, header: EnvelopeHeader) -> None:
    """Raise :class:`CorruptCheckpoint` if the store's header and the payload's differ."""
    fields = (
        ("checkpoint_id", blob.checkpoint_id, header.checkpoint_id),
        ("trace_id", blob.trace_id, header.trace_id),
        ("step", blob.step, header.step),
        ("parent_id", blob.parent_id, header.parent_id),
        ("graph_hash", blob.graph_hash, header.graph_hash),
        ("created_at", blob.created_at, header.created_at),
        ("current_node", blob.current_node, header.current_node),
        ("metadata", _as_dict(blob.metadata), header.metadata),
    )
    for name, stored, embedded in fields:
        if type(stored) is not type(embedded) or stored != embedded:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"the payload belongs to another checkpoint: {name} is {stored!r:.80} in the "
                f"store but {embedded!r:.80} in the payload",
            )
