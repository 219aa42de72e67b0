"""The stock codec: msgspec, MessagePack or JSON, decoding into the declared state type."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import math
import sys
import threading
import typing
from typing import Any, Generic, Literal, get_args

import msgspec
import zstandard
from typing_extensions import override

from flowpoint.blob import CheckpointBlob, Metadata, check_header, validate_metadata
from flowpoint.checkpoint import Checkpoint, S, State
from flowpoint.codec.base import DeltaCheckpointCodec
from flowpoint.codec.delta import (
    Delta,
    Frame,
    apply_delta,
    diff_fields,
    join_fields,
    split_fields,
    state_size,
)
from flowpoint.codec.envelope import (
    Envelope,
    EnvelopeHeader,
    encode_head,
    open_envelope,
    peek_header,
    seal_envelope,
)
from flowpoint.codec.keys import KeyRing
from flowpoint.errors import CodecError, CorruptCheckpoint, GraphMismatch
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = [
    "COMPRESSION_THRESHOLD",
    "DEFAULT_MAX_DELTA_CHAIN",
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "DEFAULT_MAX_STATE_SIZE",
    "DELTA_BASE_KEY",
    "BodyFormat",
    "Compression",
    "SerdeCheckpointCodec",
]

BodyFormat = Literal["msgpack", "json"]
_BODY_FORMATS: tuple[BodyFormat, ...] = get_args(BodyFormat)
Compression = Literal["zstd"]

DEFAULT_MAX_PAYLOAD_SIZE = 64 * 1024 * 1024
"""Bytes of a checkpoint's stored data, at most, unless the codec says otherwise."""
DEFAULT_MAX_STATE_SIZE = 256 * 1024 * 1024
"""Bytes of an encoded state (before compression, after decompression), at most."""
COMPRESSION_THRESHOLD = 512
"""Bodies shorter than this are never compressed: zstd's frame would eat the gain."""
DEFAULT_MAX_DELTA_CHAIN = 64
"""Deltas in a row, at most, before a checkpoint is stored whole again."""
DELTA_BASE_KEY = "flowpoint.delta_of"
"""The metadata key under which a delta names its base (for listings; reserved)."""
# Smaller states are stored whole without looking for changes: a delta's own header
# (about 200 bytes) would eat what it saves.
_MIN_DELTA_STATE = 1024
# A delta chain is cut (the next checkpoint stored whole) once its deltas hold this many
# times the bytes of the whole checkpoint it starts from: reading a checkpoint then costs
# at most about this many whole ones, and storage grows with what steps add.
_CHAIN_TO_KEYFRAME = 2

_MIB = 1024 * 1024
# Windows above this are refused when decompressing: zstd levels up to 19 never use more,
# and a frame asking for a huge window would make the decoder allocate it.
_MAX_WINDOW_SIZE = 8 * _MIB
_MIN_LEVEL, _MAX_LEVEL = -7, 19
# Frames that do not declare their size are decompressed this much at a time.
_STREAM_CHUNK = _MIB


