r"""The self-describing byte format of a pending write's ``data``.

Framed as a checkpoint's data is (see :mod:`flowpoint.codec._envelope`), with a
magic of its own, so that neither is ever read as the other::

    offset  size  field
    0       4     magic  b"\x89FPW"
    4       1     format version (1)
    5       4     header length H (at most MAX_WRITE_HEADER_LENGTH)
    9       H     header: a MessagePack array (see :class:`WriteHeader`)
    9+H     ...   body
    end-8   8     XXH3-64 checksum of every byte before it

The header names the body's compression and the key that encrypted it, and
repeats the key the store files the write under (trace, checkpoint, task id,
index), so that data stored under another key is caught. The body is a
MessagePack array ``[channel, value, task_path]``, compressed and encrypted as a
checkpoint's state is (AES-256-GCM with the head as associated data).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from flowpoint.blob import PendingWrite
from flowpoint.checkpoint import TaskWrite
from flowpoint.codec._envelope import check_framing, frame_head, seal_envelope, split_frame
from flowpoint.codec._keys import check_key_id
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId

__all__ = [
    "MAX_WRITE_HEADER_LENGTH",
    "WRITE_FORMAT_VERSION",
    "WRITE_MAGIC",
    "OpenedWrite",
    "WriteBody",
    "WriteHeader",
    "open_write",
    "seal_write",
    "write_body",
    "write_from_body",
]

WRITE_MAGIC = b"\x89FPW"
WRITE_FORMAT_VERSION = 1
MAX_WRITE_HEADER_LENGTH = 4096
"""Bytes in a write's header, at most: a trace id and a task id of 256 characters fit."""


class WriteHeader(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The header inside a pending write's ``data``. New fields go last, with defaults."""

    compression: str | None
    key_id: str | None
    trace_id: str
    checkpoint_id: UUID
    task_id: str
    index: int


class WriteBody(msgspec.Struct, array_like=True, frozen=True):
    channel: str
    value: Any
    task_path: str = ""


class OpenedWrite(msgspec.Struct, frozen=True):
    """A write's checked header, its head (the associated data) and its body as stored."""

    header: WriteHeader
    head: memoryview
    body: memoryview


_header_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_header_decoder = msgspec.msgpack.Decoder(WriteHeader)
_body_decoder = msgspec.msgpack.Decoder(WriteBody)


def write_body(write: TaskWrite) -> WriteBody:
    """What a write's body holds, for the codec to encode with its own encoder."""
    return WriteBody(write.channel, write.value, write.task_path)


def seal_write(header: WriteHeader, body: bytes, encrypt: Any) -> bytes:
    """Frame ``body`` (compressed already, as ``header`` says) and encrypt it with ``encrypt``.

    ``encrypt(body, head)`` is the key ring's, or ``None`` for a write that is not
    encrypted. ``ValueError`` for a header over :data:`MAX_WRITE_HEADER_LENGTH`.
    """
    head = frame_head(
        WRITE_MAGIC, WRITE_FORMAT_VERSION, _header_encoder.encode(header), MAX_WRITE_HEADER_LENGTH
    )
    if encrypt is not None:
        body = encrypt(body, head)
    return seal_envelope(head, body)


def open_write(write: PendingWrite) -> OpenedWrite:
    """Check a stored write's framing and checksum, and that its header is its key.

    Raises :class:`~flowpoint.errors.CorruptCheckpoint` naming the checkpoint for
    anything else, whatever the bytes. Nothing here is authenticated.
    """
    checkpoint_id = write.checkpoint_id

    def corrupt(reason: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(checkpoint_id, f"pending write {write.task_id!r:.80}: {reason}")

    length = check_framing(
        write.data, WRITE_MAGIC, WRITE_FORMAT_VERSION, MAX_WRITE_HEADER_LENGTH, "write", corrupt
    )
    head, body = split_frame(write.data, length, corrupt)
    try:
        header = _header_decoder.decode(head[len(head) - length :])
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        raise corrupt(f"unreadable header ({exc})") from exc
    if header.key_id is not None:
        try:
            check_key_id(header.key_id)
        except ValueError as exc:
            raise corrupt(f"header: {exc}") from None
    stored = (write.trace_id, write.checkpoint_id, write.task_id, write.index)
    embedded = (header.trace_id, CheckpointId(header.checkpoint_id), header.task_id, header.index)
    for name, mine, theirs in zip(
        ("trace_id", "checkpoint_id", "task_id", "index"), stored, embedded, strict=True
    ):
        if type(mine) is not type(theirs) or mine != theirs:
            raise corrupt(
                f"the data belongs to another write: {name} is {mine!r:.80} in the store "
                f"but {theirs!r:.80} in the data"
            )
    return OpenedWrite(header, head, body)


def write_from_body(write: PendingWrite, plain: memoryview | bytes) -> TaskWrite:
    """The task write a stored write's plaintext, decompressed body holds."""
    try:
        body = _body_decoder.decode(plain)
        return TaskWrite(write.task_id, write.index, body.channel, body.value, body.task_path)
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
        raise CorruptCheckpoint(
            write.checkpoint_id, f"pending write {write.task_id!r:.80}: unreadable body ({exc})"
        ) from exc
