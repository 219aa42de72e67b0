"""The stock codec: msgspec, MessagePack or JSON, decoding into the declared state type."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, get_args, overload
from uuid import UUID

import msgspec
from typing_extensions import override

from flowpoint._types import type_name
from flowpoint.blob import (
    CheckpointBlob,
    Metadata,
    PendingWrite,
    check_header,
    metadata_has_room,
)
from flowpoint.checkpoint import Checkpoint, S, State, TaskWrite
from flowpoint.codec._base import DeltaCheckpointCodec, WriteCodec
from flowpoint.codec._bounds import check_decoded_size
from flowpoint.codec._compression import (
    COMPRESSION_THRESHOLD,
    MAX_LEVEL,
    MIN_LEVEL,
    Compression,
    zstd_at,
)
from flowpoint.codec._delta import (
    Budget,
    Delta,
    Frame,
    Rebuild,
    diff_fields,
    join_fields,
    split_fields,
    state_size,
)
from flowpoint.codec._envelope import (
    Envelope,
    EnvelopeHeader,
    encode_head,
    open_envelope,
    peek_header,
    seal_envelope,
)
from flowpoint.codec._keys import KeyRing
from flowpoint.codec._schema import BodyFormat, schema_of
from flowpoint.codec._writes import (
    OpenedWrite,
    WriteHeader,
    open_write,
    seal_write,
    write_body,
    write_from_body,
)
from flowpoint.errors import CodecError, CorruptCheckpoint, GraphMismatch
from flowpoint.ids import CheckpointId, TraceId, coerce_checkpoint_id, validate_trace_id

__all__ = [
    "COMPRESSION_THRESHOLD",
    "DEFAULT_MAX_DECODED_SIZE",
    "DEFAULT_MAX_DELTA_CHAIN",
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "DEFAULT_MAX_STATE_SIZE",
    "DELTA_BASE_KEY",
    "MAX_DELTA_CHAIN",
    "BodyFormat",
    "Compression",
    "SerdeCheckpointCodec",
]

_BODY_FORMATS: tuple[BodyFormat, ...] = get_args(BodyFormat)

DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024 * 1024
"""Bytes of a checkpoint's stored data, at most, unless the codec says otherwise."""
DEFAULT_MAX_STATE_SIZE = 256 * 1024 * 1024
"""Bytes of an encoded state (before compression, after decompression), at most."""
DEFAULT_MAX_DECODED_SIZE = 1024 * 1024 * 1024
"""Bytes of memory decoding a state may build, as estimated before it is decoded, at most."""
DEFAULT_MAX_DELTA_CHAIN = 64
"""Deltas in a row, at most, before a checkpoint is stored whole again."""
MAX_DELTA_CHAIN = 256
"""The most deltas in a row any codec writes: readers refuse longer chains."""
DELTA_BASE_KEY = "flowpoint.delta_of"
"""The metadata key under which a delta names its base (for listings; reserved)."""
# Smaller states are stored whole without looking for changes: a delta's own header
# (about 200 bytes) would eat what it saves.
_MIN_DELTA_STATE = 1024
# A delta chain is cut (the next checkpoint stored whole) once its deltas hold this many
# times the bytes of the whole checkpoint it starts from: reading a checkpoint then costs
# at most about this many whole ones, and storage grows with what steps add.
_CHAIN_TO_KEYFRAME = 2