class SerdeCheckpointCodec(DeltaCheckpointCodec[S], Generic[S]):
    """Encodes states with msgspec and decodes them back into ``state_type``.

    ``state_type`` may be ``dict`` (the default :data:`~flowpoint.State`), a
    dataclass, a ``TypedDict``, a ``msgspec.Struct`` or a pydantic v2 model, nested
    with the usual scalars, ``datetime``, ``UUID``, ``Enum``, ``Decimal`` and
    ``bytes``. Values come back as the types their annotations name: a value typed
    ``Any`` (as in a plain dict state) comes back as the format's own type, so a
    ``UUID`` there returns as a ``str``. A state implementing
    :class:`~flowpoint.WorkflowState` stores only its snapshot.

    ``format`` is ``"msgpack"`` (compact, the default) or ``"json"`` (readable; it
    cannot hold NaN or infinity, and a state holding them is refused). Either
    codec reads data written in either format: the data names its own.

    ``compression="zstd"`` (the default) compresses a state of at least 512 bytes
    with zstd at ``compression_level`` (-7 to 19, default 3) when that makes it
    smaller; ``None`` never compresses. Any codec reads compressed data.

    ``encryption`` is a :class:`~flowpoint.codec.keys.KeyRing`: states are then
    sealed with AES-256-GCM under its primary key, with every header field
    authenticated, and pydantic ``SecretStr``/``SecretBytes`` values may be stored
    (without encryption they are refused). A codec with a key ring refuses
    unencrypted data (anyone who can write to the store could have written it)
    unless ``allow_unencrypted=True``, for the time it takes to
    :meth:`~flowpoint.TypedCheckpointStore.rekey` a store written before.

    Deltas (MessagePack states whose top level is a map: dicts, dataclasses,
    Structs, pydantic models): saved through a
    :class:`~flowpoint.TypedCheckpointStore`, a checkpoint of 1 KiB of state or
    more is stored as its changes to the one saved before it in the trace (fields
    replaced, elements appended to or changed in an array) when that is less than
    half what it would take whole; after
    ``max_delta_chain`` deltas in a row (default 64; 0 stores every state whole),
    or once the chain's deltas outweigh twice the whole checkpoint it starts from,
    the next one is stored whole. A delta names its base in its metadata under
    ``"flowpoint.delta_of"``; that key is reserved.

    Limits: saving data longer than ``max_payload_size`` bytes (64 MiB), or a state
    that encodes to more than ``max_state_size`` bytes (256 MiB), raises
    :class:`~flowpoint.errors.CodecError`; on load, longer data, or a body that
    would decompress to more, is :class:`~flowpoint.errors.CorruptCheckpoint`
    before anything is decoded.

    Configured, not subclassed::

        codec = SerdeCheckpointCodec(ResearchState, format="json")
    """

    @typing.overload
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
        max_delta_chain: int = ...,
    ) -> None: ...
    @typing.overload
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
        max_delta_chain: int = DEFAULT_MAX_DELTA_CHAIN,
    ) -> None:
        if format not in _BODY_FORMATS:
            raise ValueError(f"format must be one of {', '.join(_BODY_FORMATS)}, not {format!r}")
        if compression not in ("zstd", None):
            raise ValueError(f"compression must be 'zstd' or None, not {compression!r}")
        if (
            isinstance(compression_level, bool)
            or not isinstance(compression_level, int)
            or not _MIN_LEVEL <= compression_level <= _MAX_LEVEL
        ):
            raise ValueError(
                f"compression_level must be an int from {_MIN_LEVEL} to {_MAX_LEVEL}, "
                f"not {compression_level!r}"
            )
        if encryption is not None and not isinstance(encryption, KeyRing):
            raise TypeError(
                f"encryption must be a KeyRing or None, not {type(encryption).__name__}"
            )
        for name, value in (
            ("max_payload_size", max_payload_size),
            ("max_state_size", max_state_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (bytes), not {value!r}")
        if (
            isinstance(max_delta_chain, bool)
            or not isinstance(max_delta_chain, int)
            or max_delta_chain < 0
        ):
            raise ValueError(f"max_delta_chain must be an int >= 0, not {max_delta_chain!r}")
        self.state_type = state_type
        self.format: BodyFormat = format
        self.compression: Compression | None = compression
        self.compression_level = compression_level
        self.encryption = encryption
        self.allow_unencrypted = bool(allow_unencrypted)
        self.max_payload_size = max_payload_size
        self.max_state_size = max_state_size
        self.max_delta_chain = max_delta_chain
        # Frames (and so deltas) exist for MessagePack states only.
        self._frames = format == "msgpack"
        self._schema = _StateSchema(state_type, allow_secrets=encryption is not None)
        # zstd contexts are not thread-safe, and making one costs about as much as
        # compressing a small state: each thread keeps its own.
        self._zstd = threading.local()

    def __repr__(self) -> str:
        return (
            f"SerdeCheckpointCodec({_type_name(self.state_type)}, format={self.format!r}, "
            f"compression={self.compression!r}, encryption={self.encryption!r})"
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
        if size > self.max_state_size:
            raise CodecError(
                f"the state encodes to {size} bytes, over this codec's "
                f"max_state_size of {self.max_state_size}"
            )
        elements: dict[str, list[msgspec.Raw]] = {}
        delta = None
        if (
            fields is not None
            and base is not None
            and size >= _MIN_DELTA_STATE
            and self._extends(base, trace, checkpoint)
        ):
            delta = self._delta(base, fields, elements, size)
        metadata: Metadata = dict(checkpoint.metadata)
        if delta is not None and base is not None:
            with_base = {**metadata, DELTA_BASE_KEY: str(base.checkpoint_id)}
            try:
                metadata = validate_metadata(with_base)
            except ValueError:  # no room for the base's id: store the state whole
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
            blob = self._seal(delta, "delta", header_fields, base.checkpoint_id, base.chain_start)
        else:
            whole = state if state is not None else join_fields(fields or {})
            blob = self._seal(whole, self.format, header_fields, None, None)
        if fields is None or size < _MIN_DELTA_STATE:
            return blob, None  # no delta will be made on it: no frame to keep
        return blob, _frame(blob, fields, base if delta is not None else None, elements, size)

    def _extends(self, base: Frame, trace: TraceId, checkpoint: Checkpoint[S]) -> bool:
        """Whether ``checkpoint`` may be stored as a delta on ``base``."""
        return (
            base.trace_id == trace
            and base.step < checkpoint.step
            and base.chain_length < self.max_delta_chain
        )

    def _delta(
        self,
        base: Frame,
        fields: dict[str, bytes],
        elements: dict[str, list[msgspec.Raw]],
        state_size: int,
    ) -> bytes | None:
        """The encoded delta from ``base`` to ``fields``, or ``None`` where a whole state pays.

        A delta must be under half what the whole state would store, estimated from
        how its chain's keyframe compressed, and its chain must stay within
        :data:`_CHAIN_TO_KEYFRAME` times that keyframe's stored size.
        """
        delta = _delta_encoder.encode(diff_fields(base, fields, elements, state_size))
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
    ) -> CheckpointBlob:
        """Compress, encrypt and frame ``body`` under a header of ``header_fields``."""
        compression: Compression | None = None
        if self.compression == "zstd" and len(body) >= COMPRESSION_THRESHOLD:
            compressed = self._compressor().compress(body)
            if len(compressed) < len(body):
                body, compression = compressed, "zstd"
        header = EnvelopeHeader(
            body_format=body_format,
            compression=compression,
            key_id=None if self.encryption is None else self.encryption.primary,
            base_id=base_id,
            chain_start=chain_start,
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
        if known is not None and known.checkpoint_id == blob.checkpoint_id:
            state, frame, body_format = join_fields(known.fields), known, "msgpack"
        else:
            state, frame = self._state_bytes(blob, envelope, body, base, frames=frames)
            body_format = "msgpack" if header.body_format == "delta" else header.body_format
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
        return self._state_bytes(blob, envelope, body, base)[1]

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
        return self._seal(join_fields(frame.fields), "msgpack", header_fields, None, None)

    def _state_bytes(
        self,
        blob: CheckpointBlob,
        envelope: Envelope,
        body: memoryview | bytes,
        base: Frame | None,
        *,
        frames: bool = True,
    ) -> tuple[memoryview | bytes, Frame | None]:
        """The whole state's bytes of an opened envelope, and its frame where it has one.

        A whole state is split into a frame only if ``frames``; a delta always is.
        """
        header = envelope.header
        plain = self._decompress(blob.checkpoint_id, header.compression, body)
        if header.body_format != "delta":
            # Any codec reads a chain, whatever format it writes itself.
            if header.body_format != "msgpack" or not frames:
                return plain, None
            fields = split_fields(plain)
            return plain, None if fields is None else _frame(blob, fields, None, {})
        if base is None or base.checkpoint_id != header.base_id:
            raise CodecError(
                f"checkpoint {blob.checkpoint_id} is stored as its changes to checkpoint "
                f"{header.base_id}; read it through a TypedCheckpointStore, which follows "
                f"the chain"
            )
        if base.trace_id != blob.trace_id or base.step >= blob.step:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"its base {base.checkpoint_id} is at step {base.step} of trace "
                f"{base.trace_id!r:.80}, not before step {blob.step} of {blob.trace_id!r:.80}",
            )
        elements: dict[str, list[msgspec.Raw]] = {}
        try:
            delta = _delta_decoder.decode(plain)
            fields = apply_delta(base, delta, self.max_state_size, elements)
        except (msgspec.MsgspecError, ValueError, RecursionError) as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"delta: {exc}") from exc
        # apply_delta checked that the fields add up to the size the delta states.
        return join_fields(fields), _frame(blob, fields, base, elements, delta.state_size)

    # -- what rekeying needs: the key of a blob, and re-encryption without decoding --------

    def key_id_of(self, blob: CheckpointBlob) -> str | None:
        """The id of the key ``blob``'s data is encrypted with; ``None`` if it is not.

        Checks the framing and checksum (nothing is decrypted): raises
        :class:`~flowpoint.errors.CorruptCheckpoint` as :meth:`deserialize` does.
        """
        return self._open(blob).header.key_id

    def reseal(self, blob: CheckpointBlob) -> CheckpointBlob:
        """``blob`` with its data encrypted under the key ring's primary key.

        The data is decrypted (or taken as it is, if it was not encrypted) and
        encrypted again with the same header, body format and compression; the
        state is never decoded, so this works for states the codec's type no longer
        fits. Raises ``TypeError`` for a codec without a key ring,
        :class:`~flowpoint.errors.CodecError` if the ring lacks the data's key,
        :class:`~flowpoint.errors.CorruptCheckpoint` if it fails authentication.
        """
        if self.encryption is None:
            raise TypeError("reseal needs a codec with a key ring (encryption=KeyRing(...))")
        envelope = self._open(blob)
        body = self._plaintext(blob, envelope, rekeying=True)
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

    def _plaintext(
        self, blob: CheckpointBlob, envelope: Envelope, *, rekeying: bool = False
    ) -> memoryview | bytes:
        """The body of ``envelope``, decrypted and authenticated if it is encrypted.

        Refuses unencrypted data when the codec has a key ring, unless it allows
        it or is ``rekeying`` (taking such data to encrypt it).
        """
        checkpoint_id = blob.checkpoint_id
        key_id = envelope.header.key_id
        if key_id is None:
            if self.encryption is not None and not (self.allow_unencrypted or rekeying):
                raise CodecError(
                    f"checkpoint {checkpoint_id} is not encrypted, and this codec reads "
                    f"encrypted checkpoints only (anyone who can write to the store could "
                    f"have written it); rekey the store, or pass allow_unencrypted=True "
                    f"while migrating"
                )
            return envelope.body
        if self.encryption is None:
            raise CodecError(
                f"checkpoint {checkpoint_id} is encrypted with key {key_id!r}, and this codec "
                f"has no key ring (pass encryption=KeyRing(...))"
            )
        try:
            return self.encryption.decrypt(key_id, envelope.body, envelope.head)
        except KeyError:
            raise CodecError(
                f"checkpoint {checkpoint_id} is encrypted with key {key_id!r}, which this key "
                f"ring does not hold (it holds {list(self.encryption.key_ids)})"
            ) from None
        except ValueError:
            raise CorruptCheckpoint(
                checkpoint_id,
                f"authentication with key {key_id!r} failed: wrong key, or the data was changed",
            ) from None

    def _decompress(
        self, checkpoint_id: CheckpointId, compression: str | None, body: memoryview | bytes
    ) -> memoryview | bytes:
        limit = self.max_state_size
        if compression is None:
            if len(body) > limit:
                raise CorruptCheckpoint(
                    checkpoint_id, f"the state is {len(body)} bytes, over max_state_size {limit}"
                )
            return body
        if compression != "zstd":
            raise CodecError(
                f"checkpoint {checkpoint_id} is compressed with {compression!r:.40}, which this "
                f"codec does not read"
            )

        def corrupt(reason: str) -> CorruptCheckpoint:
            return CorruptCheckpoint(checkpoint_id, f"zstd body: {reason}")

        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise corrupt(str(exc)) from None
        if size > limit:
            # Checked before anything is allocated: a frame may claim any size.
            raise corrupt(f"it would decompress to {size} bytes, over max_state_size {limit}")
        decompressor = self._decompressor()
        try:
            if size >= 0:
                # Exactly one frame, exactly the size it declares.
                return decompressor.decompress(body, allow_extra_data=False)
            # No declared size (flowpoint always declares it): decompress a chunk at a
            # time up to the limit, then once more with the size now known.
            found = 0
            with decompressor.stream_reader(body, read_across_frames=False) as reader:
                while chunk := reader.read(min(_STREAM_CHUNK, limit + 1 - found)):
                    found += len(chunk)
                    if found > limit:
                        raise corrupt(f"it decompresses to over max_state_size {limit} bytes")
            # This pass also catches a truncated frame, which the stream reader does not.
            return decompressor.decompress(
                body, max_output_size=max(found, 1), allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise corrupt(str(exc)) from None

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._zstd, "compressor", None)
        if compressor is None:
            compressor = self._zstd.compressor = zstandard.ZstdCompressor(
                level=self.compression_level, write_content_size=True
            )
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._zstd, "decompressor", None)
        if decompressor is None:
            decompressor = self._zstd.decompressor = zstandard.ZstdDecompressor(
                max_window_size=_MAX_WINDOW_SIZE
            )
        return decompressor


