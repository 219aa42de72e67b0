r"""The self-describing byte format of a checkpoint's ``data``.

Layout (integers big-endian)::

    offset  size  field
    0       4     magic  b"\x89FPC"
    4       1     format version (1)
    5       4     header length H (at most MAX_HEADER_LENGTH)
    9       H     header: a MessagePack array (see :class:`EnvelopeHeader`)
    9+H     ...   body
    end-8   8     XXH3-64 checksum of every byte before it

The header names the body's format (``"msgpack"`` or ``"json"`` for a whole
state, ``"delta"`` for the changes to a base checkpoint it names), its
compression (``None`` or ``"zstd"``: one zstd frame that declares its size) and
the id of the key that encrypted it (``None``: not encrypted), and repeats the
checkpoint's own header (id, trace, step, parent, graph hash, time, node,
metadata) so that bytes stored under the wrong checkpoint are caught. The
leading 0x89 byte, as in PNG, catches transfers that strip the high bit.

The body is the encoded state (or delta), followed by the runner's cursor in
MessagePack when the header gives its length, compressed if the header says so,
then, if the header names a key, encrypted with AES-256-GCM: a 12-byte random nonce, the
ciphertext, and the 16-byte tag. The associated data is the *head*, bytes 0 to
9+H: every header field, the compression and the key id are authenticated
together with the body, so a body moved under another header fails. The
checksum only catches accidents; without encryption nothing is authenticated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

import msgspec
import xxhash

from flowpoint.blob import CheckpointBlob, MetadataValue
from flowpoint.codec._keys import check_key_id
from flowpoint.errors import CorruptCheckpoint

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_HEADER_LENGTH",
    "Envelope",
    "EnvelopeHeader",
    "check_framing",
    "encode_head",
    "frame_head",
    "open_envelope",
    "peek_header",
    "seal_envelope",
    "split_frame",
]

MAGIC = b"\x89FPC"
FORMAT_VERSION = 1
MAX_HEADER_LENGTH = 64 * 1024
"""Bytes in an envelope header, at most: far above what bounded header fields need."""

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
    base_id: UUID | None = None
    """For a body of format ``"delta"``: the checkpoint whose state the delta changes."""
    chain_start: int | None = None
    """For a body of format ``"delta"``: the step where its chain's full state is."""
    cursor_length: int | None = None
    """Bytes at the end of the body (once decrypted and decompressed) that hold the
    checkpoint's cursor, as MessagePack; ``None`` for a checkpoint without one."""


class Envelope(NamedTuple):
    """An opened envelope: its header, its head (the associated data) and its body."""

    header: EnvelopeHeader
    head: memoryview
    body: memoryview


_header_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_header_decoder = msgspec.msgpack.Decoder(EnvelopeHeader)


def encode_head(header: EnvelopeHeader) -> bytes:
    """The head of an envelope: magic, version, header length and header.

    ``ValueError`` if the header is longer than :data:`MAX_HEADER_LENGTH`.
    """
    return frame_head(MAGIC, FORMAT_VERSION, _header_encoder.encode(header), MAX_HEADER_LENGTH)


def frame_head(magic: bytes, version: int, encoded_header: bytes, limit: int) -> bytes:
    """A head of this layout for any kind of record: magic, version, header length, header.

    ``ValueError`` if the header is longer than ``limit``.
    """
    if len(encoded_header) > limit:
        raise ValueError(f"the envelope header is {len(encoded_header)} bytes, over {limit}")
    return _PREFIX.pack(magic, version, len(encoded_header)) + encoded_header


def seal_envelope(head: bytes, body: bytes) -> bytes:
    """Frame ``body`` behind ``head`` (from :func:`encode_head`) and append the checksum."""
    # The checksum runs on over the parts, so the body is copied once, into the result.
    checksum = xxhash.xxh3_64(head)
    checksum.update(body)
    return b"".join((head, body, _CHECKSUM.pack(checksum.intdigest())))


def open_envelope(blob: CheckpointBlob) -> Envelope:
    """Check ``blob.data``'s framing and checksum, and that its header is ``blob``'s.

    Returns the header, the head and the body. Raises :class:`CorruptCheckpoint`
    for anything else, whatever the bytes. Nothing here is authenticated: the
    codec decrypts the body with the head as associated data.
    """
    header_length = _framing(blob)
    head, body = split_frame(blob.data, header_length, _corrupt(blob))
    header = _decode_header(blob, header_length)
    _check_same_checkpoint(blob, header)
    return Envelope(header, head, body)


def split_frame(
    data: bytes, header_length: int, corrupt: Callable[[str], Exception]
) -> tuple[memoryview, memoryview]:
    """Check the checksum of framed ``data``; return its head and its body.

    ``header_length`` is what :func:`check_framing` returned; ``corrupt(reason)``
    makes the error raised for a checksum that does not match.
    """
    body_end = len(data) - _CHECKSUM.size
    view = memoryview(data)
    (stored_checksum,) = _CHECKSUM.unpack_from(data, body_end)
    if xxhash.xxh3_64_intdigest(view[:body_end]) != stored_checksum:
        raise corrupt("checksum mismatch: the bytes were changed or cut short")
    head_end = _PREFIX.size + header_length
    return view[:head_end], view[head_end:body_end]