class SerdeCheckpointCodec(DeltaCheckpointCodec[S], WriteCodec, Generic[S]):
    """Encodes states with msgspec and decodes them back into ``state_type``.

    ``state_type`` may be ``dict`` (the default :data:`~flowpoint.State`), a
    dataclass, a ``TypedDict``, a ``msgspec.Struct`` or a pydantic v2 model, nested
    with the usual scalars, ``datetime``, ``UUID``, ``Enum``, ``Decimal`` and
    ``bytes``. Values come back as the types their annotations name: a value typed
    ``Any`` (as in a plain dict state) comes back as the format's own type, so a
    ``UUID`` there returns as a ``str``. A state implementing
    :class:`~flowpoint.WorkflowState` stores only its snapshot.

    A state is checked against ``state_type`` before it is encoded into a blob
    (only what changed, for a delta; nothing for plain dict states): one that does
    not fit, or a ``TypedDict`` state with keys its type does not declare, raises
    :class:`~flowpoint.errors.CodecError` naming the field and the path to the
    value, and nothing is stored.

    ``format`` is ``"msgpack"`` (compact, the default) or ``"json"`` (readable; it
    cannot hold NaN or infinity, and a state holding them is refused). Either
    codec reads data written in either format: the data names its own.

    ``compression="zstd"`` (the default) compresses a body (a state, or a delta) of
    at least 256 bytes with zstd at ``compression_level`` (-7 to 19, default 3) when that makes it
    smaller; ``None`` never compresses. Any codec reads compressed data.

    ``encryption`` is a :class:`~flowpoint.codec._keys.KeyRing`: states are then
    sealed with AES-256-GCM under its primary key, with every header field
    authenticated, and pydantic ``SecretStr``/``SecretBytes`` values may be stored
    (without encryption they are refused). A codec with a key ring refuses
    unencrypted data (anyone who can write to the store could have written it)
    unless ``allow_unencrypted=True``, for the time it takes to
    :meth:`~flowpoint.TypedCheckpointStore.rekey` a store written before.

    Deltas (MessagePack states whose top level is a map: dicts, dataclasses,
    Structs, pydantic models): saved through a
    :class:`~flowpoint.TypedCheckpointStore` over a store that can rewrite data,
    a checkpoint of 1 KiB of state or more is stored as its changes to the one
    saved before it in the trace (fields replaced, elements appended to or
    changed in an array) when that is less than half what it would take whole;
    after ``max_delta_chain`` deltas in a row (default 64, at most 256; 0 stores
    every state whole), or once the chain's deltas outweigh twice the whole checkpoint it
    starts from, the next one is stored whole. A delta names its base in its
    metadata under ``"flowpoint.delta_of"``; that key is reserved.

    Limits: saving data longer than ``max_payload_size`` bytes (64 MiB), a state
    that encodes to more than ``max_state_size`` bytes (256 MiB), or one whose
    decoding would build more than ``max_decoded_size`` bytes of objects (1 GiB,
    estimated from the encoded state: what each value decodes to, containers as
    the state type declares them) raises :class:`~flowpoint.errors.CodecError`;
    on load, longer data, a body that would decompress to more, or a state or
    delta that would decode to more (a few KB of zstd holding millions of empty
    arrays, say) is :class:`~flowpoint.errors.CorruptCheckpoint` before anything
    is decoded. Array elements split out for deltas count against
    ``max_decoded_size`` too.

    Configured, not subclassed::

        codec = SerdeCheckpointCodec(ResearchState, format="json")
    """

    @overload
    def __init__(
        self,
        state_type: type[S] = ...,
        *,
        format: BodyFormat = ...,
        compression: Compression | None = ...,
        compression_level: int = ...,
        encryption: KeyRing | None = ...,
        allow_unencrypted: bool = ...,
        max_payload_size: int = ...,
        max_state_size: int = ...,
        max_decoded_size: int = ...,
        max_delta_chain: int = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: SerdeCheckpointCodec[Any],
        state_type: Any,
        *,
        format: BodyFormat = ...,
        compression: Compression | None = ...,
        compression_level: int = ...,
        encryption: KeyRing | None = ...,
        allow_unencrypted: bool = ...,
        max_payload_size: int = ...,
        max_state_size: int = ...,
        max_decoded_size: int = ...,
        max_delta_chain: int = ...,
    ) -> None: ...
    def __init__(
        self,
        state_type: Any = State,
        *,
        format: BodyFormat = "msgpack",
        compression: Compression | None = "zstd",
        compression_level: int = 3,
        encryption: KeyRing | None = None,
        allow_unencrypted: bool = False,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
        max_delta_chain: int = DEFAULT_MAX_DELTA_CHAIN,
    ) -> None:
        if format not in _BODY_FORMATS:
            raise ValueError(f"format must be one of {', '.join(_BODY_FORMATS)}, not {format!r}")
        if compression not in ("zstd", None):
            raise ValueError(f"compression must be 'zstd' or None, not {compression!r}")
        if (
            isinstance(compression_level, bool)
            or not isinstance(compression_level, int)
            or not MIN_LEVEL <= compression_level <= MAX_LEVEL
        ):
            raise ValueError(
                f"compression_level must be an int from {MIN_LEVEL} to {MAX_LEVEL}, "
                f"not {compression_level!r}"
            )
        if encryption is not None and not isinstance(encryption, KeyRing):
            raise TypeError(
                f"encryption must be a KeyRing or None, not {type(encryption).__name__}"
            )
        for name, value in (
            ("max_payload_size", max_payload_size),
            ("max_state_size", max_state_size),
            ("max_decoded_size", max_decoded_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (bytes), not {value!r}")
        if (
            isinstance(max_delta_chain, bool)
            or not isinstance(max_delta_chain, int)
            or not 0 <= max_delta_chain <= MAX_DELTA_CHAIN
        ):
            raise ValueError(
                f"max_delta_chain must be an int from 0 to {MAX_DELTA_CHAIN}, "
                f"not {max_delta_chain!r}"
            )
        self.state_type = state_type
        self.format: BodyFormat = format
        self.compression: Compression | None = compression
        self.compression_level = compression_level
        self.encryption = encryption
        self.allow_unencrypted = bool(allow_unencrypted)
        self.max_payload_size = max_payload_size
        self.max_state_size = max_state_size
        self.max_decoded_size = max_decoded_size
        self.max_delta_chain = max_delta_chain
        # Frames (and so deltas) exist for MessagePack states only.
        self._frames = format == "msgpack"
        self._schema = schema_of(state_type, allow_secrets=encryption is not None)
        self._zstd = zstd_at(compression_level)

    def __repr__(self) -> str:
        return (
            f"SerdeCheckpointCodec({type_name(self.state_type)}, format={self.format!r}, "
            f"compression={self.compression!r}, encryption={self.encryption!r})"
        )

    def for_state(self, state_type: Any) -> SerdeCheckpointCodec[Any]:
        """A codec configured as this one (format, compression, keys, limits) for ``state_type``.

        What reading a checkpoint of an older version of a graph takes, whose
        state type was another (see ``Graph.migration``).
        """
        return SerdeCheckpointCodec(
            state_type,
            format=self.format,
            compression=self.compression,
            compression_level=self.compression_level,
            encryption=self.encryption,
            allow_unencrypted=self.allow_unencrypted,
            max_payload_size=self.max_payload_size,
            max_state_size=self.max_state_size,
            max_decoded_size=self.max_decoded_size,
            max_delta_chain=self.max_delta_chain,
        )

    @override
    def serialize(
        self, checkpoint: Checkpoint[S], graph_hash: int, trace_id: TraceId
    ) -> CheckpointBlob:
        return self.encode(checkpoint, graph_hash, trace_id, None)[0]

    @override
    def encode(
        self,
        checkpoint: Checkpoint[S],
        graph_hash: int,
        trace_id: TraceId,
        base: Frame | None,
    ) -> tuple[CheckpointBlob, Frame | None]:
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"serialize takes a Checkpoint, not {type(checkpoint).__name__}")
        trace = validate_trace_id(trace_id)
        check_header(checkpoint.step, graph_hash, checkpoint.created_at)
        if DELTA_BASE_KEY in checkpoint.metadata:
            raise ValueError(f"the metadata key {DELTA_BASE_KEY!r} is reserved")
        state: bytes | None = None
        fields = self._schema.encode_fields(checkpoint.state) if self._frames else None
        if fields is None:
            state = self._schema.encode(checkpoint.state, self.format)
            fields = split_fields(state) if self._frames else None
        size = len(state) if state is not None else state_size(fields or {})
        cursor = self._encode_cursor(checkpoint.cursor)
        if size + len(cursor) > self.max_state_size:
            with_cursor = f" with its cursor of {len(cursor)}" if cursor else ""
            raise CodecError(
                f"the state encodes to {size + len(cursor)} bytes{with_cursor}, over this "
                f"codec's max_state_size of {self.max_state_size}"
            )
        if size * self._schema.costs.per_byte > self.max_decoded_size:
            # A state no load could decode is not saved.
            try:
                self._check_decoded(state or join_fields(fields or {}), self.format)
            except ValueError as exc:
                raise CodecError(f"the state is {exc}") from None
        elements: dict[str, list[msgspec.Raw]] = {}
        changes = delta = None
        if (
            fields is not None
            and base is not None
            and size >= _MIN_DELTA_STATE
            and self._extends(base, trace, checkpoint)
        ):
            budget = Budget(self.max_decoded_size)
            changes = diff_fields(base, fields, elements, size, budget)
            delta = self._delta(base, changes, size)
        # Before anything is stored: a state that does not fit its type could never be
        # loaded. The base was checked when it was saved or loaded: only changes are.
        self._schema.check(state, fields, self.format, changes)
        metadata: Metadata = dict(checkpoint.metadata)
        if delta is not None and base is not None:
            with_base = {**metadata, DELTA_BASE_KEY: str(base.checkpoint_id)}
            # The checkpoint checked its metadata when it was made: only the room is left.
            if metadata_has_room(with_base):
                metadata = with_base
            else:  # no room for the base's id: store the state whole
                delta = None
        header_fields = {
            "checkpoint_id": checkpoint.checkpoint_id,
            "trace_id": trace,
            "step": checkpoint.step,
            "parent_id": checkpoint.parent_id,
            "graph_hash": graph_hash,
            "created_at": checkpoint.created_at,
            "current_node": checkpoint.current_node,
            "metadata": metadata,
        }
        if delta is not None and base is not None:
            blob = self._seal(
                delta, "delta", header_fields, base.checkpoint_id, base.chain_start, cursor
            )
        else:
            whole = state if state is not None else join_fields(fields or {})
            blob = self._seal(whole, self.format, header_fields, None, None, cursor)
        if fields is None or size < _MIN_DELTA_STATE:
            return blob, None  # no delta will be made on it: no frame to keep
        return blob, _frame(blob, fields, base if delta is not None else None, elements, size)

    def _encode_cursor(self, cursor: Any) -> bytes:
        """The checkpoint's cursor as stored after its state: ``b""`` when it is empty."""
        if not cursor:
            return b""
        try:
            encoded = self._schema.encoders["msgpack"].encode(cursor)
            check_decoded_size(encoded, "msgpack", self.max_decoded_size)
        except Exception as exc:  # msgspec raises TypeError, OverflowError, RecursionError...
            raise CodecError(f"cannot encode the checkpoint's cursor: {exc}") from exc
        return encoded

    def _extends(self, base: Frame, trace: TraceId, checkpoint: Checkpoint[S]) -> bool:
        """Whether ``checkpoint`` may be stored as a delta on ``base``."""
        return (
            base.trace_id == trace
            and base.step < checkpoint.step
            and base.chain_length < self.max_delta_chain
        )

    def _delta(self, base: Frame, changes: Delta, state_size: int) -> bytes | None:
        """``changes`` to ``base``, encoded; ``None`` where storing the state whole pays.

        A delta must be under half what the whole state would store, estimated from
        how its chain's keyframe compressed, and its chain must stay within
        :data:`_CHAIN_TO_KEYFRAME` times that keyframe's stored size.
        """
        delta = _delta_encoder.encode(changes)
        if 2 * len(delta) > state_size * min(base.stored_ratio, 1.0):
            return None
        if base.chain_size + len(delta) > _CHAIN_TO_KEYFRAME * base.keyframe_size:
            return None
        return delta

    def _seal(
        self,
        body: bytes,
        body_format: str,
        header_fields: dict[str, Any],
        base_id: CheckpointId | None,
        chain_start: int | None,
        cursor: bytes = b"",
    ) -> CheckpointBlob:
        """Compress, encrypt and frame ``body`` (and the ``cursor`` after it) under a header."""
        if cursor:
            body += cursor
        compression: Compression | None = None
        if self.compression == "zstd":
            compressed = self._zstd.compress(body)
            if compressed is not None:
                body, compression = compressed, "zstd"
        header = EnvelopeHeader(
            body_format=body_format,
            compression=compression,
            key_id=None if self.encryption is None else self.encryption.primary,
            base_id=base_id,
            chain_start=chain_start,
            cursor_length=len(cursor) or None,
            **header_fields,
        )
        try:
            head = encode_head(header)
        except ValueError as exc:
            raise CodecError(f"cannot encode the header: {exc}") from exc
        if self.encryption is not None:
            body = self.encryption.encrypt(body, head)
        data = seal_envelope(head, body)
        if len(data) > self.max_payload_size:
            raise CodecError(
                f"the checkpoint's data is {len(data)} bytes, over this codec's "
                f"max_payload_size of {self.max_payload_size}"
            )
        return CheckpointBlob(**header_fields, data=data)

    @override
    def deserialize(self, blob: CheckpointBlob, expected_hash: int | None) -> Checkpoint[S]:
        return self._decode(blob, expected_hash, None, None, frames=False)[0]

    @override
    def decode(
        self,
        blob: CheckpointBlob,
        expected_hash: int | None,
        base: Frame | None,
        *,
        known: Frame | None = None,
    ) -> tuple[Checkpoint[S], Frame | None]:
        return self._decode(blob, expected_hash, base, known, frames=True)

    def _decode(
        self,
        blob: CheckpointBlob,
        expected_hash: int | None,
        base: Frame | None,
        known: Frame | None,
        *,
        frames: bool,
    ) -> tuple[Checkpoint[S], Frame | None]:
        """Decode; ``frames=False`` when the caller discards the frame of a whole state."""
        if not isinstance(blob, CheckpointBlob):
            raise TypeError(f"deserialize takes a CheckpointBlob, not {type(blob).__name__}")
        envelope = self._open(blob)
        header = envelope.header
        # Authenticated (when encrypted) before the graph check: a GraphMismatch
        # then reports the hash the checkpoint was really written with.
        body = self._plaintext(blob, envelope)
        if expected_hash is not None and header.graph_hash != expected_hash:
            raise GraphMismatch(expected_hash, header.graph_hash)
        state: memoryview | bytes
        frame: Frame | None
        cursor: dict[str, Any] = {}
        body_format = header.body_format
        if known is not None and known.checkpoint_id == blob.checkpoint_id:
            frame = known
            if header.cursor_length is not None:
                cursor = self._unpack(blob, envelope, body)[1]
        elif body_format == "delta":
            content, cursor = self._unpack(blob, envelope, body)
            frame = self._rebuilt(self._need_base(blob, base), [self._delta_of(blob, content)])
        else:
            frame = None
        value: Any
        if frame is not None and self._is_raw_state(frame):
            # The state is its fields, checked against the delta's hash as they were rebuilt.
            value = {key: msgspec.Raw(field) for key, field in frame.fields.items()}
        else:
            if frame is not None:
                state, body_format = join_fields(frame.fields), "msgpack"
                self._check_state(blob, state, body_format)
            else:
                state, frame, cursor = self._whole(blob, envelope, body, frames=frames)
            value = self._schema.decode(state, body_format, blob.checkpoint_id)
        metadata = header.metadata
        if DELTA_BASE_KEY in metadata:
            metadata = {k: v for k, v in metadata.items() if k != DELTA_BASE_KEY}
        try:
            checkpoint = Checkpoint(
                checkpoint_id=CheckpointId(header.checkpoint_id),
                step=header.step,
                parent_id=None if header.parent_id is None else CheckpointId(header.parent_id),
                current_node=header.current_node,
                state=value,
                created_at=header.created_at,
                metadata=metadata,
                cursor=cursor,
            )
        except ValueError as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"impossible header: {exc}") from exc
        return checkpoint, frame

    # -- deltas: what a chain of them needs ---------------------------------------------

    @override
    def base_of(self, blob: CheckpointBlob) -> tuple[CheckpointId, int] | None:
        self._check_payload_size(blob)
        header = peek_header(blob)
        if header.base_id is None or header.chain_start is None:
            return None
        return CheckpointId(header.base_id), header.chain_start

    @override
    def read_frame(self, blob: CheckpointBlob, base: Frame | None) -> Frame | None:
        envelope = self._open(blob)
        body = self._plaintext(blob, envelope)
        if envelope.header.body_format == "delta":
            return self._rebuilt(self._need_base(blob, base), [self._link(blob, envelope, body)])
        return self._whole(blob, envelope, body, cursor=False)[1]

    @override
    def follow(
        self,
        base: Frame,
        deltas: Sequence[CheckpointBlob],
        *,
        every: int = 0,
        passed: list[Frame] | None = None,
    ) -> Frame:
        def links() -> Iterator[tuple[CheckpointBlob, Delta]]:
            below: Frame | CheckpointBlob = base
            for blob in deltas:
                envelope = self._open(blob)
                if envelope.header.body_format != "delta":
                    raise CodecError(f"checkpoint {blob.checkpoint_id} is not stored as changes")
                self._check_base(blob, envelope.header.base_id, below)
                yield self._link(blob, envelope, self._plaintext(blob, envelope))
                below = blob

        return self._rebuilt(base, links(), every, passed)

    @override
    def rebase(self, blob: CheckpointBlob, frame: Frame) -> CheckpointBlob:
        if frame.checkpoint_id != blob.checkpoint_id:
            raise ValueError(f"the frame of {frame.checkpoint_id} is not {blob.checkpoint_id}'s")
        header = self._open(blob).header
        header_fields = {
            "checkpoint_id": blob.checkpoint_id,
            "trace_id": blob.trace_id,
            "step": blob.step,
            "parent_id": blob.parent_id,
            "graph_hash": blob.graph_hash,
            "created_at": blob.created_at,
            "current_node": blob.current_node,
            "metadata": header.metadata,
        }
        cursor = b""
        if header.cursor_length is not None:  # the cursor goes along, as it was stored
            envelope = self._open(blob)
            raw = self._split(blob, envelope, self._plaintext(blob, envelope))[1]
            cursor = b"" if raw is None else bytes(raw)
        return self._seal(join_fields(frame.fields), "msgpack", header_fields, None, None, cursor)

    def _whole(
        self,
        blob: CheckpointBlob,
        envelope: Envelope,
        body: memoryview | bytes,
        *,
        frames: bool = True,
        cursor: bool = True,
    ) -> tuple[memoryview | bytes, Frame | None, dict[str, Any]]:
        """An opened envelope of a whole state: the state's bytes, its frame, its cursor.

        The state is split into a frame only if ``frames``; the cursor is decoded
        only if ``cursor`` (``{}`` otherwise, and for a checkpoint without one).
        """
        header = envelope.header
        if cursor:
            plain, stored = self._unpack(blob, envelope, body)
        else:
            plain, stored = self._content(blob, envelope, body), {}
        self._check_state(blob, plain, header.body_format)
        # Any codec reads a chain, whatever format it writes itself.
        if header.body_format != "msgpack" or not frames:
            return plain, None, stored
        fields = split_fields(plain)
        return plain, None if fields is None else _frame(blob, fields, None, {}), stored

    def _decompressed(
        self, blob: CheckpointBlob, envelope: Envelope, body: memoryview | bytes
    ) -> memoryview | bytes:
        """The plaintext body decompressed: the state or delta, then the cursor if any."""
        return self._zstd.decompress(
            blob.checkpoint_id, envelope.header.compression, body, self.max_state_size
        )

    def _split(
        self, blob: CheckpointBlob, envelope: Envelope, body: memoryview | bytes
    ) -> tuple[memoryview | bytes, memoryview | None]:
        """A plaintext body decompressed: the state's (or delta's) bytes, and the cursor's."""
        plain = self._decompressed(blob, envelope, body)
        length = envelope.header.cursor_length
        if length is None:
            return plain, None
        if length > len(plain):
            raise CorruptCheckpoint(
                blob.checkpoint_id, f"a cursor of {length} bytes in a body of {len(plain)}"
            )
        view = memoryview(plain)
        return view[: len(plain) - length], view[len(plain) - length :]

    def _content(
        self, blob: CheckpointBlob, envelope: Envelope, body: memoryview | bytes
    ) -> memoryview | bytes:
        """The state's (or delta's) bytes of a plaintext body, the cursor left out."""
        return self._split(blob, envelope, body)[0]

    def _unpack(
        self, blob: CheckpointBlob, envelope: Envelope, body: memoryview | bytes
    ) -> tuple[memoryview | bytes, dict[str, Any]]:
        """The state's (or delta's) bytes of a plaintext body, and the cursor decoded."""
        content, raw = self._split(blob, envelope, body)
        if raw is None:
            return content, {}
        try:
            check_decoded_size(raw, "msgpack", self.max_decoded_size)
            cursor = _plain_decoder.decode(raw)
        except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"cursor: {exc}") from exc
        if not isinstance(cursor, dict) or not all(isinstance(key, str) for key in cursor):
            raise CorruptCheckpoint(blob.checkpoint_id, "the cursor is not a map of str keys")
        return content, cursor

    def _need_base(self, blob: CheckpointBlob, base: Frame | None) -> Frame:
        """``base``, checked to be the base the delta ``blob`` names."""
        base_id = peek_header(blob).base_id
        if base is None or base.checkpoint_id != base_id:
            raise CodecError(
                f"checkpoint {blob.checkpoint_id} is stored as its changes to checkpoint "
                f"{base_id}; read it through a TypedCheckpointStore, which follows the chain"
            )
        self._check_base(blob, base_id, base)
        return base

    @staticmethod
    def _check_base(
        blob: CheckpointBlob, base_id: UUID | None, below: Frame | CheckpointBlob
    ) -> None:
        """Refuse a delta read on top of another checkpoint than its base, or a later one."""
        if below.checkpoint_id != base_id:
            raise CodecError(
                f"checkpoint {blob.checkpoint_id} is stored as its changes to checkpoint "
                f"{base_id}, not to {below.checkpoint_id}"
            )
        if below.trace_id != blob.trace_id or below.step >= blob.step:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"its base {below.checkpoint_id} is at step {below.step} of trace "
                f"{below.trace_id!r:.80}, not before step {blob.step} of {blob.trace_id!r:.80}",
            )

    def _link(
        self, blob: CheckpointBlob, envelope: Envelope, body: memoryview | bytes
    ) -> tuple[CheckpointBlob, Delta]:
        """The delta an opened envelope of a delta holds."""
        return self._delta_of(blob, self._content(blob, envelope, body))

    def _delta_of(
        self, blob: CheckpointBlob, content: memoryview | bytes
    ) -> tuple[CheckpointBlob, Delta]:
        """The delta in the decompressed bytes of a delta's body (its cursor left out)."""
        try:
            check_decoded_size(content, "msgpack", self.max_decoded_size)
            return blob, _delta_decoder.decode(content)
        except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"delta: {exc}") from exc

    def _rebuilt(
        self,
        base: Frame,
        links: Iterable[tuple[CheckpointBlob, Delta]],
        every: int = 0,
        passed: list[Frame] | None = None,
    ) -> Frame:
        """The frame of the last of ``links``: ``base`` changed by each delta in turn.

        Each link is checked as it is applied (see :class:`Rebuild`); the state the
        last one leaves is checked against the hash that delta records. With
        ``every`` and ``passed``, the frame after every ``every``-th link (the last
        one excepted) is checked the same way and appended to ``passed``.
        """
        rebuild = Rebuild(base, self.max_state_size, Budget(self.max_decoded_size))
        deltas = deltas_size = 0
        last: tuple[CheckpointBlob, Delta] | None = None
        made: Frame | None = None  # the frame of the link applied last, if it was made
        for last in links:
            blob, delta = last
            try:
                rebuild.apply(delta)
            except ValueError as exc:
                raise CorruptCheckpoint(blob.checkpoint_id, f"delta: {exc}") from exc
            deltas, deltas_size = deltas + 1, deltas_size + len(blob.data)
            made = None
            if passed is not None and every > 0 and deltas % every == 0:
                made = self._finished(rebuild, base, blob, delta, deltas, deltas_size)
                passed.append(made)
        if last is None:
            return base
        if made is not None and passed:
            return passed.pop()
        blob, delta = last
        return self._finished(rebuild, base, blob, delta, deltas, deltas_size)

    @staticmethod
    def _finished(
        rebuild: Rebuild, base: Frame, blob: CheckpointBlob, delta: Delta, deltas: int, size: int
    ) -> Frame:
        """The frame of ``blob``, the state ``rebuild`` holds, checked against its delta's hash."""
        try:
            fields = rebuild.finish(delta.state_hash)
        except ValueError as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"delta: {exc}") from exc
        return _frame(blob, fields, base, {}, delta.state_size, deltas=(deltas, size))

    def _check_decoded(self, state: bytes | memoryview, body_format: str) -> None:
        """``ValueError`` if decoding ``state`` could build more than ``max_decoded_size``."""
        check_decoded_size(state, body_format, self.max_decoded_size, self._schema.costs)

    def _is_raw_state(self, frame: Frame) -> bool:
        """Whether the frame's fields are the state as they are, within the decoding bound."""
        schema = self._schema
        return schema.raw_fields and frame.size * schema.costs.per_byte <= self.max_decoded_size

    def _check_state(
        self, blob: CheckpointBlob, state: bytes | memoryview, body_format: str
    ) -> None:
        """Refuse, as damage, a stored state whose decoding could build too much."""
        try:
            self._check_decoded(state, body_format)
        except ValueError as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"the state is {exc}") from None

    # -- what rekeying needs: the key of a blob, and re-encryption without decoding --------

    def key_id_of(self, blob: CheckpointBlob) -> str | None:
        """The id of the key ``blob``'s data is encrypted with; ``None`` if it is not.

        Checks the framing and checksum (nothing is decrypted): raises
        :class:`~flowpoint.errors.CorruptCheckpoint` as :meth:`deserialize` does.
        """
        return self._open(blob).header.key_id

    def reseal(self, blob: CheckpointBlob) -> CheckpointBlob:
        """``blob`` with its data encrypted under the key ring's primary key.

        The data is decrypted (or, with ``allow_unencrypted=True``, taken as it is
        if it was not encrypted) and encrypted again with the same header, body
        format and compression; the state is never decoded, so this works for
        states the codec's type no longer fits. Raises ``TypeError`` for a codec
        without a key ring, :class:`~flowpoint.errors.CodecError` if the ring lacks
        the data's key or the data is unencrypted and not allowed to be,
        :class:`~flowpoint.errors.CorruptCheckpoint` if it fails authentication.
        """
        if self.encryption is None:
            raise TypeError("reseal needs a codec with a key ring (encryption=KeyRing(...))")
        envelope = self._open(blob)
        body = self._plaintext(blob, envelope)
        header = msgspec.structs.replace(envelope.header, key_id=self.encryption.primary)
        try:
            head = encode_head(header)
        except ValueError as exc:  # cannot happen for a header that was read: same fields
            raise CorruptCheckpoint(blob.checkpoint_id, f"envelope header: {exc}") from exc
        data = seal_envelope(head, self.encryption.encrypt(body, head))
        return dataclasses.replace(blob, data=data)

    # -- the steps ----------------------------------------------------------------------

    def _open(self, blob: CheckpointBlob) -> Envelope:
        self._check_payload_size(blob)
        return open_envelope(blob)

    def _check_payload_size(self, blob: CheckpointBlob) -> None:
        if isinstance(blob.data, bytes) and len(blob.data) > self.max_payload_size:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"data is {len(blob.data)} bytes, over this codec's max_payload_size of "
                f"{self.max_payload_size}",
            )

    def _plaintext(self, blob: CheckpointBlob, envelope: Envelope) -> memoryview | bytes:
        """The body of ``envelope``, decrypted and authenticated if it is encrypted."""
        return self._decrypt(
            blob.checkpoint_id,
            f"checkpoint {blob.checkpoint_id}",
            envelope.header.key_id,
            envelope.body,
            envelope.head,
        )

    def _decrypt(
        self,
        checkpoint_id: CheckpointId,
        what: str,
        key_id: str | None,
        body: memoryview,
        head: memoryview,
    ) -> memoryview | bytes:
        """``body`` decrypted with ``key_id``, ``head`` authenticated with it; ``what`` names it.

        Refuses unencrypted data when the codec has a key ring, unless it allows it.
        """
        if key_id is None:
            if self.encryption is not None and not self.allow_unencrypted:
                raise CodecError(
                    f"{what} is not encrypted, and this codec reads encrypted data only "
                    f"(anyone who can write to the store could have written it); rekey the "
                    f"store, or pass allow_unencrypted=True while migrating"
                )
            return body
        if self.encryption is None:
            raise CodecError(
                f"{what} is encrypted with key {key_id!r}, and this codec has no key ring "
                f"(pass encryption=KeyRing(...))"
            )
        try:
            return self.encryption.decrypt(key_id, body, head)
        except KeyError:
            raise CodecError(
                f"{what} is encrypted with key {key_id!r}, which this key ring does not hold "
                f"(it holds {list(self.encryption.key_ids)})"
            ) from None
        except ValueError:
            raise CorruptCheckpoint(
                checkpoint_id,
                f"authentication of {what} with key {key_id!r} failed: wrong key, or the "
                f"data was changed",
            ) from None

    # -- pending writes -----------------------------------------------------------------

    @override
    def encode_write(
        self, trace_id: TraceId, checkpoint_id: CheckpointId, write: TaskWrite
    ) -> PendingWrite:
        if not isinstance(write, TaskWrite):
            raise TypeError(f"encode_write takes a TaskWrite, not {type(write).__name__}")
        trace = validate_trace_id(trace_id)
        checkpoint = coerce_checkpoint_id(checkpoint_id)
        try:
            body = self._schema.encoders["msgpack"].encode(write_body(write))
            check_decoded_size(body, "msgpack", self.max_decoded_size)
        except Exception as exc:  # msgspec raises TypeError, OverflowError, RecursionError...
            raise CodecError(f"cannot encode the write of task {write.task_id!r}: {exc}") from exc
        if len(body) > self.max_state_size:
            raise CodecError(
                f"the write of task {write.task_id!r} encodes to {len(body)} bytes, over this "
                f"codec's max_state_size of {self.max_state_size}"
            )
        compression: Compression | None = None
        if self.compression == "zstd":
            compressed = self._zstd.compress(body)
            if compressed is not None:
                body, compression = compressed, "zstd"
        key_id = None if self.encryption is None else self.encryption.primary
        header = WriteHeader(compression, key_id, trace, checkpoint, write.task_id, write.index)
        encrypt = None if self.encryption is None else self.encryption.encrypt
        data = seal_write(header, body, encrypt)
        if len(data) > self.max_payload_size:
            raise CodecError(
                f"the write of task {write.task_id!r} is {len(data)} bytes, over this codec's "
                f"max_payload_size of {self.max_payload_size}"
            )
        return PendingWrite(trace, checkpoint, write.task_id, write.index, data)

    @override
    def decode_write(self, write: PendingWrite) -> TaskWrite:
        if not isinstance(write, PendingWrite):
            raise TypeError(f"decode_write takes a PendingWrite, not {type(write).__name__}")
        opened = self._open_write(write)
        what = f"the pending write {write.task_id!r:.80} of checkpoint {write.checkpoint_id}"
        body = self._decrypt(
            write.checkpoint_id, what, opened.header.key_id, opened.body, opened.head
        )
        plain = self._zstd.decompress(
            write.checkpoint_id, opened.header.compression, body, self.max_state_size
        )
        try:
            check_decoded_size(plain, "msgpack", self.max_decoded_size)
        except ValueError as exc:
            raise CorruptCheckpoint(write.checkpoint_id, f"{what} is {exc}") from None
        return write_from_body(write, plain)

    def key_id_of_write(self, write: PendingWrite) -> str | None:
        """The id of the key a stored write is encrypted with; ``None`` if it is not.

        Checks its framing and checksum, as :meth:`key_id_of` does a checkpoint's.
        """
        return self._open_write(write).header.key_id

    def reseal_write(self, write: PendingWrite) -> PendingWrite:
        """A stored write encrypted under the key ring's primary key, as :meth:`reseal` does."""
        if self.encryption is None:
            raise TypeError("reseal needs a codec with a key ring (encryption=KeyRing(...))")
        opened = self._open_write(write)
        what = f"the pending write {write.task_id!r:.80} of checkpoint {write.checkpoint_id}"
        body = self._decrypt(
            write.checkpoint_id, what, opened.header.key_id, opened.body, opened.head
        )
        header = msgspec.structs.replace(opened.header, key_id=self.encryption.primary)
        data = seal_write(header, bytes(body), self.encryption.encrypt)
        return dataclasses.replace(write, data=data)

    def _open_write(self, write: PendingWrite) -> OpenedWrite:
        if isinstance(write.data, bytes) and len(write.data) > self.max_payload_size:
            raise CorruptCheckpoint(
                write.checkpoint_id,
                f"the pending write {write.task_id!r:.80} is {len(write.data)} bytes, over "
                f"this codec's max_payload_size of {self.max_payload_size}",
            )
        return open_write(write)