def _frame(
    blob: CheckpointBlob,
    fields: dict[str, bytes],
    base: Frame | None,
    elements: dict[str, list[msgspec.Raw]],
    size: int | None = None,
) -> Frame:
    """The frame of ``blob``, whose state has ``fields``: a delta on ``base``, or whole."""
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
    return Frame(
        blob.checkpoint_id,
        blob.trace_id,
        blob.step,
        fields,
        chain_start=base.chain_start,
        chain_length=base.chain_length + 1,
        chain_size=base.chain_size + len(blob.data),
        keyframe_size=base.keyframe_size,
        stored_ratio=base.stored_ratio,
        elements=elements,
        size=size,
    )


class _StateSchema:
    """How one state type is encoded and decoded."""

    def __init__(self, state_type: Any, *, allow_secrets: bool) -> None:
        self.state_type = state_type
        self.encoders = _SECRET_ENCODERS if allow_secrets else _ENCODERS
        self.runtime_class = _runtime_class(state_type)
        snapshot = getattr(state_type, "__flowpoint_snapshot__", None)
        restore = getattr(state_type, "__flowpoint_restore__", None)
        self.projected = callable(snapshot) and callable(restore)
        wire_type: Any = state_type
        if self.projected:
            try:
                wire_type = typing.get_type_hints(snapshot).get("return", Any)
            except Exception as exc:  # unresolvable annotations: a configuration error
                raise TypeError(
                    f"cannot read the return annotation of "
                    f"{_type_name(state_type)}.__flowpoint_snapshot__: {exc}"
                ) from exc
        try:
            self.decoders: dict[str, msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]] = {
                "msgpack": msgspec.msgpack.Decoder(wire_type, dec_hook=_strict_hook),
                "json": msgspec.json.Decoder(wire_type, dec_hook=_strict_hook),
            }
        except TypeError as exc:
            raise TypeError(
                f"flowpoint cannot store states of type {_type_name(state_type)}: {exc}"
            ) from exc

    def encode(self, state: Any, body_format: BodyFormat) -> bytes:
        value = self._stored_value(state)
        try:
            body = self.encoders[body_format].encode(value)
        except Exception as exc:  # msgspec raises TypeError, OverflowError, RecursionError...
            raise CodecError(f"cannot encode the state: {exc}") from exc
        # JSON writes NaN and infinity as null; refuse rather than lose them. A
        # state without nulls cannot hold either, so most states skip the walk.
        if body_format == "json" and b"null" in body:
            _reject_non_finite(value, self.encoders[body_format].enc_hook)
        return body

    def encode_fields(self, state: Any) -> dict[str, bytes] | None:
        """A dict state's fields, each encoded to MessagePack on its own; ``None`` for others.

        The same bytes :func:`~flowpoint.codec.delta.split_fields` would cut out of
        the whole encoding, without encoding it whole and cutting it up again.
        """
        value = self._stored_value(state)
        if type(value) is not dict or not all(type(key) is str for key in value):
            return None
        encode = self.encoders["msgpack"].encode
        try:
            return {key: encode(item) for key, item in value.items()}
        except Exception as exc:  # as in encode
            raise CodecError(f"cannot encode the state: {exc}") from exc

    def _stored_value(self, state: Any) -> Any:
        """What is stored of ``state``: itself, or its snapshot."""
        if self.runtime_class is not None and not isinstance(state, self.runtime_class):
            raise CodecError(
                f"the state is a {type(state).__qualname__}, but this codec stores "
                f"{_type_name(self.state_type)}"
            )
        if not self.projected:
            return state
        try:
            return state.__flowpoint_snapshot__()
        except Exception as exc:  # user code: whatever it raises, the state cannot be stored
            raise CodecError(f"cannot encode the state: {exc}") from exc

    def decode(
        self, body: memoryview | bytes, body_format: str, checkpoint_id: CheckpointId
    ) -> Any:
        decoder = self.decoders.get(body_format)
        if decoder is None:
            raise CodecError(
                f"checkpoint {checkpoint_id} holds a {body_format!r} body, which this codec "
                f"does not read"
            )
        try:
            value = decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise CodecError(
                f"checkpoint {checkpoint_id} does not fit {_type_name(self.state_type)}: {exc}"
            ) from exc
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            # ValueError: msgspec lets UnicodeDecodeError through for invalid UTF-8.
            raise CorruptCheckpoint(checkpoint_id, f"unreadable state: {exc}") from exc
        if not self.projected:
            return value
        try:
            return self.state_type.__flowpoint_restore__(value)
        except Exception as exc:  # user code: whatever it raises, the data did not fit
            raise CodecError(
                f"{_type_name(self.state_type)}.__flowpoint_restore__ refused checkpoint "
                f"{checkpoint_id}: {exc}"
            ) from exc