def peek_header(blob: CheckpointBlob) -> EnvelopeHeader:
    """The envelope header of ``blob``, read without the checksum or any other check.

    For walking a chain of deltas, where every link is then opened with
    :func:`open_envelope` before anything of it is used. Raises
    :class:`CorruptCheckpoint` for data that has no readable header.
    """
    return _decode_header(blob, _framing(blob))


def _framing(blob: CheckpointBlob) -> int:
    """Check magic, version and lengths; return the header length."""
    return check_framing(
        blob.data, MAGIC, FORMAT_VERSION, MAX_HEADER_LENGTH, "checkpoint", _corrupt(blob)
    )


def _corrupt(blob: CheckpointBlob) -> Callable[[str], CorruptCheckpoint]:
    return lambda reason: CorruptCheckpoint(blob.checkpoint_id, reason)


def check_framing(
    data: object,
    magic: bytes,
    version: int,
    limit: int,
    kind: str,
    corrupt: Callable[[str], Exception],
) -> int:
    """Check the magic, version and lengths of framed ``data``; return its header length.

    ``kind`` names what the magic stands for in errors (``"checkpoint"``);
    ``corrupt(reason)`` makes the error raised.
    """
    if not isinstance(data, bytes):
        raise corrupt(f"data is {type(data).__name__}, not bytes")
    if len(data) < _MIN_LENGTH:
        raise corrupt(f"data is truncated: {len(data)} bytes")
    found, found_version, header_length = _PREFIX.unpack_from(data)
    if found != magic:
        raise corrupt(f"not a flowpoint {kind} (magic {found!r})")
    if found_version != version:
        raise corrupt(f"format version {found_version} is not one this flowpoint reads ({version})")
    if header_length > limit:
        raise corrupt(f"the header length {header_length} is over {limit}")
    if _PREFIX.size + header_length > len(data) - _CHECKSUM.size:
        raise corrupt("data is truncated: the header runs past the end")
    return int(header_length)


def _decode_header(blob: CheckpointBlob, header_length: int) -> EnvelopeHeader:
    """Decode the header and check its key id and chain fields."""
    raw = memoryview(blob.data)[_PREFIX.size : _PREFIX.size + header_length]
    try:
        header = _header_decoder.decode(raw)
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        # ValueError: msgspec lets UnicodeDecodeError through for invalid UTF-8.
        raise CorruptCheckpoint(blob.checkpoint_id, f"unreadable envelope header ({exc})") from exc
    if header.key_id is not None:
        try:
            check_key_id(header.key_id)
        except ValueError as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"envelope header: {exc}") from None
    if header.cursor_length is not None and header.cursor_length < 1:
        raise CorruptCheckpoint(
            blob.checkpoint_id, f"envelope header: a cursor of {header.cursor_length} bytes"
        )
    _check_chain_fields(blob, header)
    return header


def _as_dict(metadata: object) -> object:
    return dict(metadata) if isinstance(metadata, Mapping) else metadata


def _check_same_checkpoint(blob: CheckpointBlob, header: EnvelopeHeader) -> None:
    """Raise :class:`CorruptCheckpoint` if the store's header and the payload's differ."""
    if _same_checkpoint(blob, header):
        return  # every load and every link of a chain passes here: no tuples, no copies
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


def _same_checkpoint(blob: CheckpointBlob, header: EnvelopeHeader) -> bool:
    """What :func:`_check_same_checkpoint` checks, for the usual case: every field alike.

    Each field has the same type and value in both (``parent_id`` and
    ``current_node`` may be ``None`` in both); ``False`` sends the caller to the
    field-by-field comparison that names the first difference.
    """
    parent, node = blob.parent_id, blob.current_node
    return (
        type(blob.checkpoint_id) is UUID
        and type(header.checkpoint_id) is UUID
        and blob.checkpoint_id == header.checkpoint_id
        and type(blob.trace_id) is str
        and blob.trace_id == header.trace_id
        and type(blob.step) is int
        and blob.step == header.step
        and type(parent) is type(header.parent_id)
        and parent == header.parent_id
        and type(blob.graph_hash) is int
        and blob.graph_hash == header.graph_hash
        and type(blob.created_at) is type(header.created_at)
        and blob.created_at == header.created_at
        and type(node) is type(header.current_node)
        and node == header.current_node
        and type(blob.metadata) is dict
        and blob.metadata == header.metadata
    )


def _check_chain_fields(blob: CheckpointBlob, header: EnvelopeHeader) -> None:
    """Raise :class:`CorruptCheckpoint` unless a delta names an earlier base, and only a delta."""
    if header.body_format != "delta":
        if header.base_id is not None or header.chain_start is not None:
            raise CorruptCheckpoint(blob.checkpoint_id, "a whole state names a delta base")
        return
    if header.base_id is None or header.chain_start is None:
        raise CorruptCheckpoint(blob.checkpoint_id, "a delta without its base")
    if header.base_id == header.checkpoint_id or not 0 <= header.chain_start < header.step:
        raise CorruptCheckpoint(
            blob.checkpoint_id,
            f"a delta at step {header.step} whose chain starts at step {header.chain_start}",
        )
