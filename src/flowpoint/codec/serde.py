"""The stock codec: msgspec, MessagePack or JSON, decoding into the declared state type."""

from __future__ import annotations

import contextlib
import math
import sys
import typing
from typing import Any, Generic, Literal, get_args

import msgspec
from typing_extensions import override

from flowpoint.blob import CheckpointBlob, check_header
from flowpoint.checkpoint import Checkpoint, S, State
from flowpoint.codec.base import CheckpointCodec
from flowpoint.codec.envelope import EnvelopeHeader, open_envelope, seal_envelope
from flowpoint.errors import CodecError, CorruptCheckpoint, GraphMismatch
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id

__all__ = ["BodyFormat", "SerdeCheckpointCodec"]

BodyFormat = Literal["msgpack", "json"]
_BODY_FORMATS: tuple[BodyFormat, ...] = get_args(BodyFormat)


class SerdeCheckpointCodec(CheckpointCodec[S], Generic[S]):
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

    Configured, not subclassed::

        codec = SerdeCheckpointCodec(ResearchState, format="json")
    """

    def __init__(self, state_type: Any = State, *, format: BodyFormat = "msgpack") -> None:
        if format not in _BODY_FORMATS:
            raise ValueError(f"format must be one of {', '.join(_BODY_FORMATS)}, not {format!r}")
        self.state_type = state_type
        self.format: BodyFormat = format
        self._schema = _StateSchema(state_type)

    def __repr__(self) -> str:
        return f"SerdeCheckpointCodec({_type_name(self.state_type)}, format={self.format!r})"

    @override
    def serialize(
        self, checkpoint: Checkpoint[S], graph_hash: int, trace_id: TraceId
    ) -> CheckpointBlob:
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"serialize takes a Checkpoint, not {type(checkpoint).__name__}")
        trace = validate_trace_id(trace_id)
        check_header(checkpoint.step, graph_hash, checkpoint.created_at)
        body = self._schema.encode(checkpoint.state, self.format)
        header = EnvelopeHeader(
            body_format=self.format,
            compression=None,
            key_id=None,
            checkpoint_id=checkpoint.checkpoint_id,
            trace_id=trace,
            step=checkpoint.step,
            parent_id=checkpoint.parent_id,
            graph_hash=graph_hash,
            created_at=checkpoint.created_at,
            current_node=checkpoint.current_node,
            metadata=dict(checkpoint.metadata),
        )
        return CheckpointBlob(
            checkpoint_id=checkpoint.checkpoint_id,
            trace_id=trace,
            step=checkpoint.step,
            parent_id=checkpoint.parent_id,
            graph_hash=graph_hash,
            created_at=checkpoint.created_at,
            current_node=checkpoint.current_node,
            metadata=header.metadata,
            data=seal_envelope(header, body),
        )

    @override
    def deserialize(self, blob: CheckpointBlob, expected_hash: int | None) -> Checkpoint[S]:
        if not isinstance(blob, CheckpointBlob):
            raise TypeError(f"deserialize takes a CheckpointBlob, not {type(blob).__name__}")
        header, body = open_envelope(blob)
        if expected_hash is not None and header.graph_hash != expected_hash:
            raise GraphMismatch(expected_hash, header.graph_hash)
        if header.compression is not None or header.key_id is not None:
            raise CodecError(
                f"checkpoint {blob.checkpoint_id} was written with compression "
                f"{header.compression!r} and key {header.key_id!r}, which this codec does not read"
            )
        state = self._schema.decode(body, header.body_format, blob.checkpoint_id)
        try:
            return Checkpoint(
                checkpoint_id=CheckpointId(header.checkpoint_id),
                step=header.step,
                parent_id=None if header.parent_id is None else CheckpointId(header.parent_id),
                current_node=header.current_node,
                state=state,
                created_at=header.created_at,
                metadata=header.metadata,
            )
        except ValueError as exc:
            raise CorruptCheckpoint(blob.checkpoint_id, f"impossible header: {exc}") from exc


class _StateSchema:
    """How one state type is encoded and decoded."""

    def __init__(self, state_type: Any) -> None:
        self.state_type = state_type
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
        if self.runtime_class is not None and not isinstance(state, self.runtime_class):
            raise CodecError(
                f"the state is a {type(state).__qualname__}, but this codec stores "
                f"{_type_name(self.state_type)}"
            )
        try:
            value = state.__flowpoint_snapshot__() if self.projected else state
            body = _ENCODERS[body_format].encode(value)
        except Exception as exc:  # msgspec raises TypeError, OverflowError, RecursionError...
            raise CodecError(f"cannot encode the state: {exc}") from exc
        # JSON writes NaN and infinity as null; refuse rather than lose them. A
        # state without nulls cannot hold either, so most states skip the walk.
        if body_format == "json" and b"null" in body:
            _reject_non_finite(value)
        return body

    def decode(self, body: memoryview, body_format: str, checkpoint_id: CheckpointId) -> Any:
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
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="python", by_alias=True)
        if isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
            raise TypeError(
                f"a pydantic {type(value).__name__} is not stored: flowpoint does not write "
                f"secrets in clear text; keep secrets out of the state"
            )
        # Types pydantic defines (URLs, emails, ...) go as pydantic serializes them to
        # JSON; the model's validation turns them back into themselves on load.
        try:
            return sys.modules["pydantic_core"].to_jsonable_python(value)
        except ValueError:  # PydanticSerializationError: pydantic does not know it either
            pass
    raise TypeError(f"flowpoint cannot store a value of type {type(value).__qualname__}")


def _strict_hook(tp: Any, raw: Any) -> Any:
    """Msgspec's hook for types it does not know: pydantic models, and nothing else."""
    model = _pydantic_model(tp)
    if model is None:
        raise TypeError(f"flowpoint does not know how to decode {_type_name(tp)}")
    return _validate_pydantic(model, raw)


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


def _reject_non_finite(value: Any) -> None:
    pending = [msgspec.to_builtins(value, enc_hook=_enc_hook)]
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


_ENCODERS: dict[BodyFormat, msgspec.msgpack.Encoder | msgspec.json.Encoder] = {
    "msgpack": msgspec.msgpack.Encoder(enc_hook=_enc_hook),
    "json": msgspec.json.Encoder(enc_hook=_enc_hook),
}