def _pydantic_model(tp: Any) -> Any:
    """``tp`` if it is a pydantic model class, else ``None`` (pydantic is never imported here)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp
    return None


def _enc_hook(value: Any) -> Any:
    return _encode_other(value, reveal_secrets=False)


def _secret_enc_hook(value: Any) -> Any:
    return _encode_other(value, reveal_secrets=True)


def _encode_other(value: Any, *, reveal_secrets: bool) -> Any:
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="python", by_alias=True)
        if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
            if reveal_secrets:  # the codec encrypts: the secret is stored, sealed
                return value.get_secret_value()
            raise TypeError(
                f"a pydantic {type(value).__name__} is not stored in clear text: give the "
                f"codec a key ring (encryption=KeyRing(...)) to store it encrypted, or keep "
                f"secrets out of the state"
            )
        # Types pydantic defines (URLs, emails, ...) go as pydantic serializes them to
        # JSON; the model's validation turns them back into themselves on load.
        try:
            return sys.modules["pydantic_core"].to_jsonable_python(value)
        except ValueError:  # PydanticSerializationError: pydantic does not know it either
            pass
    raise TypeError(f"flowpoint cannot store a value of type {type(value).__qualname__}")


def _strict_hook(tp: Any, raw: Any) -> Any:
    """Msgspec's hook for types it does not know: pydantic models and secrets, nothing else."""
    model = _pydantic_model(tp)
    if model is not None:
        return _validate_pydantic(model, raw)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and tp is pydantic.SecretStr:
        if not isinstance(raw, str):
            raise TypeError(f"expected a str for SecretStr, got {type(raw).__name__}")
        return pydantic.SecretStr(raw)
    if pydantic is not None and tp is pydantic.SecretBytes:
        if isinstance(raw, str):  # JSON holds bytes as base64
            try:
                raw = base64.b64decode(raw, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"invalid base64 for SecretBytes: {exc}") from None
        if not isinstance(raw, bytes):
            raise TypeError(f"expected bytes for SecretBytes, got {type(raw).__name__}")
        return pydantic.SecretBytes(raw)
    raise TypeError(f"flowpoint does not know how to decode {_type_name(tp)}")


