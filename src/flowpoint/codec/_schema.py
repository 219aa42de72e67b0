"""The state schema: how a codec encodes states of one declared type and decodes them back.

msgspec does the work, guided by the type: dicts, dataclasses, ``TypedDict``,
``msgspec.Struct`` and pydantic v2 models (validated by pydantic itself), and
projections declared with ``__flowpoint_snapshot__``/``__flowpoint_restore__``.
Nothing here knows envelopes, compression, encryption or stores.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import contextlib
import functools
import math
import re
import sys
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

import msgspec
import msgspec.inspect as inspect

from flowpoint._types import runtime_class, type_name
from flowpoint.codec._bounds import PLAIN, Costs
from flowpoint.codec._delta import Delta, array_count, encode_array_header, join_fields
from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.ids import CheckpointId

__all__ = ["BodyFormat", "StateSchema", "decode_costs", "schema_of"]

BodyFormat = Literal["msgpack", "json"]


class StateSchema:
    """How one state type is encoded and decoded.

    ``allow_secrets`` stores pydantic ``SecretStr``/``SecretBytes`` values (for a
    codec that encrypts); without it they are refused with :class:`CodecError`.
    """

    def __init__(self, state_type: Any, *, allow_secrets: bool) -> None:
        self.state_type = state_type
        self.encoders = _SECRET_ENCODERS if allow_secrets else _ENCODERS
        self.runtime_class = runtime_class(state_type)
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
                    f"{type_name(state_type)}.__flowpoint_snapshot__: {exc}"
                ) from exc
        try:
            self.decoders: dict[str, msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]] = {
                "msgpack": msgspec.msgpack.Decoder(wire_type, dec_hook=_strict_hook),
                "json": msgspec.json.Decoder(wire_type, dec_hook=_strict_hook),
            }
        except TypeError as exc:
            raise TypeError(
                f"flowpoint cannot store states of type {type_name(state_type)}: {exc}"
            ) from exc
        self.costs = decode_costs(wire_type)
        self.plain = _is_plain(wire_type)
        self.raw_fields = not self.projected and _is_raw_fields(wire_type)
        """Whether the state is a dict of each field's own encoding (``dict[str, msgspec.Raw]``).

        Such a state is its fields as they are: a state rebuilt from a delta's
        fields needs neither joining nor decoding.
        """
        self._fields = _FieldChecks.of(wire_type)

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

        The same bytes :func:`~flowpoint.codec._delta.split_fields` would cut out of
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

    def check(
        self,
        body: bytes | None,
        fields: dict[str, bytes] | None,
        body_format: BodyFormat,
        changed: Delta | None = None,
    ) -> None:
        """Raise :class:`CodecError` unless the encoded state decodes back into the state type.

        ``body`` is the whole encoding (``None`` if only ``fields`` were made);
        ``changed``, for a state stored as changes to one that was checked, says
        what changed: then only that is checked. Naming the field, and the path to
        the value inside it, that does not fit.
        """
        if self.plain and (fields is not None or body_format == "json"):
            return  # plain dicts with str keys: anything encodable decodes back
        if self.raw_fields and fields is not None and body_format == "msgpack":
            try:
                _check_well_formed(fields, changed)
            except Exception:  # msgspec's errors, a RecursionError...
                pass  # the checks below say which field does not fit, and where
            else:
                return
        checks = self._fields
        split: dict[str, bytes] | dict[str, msgspec.Raw] | None = fields
        # MessagePack fields are checked one by one, without joining them whole.
        if checks is None or split is None or body_format == "json":
            whole = body if body is not None else join_fields(fields or {})
            if checks is None or body_format != "json":
                self._decode_checked(self.decoders[body_format], whole, "$")
                return
            split = _json_fields.decode(whole)
        checks.check_keys(split, self.state_type)
        for key, value in split.items():
            field = checks.field(key)
            where = f"$.{key}"
            appended = None if changed is None else changed.appended.get(key)
            patched = None if changed is None else changed.patched.get(key)
            if appended is not None and field.element is not None:
                count, tail = appended
                # The header alone: copying a long array to count it is what this avoids.
                first = (array_count(bytes(memoryview(value)[:5])) or 0) - count
                decoder = field.decoder(body_format, "elements")
                self._decode_checked(decoder, encode_array_header(count) + tail, where, first)
            elif patched is not None and field.element is not None:
                decoder = field.decoder(body_format, "element")
                for index, element in patched[1].items():
                    self._decode_checked(decoder, element, f"{where}[{index}]")
            elif changed is None or key in changed.replaced or appended or patched:
                self._decode_checked(field.decoder(body_format, "whole"), value, where)

    def _decode_checked(
        self,
        decoder: msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any],
        body: bytes | msgspec.Raw,
        where: str,
        first_index: int = 0,
    ) -> None:
        try:
            decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise CodecError(
                f"the state does not fit {type_name(self.state_type)}: "
                f"{_rebased(str(exc), where, first_index)}"
            ) from exc
        except Exception as exc:  # validators of the application's own: whatever they raise
            raise CodecError(
                f"the state does not fit {type_name(self.state_type)} at `{where}`: {exc}"
            ) from exc

    def _stored_value(self, state: Any) -> Any:
        """What is stored of ``state``: itself, or its snapshot."""
        if self.runtime_class is not None and not isinstance(state, self.runtime_class):
            raise CodecError(
                f"the state is a {type(state).__qualname__}, but this codec stores "
                f"{type_name(self.state_type)}"
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
                f"checkpoint {checkpoint_id} does not fit {type_name(self.state_type)}: {exc}"
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
                f"{type_name(self.state_type)}.__flowpoint_restore__ refused checkpoint "
                f"{checkpoint_id}: {exc}"
            ) from exc


class _Field:
    """One top-level field of a state type, checked on its own.

    Its decoders are made when first needed: for the field's type, and, for a
    field typed ``list[T]`` (no bounds on the list), for ``T`` (elements changed
    in place) and ``list[T]`` (elements appended); a field typed ``msgspec.Raw``
    counts as a list of ``msgspec.Raw`` when its elements change.
    """

    __slots__ = ("_decoders", "element", "hint")

    def __init__(self, annotation: Any) -> None:
        hint = annotation
        if typing.get_origin(hint) in (typing.NotRequired, typing.Required):
            (hint,) = typing.get_args(hint)  # a TypedDict's: about the key, not the value
        self.hint = hint
        self.element: Any = None
        if typing.get_origin(hint) in _SEQUENCES:
            (self.element,) = typing.get_args(hint) or (Any,)
        elif hint is msgspec.Raw:
            # Any value fits: an array's elements appended or changed are checked as
            # well-formed on their own, not the whole array again.
            self.element = msgspec.Raw
        self._decoders: dict[tuple[str, str], _Decoder] = {}

    def decoder(self, body_format: str, which: Literal["whole", "element", "elements"]) -> _Decoder:
        """A decoder of ``body_format`` for the field, one element of it, or a list of them."""
        key = (body_format, which)
        found = self._decoders.get(key)
        if found is None:
            if which == "whole":
                tp = self.hint
            elif which == "element":
                tp = self.element
            else:
                tp = types.GenericAlias(list, (self.element,))
            module = msgspec.json if body_format == "json" else msgspec.msgpack
            found = self._decoders[key] = module.Decoder(tp, dec_hook=_strict_hook)
        return found


class _FieldChecks:
    """A state type whose top-level fields are checked one by one.

    Dataclasses, ``TypedDict``s and Structs (their declared fields), and dicts of
    one value type (any key). Other types (pydantic models, which validate the
    whole model, tagged or array-like Structs, anything else) are checked whole.
    """

    def __init__(
        self,
        fields: dict[str, _Field],
        required: frozenset[str] = frozenset(),
        any_key: _Field | None = None,
    ) -> None:
        self.fields = fields
        self.required = required
        self.any_key = any_key

    @classmethod
    def of(cls, wire_type: Any) -> _FieldChecks | None:
        info = inspect.type_info(wire_type)
        if isinstance(info, inspect.StructType) and (info.array_like or info.tag is not None):
            return None
        if isinstance(info, inspect.DataclassType | inspect.TypedDictType | inspect.StructType):
            try:
                hints = typing.get_type_hints(wire_type, include_extras=True)
            except Exception:  # unresolvable annotations: the state is checked whole
                return None
            return cls(
                {field.encode_name: _Field(hints[field.name]) for field in info.fields},
                frozenset(field.encode_name for field in info.fields if field.required),
            )
        if isinstance(info, inspect.DictType) and isinstance(info.key_type, inspect.StrType):
            return cls({}, any_key=_Field(typing.get_args(wire_type)[1]))
        return None

    def field(self, key: str) -> _Field:
        """The checks of field ``key`` (which :meth:`check_keys` let through)."""
        found = self.fields.get(key, self.any_key)
        assert found is not None  # check_keys refused keys without checks
        return found

    def check_keys(self, keys: Iterable[str], state_type: Any) -> None:
        """Refuse keys the type does not declare (a load would drop them), or lacks."""
        if self.any_key is not None:
            return
        present = set(keys)
        for key in present - self.fields.keys():
            raise CodecError(
                f"the state does not fit {type_name(state_type)}: it holds the key "
                f"{key!r:.80}, which {type_name(state_type)} does not declare"
            )
        for key in self.required - present:
            raise CodecError(
                f"the state does not fit {type_name(state_type)}: it lacks the required "
                f"key {key!r:.80}"
            )


_Decoder = msgspec.msgpack.Decoder[Any] | msgspec.json.Decoder[Any]
# Field types whose elements are checked one by one when elements are appended or changed.
_SEQUENCES = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_json_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _rebased(message: str, where: str, first_index: int) -> str:
    """The msgspec ``message`` with its path (``$...``) moved under ``where``, indices offset."""
    head, found, path = message.rpartition(" - at `$")
    if not found:
        return f"{message} - at `{where}`"
    if first_index:
        index = re.match(r"\[(\d+)\]", path)
        if index is not None:
            path = f"[{int(index.group(1)) + first_index}]{path[index.end() :]}"
    return f"{head} - at `{where}{path}"


def _is_plain(wire_type: Any) -> bool:
    """Whether every encodable dict with str keys decodes back into ``wire_type``."""
    if wire_type is Any or wire_type is dict:
        return True
    if typing.get_origin(wire_type) is not dict:
        return False
    key, value = typing.get_args(wire_type)
    return key in (Any, str) and value is Any


def _is_raw_fields(wire_type: Any) -> bool:
    """Whether ``wire_type`` is ``dict[str, msgspec.Raw]``."""
    return typing.get_origin(wire_type) is dict and typing.get_args(wire_type) == (str, msgspec.Raw)


_raw_value = msgspec.msgpack.Decoder(msgspec.Raw)
_raw_values = msgspec.msgpack.Decoder(list[msgspec.Raw])


def _check_well_formed(fields: dict[str, bytes], changed: Delta | None) -> None:
    """Raise unless the fields of a raw-fields state are each one MessagePack value.

    What :meth:`StateSchema.check` checks of such a state, without its per-field
    bookkeeping: each field whole, or for a delta only what it changed.
    """
    if changed is None:
        for value in fields.values():
            _raw_value.decode(value)
        return
    for value in changed.replaced.values():
        _raw_value.decode(value)
    for count, tail in changed.appended.values():
        _raw_values.decode(encode_array_header(count) + tail)
    for _, elements in changed.patched.values():
        for element in elements.values():
            _raw_value.decode(element)


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
    raise TypeError(f"flowpoint does not know how to decode {type_name(tp)}")


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


# What a map decoded into a class instance takes, at most, per kind of class: a
# base and a share per declared field (defaults filled in, factories run).
_STRUCT, _STRUCT_FIELD = 64, 16
_DATACLASS, _DATACLASS_FIELD = 128, 16
_FACTORIES, _FACTORY_FIELD = 512, 96  # a dataclass whose defaults are made by factories
_MODEL, _MODEL_FIELD = 1024, 64  # pydantic validates a dict into a model
_SET, _SET_ELEMENT = 256, 96


def schema_of(state_type: Any, *, allow_secrets: bool) -> StateSchema:
    """The :class:`StateSchema` of ``state_type``, made once per type and kept.

    A schema's behaviour never changes once made (the decoders it adds as they
    are needed are the same each time), and making one (msgspec's decoders, the
    type's costs and checks) costs more than a load of a small state: a process
    that opens stores again and again, as a server handling each request does,
    pays it once. A type that cannot be a dict key gets a new schema each time.
    """
    try:
        hash(state_type)
    except TypeError:
        return StateSchema(state_type, allow_secrets=allow_secrets)
    return _cached_schema(state_type, allow_secrets)


@functools.lru_cache(maxsize=256)
def _cached_schema(state_type: Any, allow_secrets: bool) -> StateSchema:
    return StateSchema(state_type, allow_secrets=allow_secrets)


def decode_costs(wire_type: Any) -> Costs:
    """What the containers of states of ``wire_type`` decode to, at most.

    Maps cost what the largest class the type declares anywhere takes (a plain
    dict at least), arrays what a set takes where the type holds one.
    """
    map_base, array_base, array_element = PLAIN.map_base, PLAIN.array_base, PLAIN.array_element
    pending: list[Any] = [inspect.type_info(wire_type)]
    seen: set[int] = set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, inspect.StructType):
            map_base = max(map_base, _STRUCT + _STRUCT_FIELD * len(node.fields))
        elif isinstance(node, inspect.DataclassType):
            if any(field.default_factory is not msgspec.NODEFAULT for field in node.fields):
                map_base = max(map_base, _FACTORIES + _FACTORY_FIELD * len(node.fields))
            else:
                map_base = max(map_base, _DATACLASS + _DATACLASS_FIELD * len(node.fields))
        elif isinstance(node, (inspect.SetType, inspect.FrozenSetType)):
            array_base, array_element = max(array_base, _SET), max(array_element, _SET_ELEMENT)
        elif isinstance(node, inspect.CustomType):
            model = _pydantic_model(node.cls)
            if model is not None:
                fields = model.model_fields.values()
                map_base = max(map_base, _MODEL + _MODEL_FIELD * len(fields))
                for field in fields:
                    with contextlib.suppress(TypeError):  # pydantic's own types
                        pending.append(inspect.type_info(field.annotation))
        for name in msgspec.structs.fields(type(node)):
            value = getattr(node, name.name)
            for child in value if isinstance(value, tuple | list) else (value,):
                if isinstance(child, inspect.Field):
                    pending.append(child.type)
                elif isinstance(child, inspect.Type):
                    pending.append(child)
    return Costs(map_base, array_base, array_element)


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