def _frame(
    blob: CheckpointBlob,
    fields: dict[str, bytes],
    base: Frame | None,
    elements: dict[str, list[msgspec.Raw]],
    size: int | None = None,
    *,
    deltas: tuple[int, int] | None = None,
) -> Frame:
    """The frame of ``blob``, whose state has ``fields``: whole, or a delta on ``base``.

    ``deltas`` counts the deltas from ``base`` to ``blob`` and their stored bytes,
    when there are more than ``blob`` itself.
    """
    if base is None:
        return Frame(
            blob.checkpoint_id,
            blob.trace_id,
            blob.step,
            fields,
            chain_start=blob.step,
            chain_length=0,
            chain_size=0,
            keyframe_size=len(blob.data),
            elements=elements,
            size=size,
        )
    added, added_size = (1, len(blob.data)) if deltas is None else deltas
    return Frame(
        blob.checkpoint_id,
        blob.trace_id,
        blob.step,
        fields,
        chain_start=base.chain_start,
        chain_length=base.chain_length + added,
        chain_size=base.chain_size + added_size,
        keyframe_size=base.keyframe_size,
        stored_ratio=base.stored_ratio,
        elements=elements,
        size=size,
    )


_delta_encoder = msgspec.msgpack.Encoder()
_delta_decoder = msgspec.msgpack.Decoder(Delta)
_plain_decoder = msgspec.msgpack.Decoder()
"""Cursors and pending writes come back as plain data: the runner types them."""