def _validate_pydantic(model: Any, raw: Any) -> Any:
    # Each field is first converted by msgspec, guided by the field's annotation, so
    # that format-level encodings (base64 bytes in JSON, ISO strings for times) come
    # back as their types; pydantic then validates the whole model.
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object for {model.__name__}, got {type(raw).__name__}")
    values = dict(raw)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in values:
            # A type msgspec does not know (a URL, an email...): pydantic validates the
            # raw value, and refuses it if it does not fit.
            with contextlib.suppress(TypeError, msgspec.ValidationError):
                values[key] = msgspec.convert(values[key], field.annotation, dec_hook=_strict_hook)
    return model.model_validate(values)


def _reject_non_finite(value: Any, enc_hook: Any) -> None:
    pending = [msgspec.to_builtins(value, enc_hook=enc_hook)]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise CodecError(
                f"the state holds {item!r}, which JSON cannot represent; use format='msgpack'"
            )
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _runtime_class(state_type: Any) -> type | None:
    """The class every state of ``state_type`` is an instance of, where there is one."""
    if typing.is_typeddict(state_type):
        return dict
    origin = typing.get_origin(state_type) or state_type
    return origin if isinstance(origin, type) and origin is not typing.Any else None


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


_Encoders = dict[BodyFormat, msgspec.msgpack.Encoder | msgspec.json.Encoder]
_ENCODERS: _Encoders = {
    "msgpack": msgspec.msgpack.Encoder(enc_hook=_enc_hook),
    "json": msgspec.json.Encoder(enc_hook=_enc_hook),
}
# For codecs that encrypt: pydantic secrets are stored (sealed with the rest).
_SECRET_ENCODERS: _Encoders = {
    "msgpack": msgspec.msgpack.Encoder(enc_hook=_secret_enc_hook),
    "json": msgspec.json.Encoder(enc_hook=_secret_enc_hook),
}

_delta_encoder = msgspec.msgpack.Encoder()
_delta_decoder = msgspec.msgpack.Decoder(Delta)
