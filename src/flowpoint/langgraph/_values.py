"""LangGraph's values as plain MessagePack data, and back, with an allowlist of types.

A value is stored as MessagePack of ``None``, booleans, numbers, strings, bytes,
lists and string-keyed maps; anything else becomes a *tagged map*
``{"$type": NAME, "$value": DATA}``, where ``DATA`` is plain data again. A load
builds back only what its name maps to in the codec's
:class:`~flowpoint.langgraph._types.TypeRegistry` (the allowlist), and ``dict``: a
map whose keys are not all strings, or that has a ``"$type"`` key of its own beside
tagged values. A name that is not in the registry is refused with
:class:`~flowpoint.errors.CorruptCheckpoint`: nothing named by stored data is ever
imported or called unless the registry holds it. Saving a value of a class the
registry does not hold is refused with :class:`~flowpoint.errors.CodecError`,
before anything is written. As LangGraph's own serializer does, tuples are stored
as lists and exceptions as their ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Collection, Mapping
from typing import Any, Final, NamedTuple

import msgspec
import ormsgpack

from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.ids import CheckpointId
from flowpoint.langgraph._types import TypeRegistry, surrogate_bytes

__all__ = ["TAG", "Encoded", "Tagged", "ValueCodec"]

TAG: Final = "$type"
_VALUE: Final = "$value"
# Where a field's bytes lack this, nothing in it is tagged and it decodes as it is.
_TAG_BYTES: Final = msgspec.msgpack.encode(TAG)
_OPTIONS: Final = (
    ormsgpack.OPT_PASSTHROUGH_BIG_INT
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)
_INT64 = range(-(2**63), 2**64)
_TAG_PATTERN: Final = re.compile(re.escape(_TAG_BYTES))


class Encoded(NamedTuple):
    """A value's bytes, and whether they hold tagged values (else: plain data)."""

    data: bytes
    tagged: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Tagged:
    """A value of class ``name`` given as its stored ``data``: stored as such, never built.

    What reading another serializer's data yields for a class it names (see
    :mod:`~flowpoint.langgraph._lgformat`); a load builds it if the registry holds
    ``name``. ``data`` is plain data, and may hold other tagged values.
    """

    name: str
    data: Any


class ValueCodec:
    """Encodes values to MessagePack with tagged maps, and decodes them back safely."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry

    def encode(self, value: Any) -> Encoded:
        """``value`` as MessagePack; :class:`~flowpoint.errors.CodecError` if it cannot be.

        A value of plain data, or of registered classes, costs one pass in
        ormsgpack; a map of its own with ``"$type"`` or non-string keys, a lone
        surrogate or an exotic subclass takes a slower pass that tags them. Bytes
        that hold no tagged value are plain data, whatever keys its maps have:
        :meth:`decode` given ``tagged=False`` reads them as they are.
        """
        try:
            # Plain data needs no hook: the hook is called only for what ormsgpack
            # cannot store itself, so this is what the pass below would make, untagged.
            # A value holding an object (a message) fails at the first one it meets.
            return Encoded(ormsgpack.packb(value, option=_OPTIONS), False)
        except (ormsgpack.MsgpackEncodeError, TypeError, ValueError):
            pass
        tags = 0
        refused: list[_Refused] = []

        def default(obj: Any) -> Any:
            nonlocal tags
            try:
                tagged = self._tagged(obj)
            except _Refused as exc:
                refused.append(exc)
                raise
            if type(tagged) is dict:
                tags += 1
            return tagged

        try:
            data = ormsgpack.packb(value, default=default, option=_OPTIONS)
        except (ormsgpack.MsgpackEncodeError, TypeError, ValueError):
            if refused:
                raise CodecError(str(refused[0])) from None
            return self._encode_slowly(value)
        # Each tag this pass made is one "$type" key; any other occurrence is the
        # application's own (a key, or bytes in a string) and, beside tags, needs escaping.
        if tags and data.count(_TAG_BYTES) != tags:
            return self._encode_slowly(value)
        return Encoded(data, tags > 0)

    def decode(
        self,
        data: bytes | memoryview | msgspec.Raw,
        checkpoint_id: CheckpointId | None,
        *,
        tagged: bool | None = None,
    ) -> Any:
        """The value ``data`` holds; ``tagged`` as :meth:`encode` said (``None``: unknown).

        Raises :class:`~flowpoint.errors.CorruptCheckpoint` for bytes that are not
        such data or name a type the registry does not hold, and
        :class:`~flowpoint.errors.CodecError` when a registered class refuses its data.
        """
        view = data if isinstance(data, bytes) else memoryview(data)
        try:
            value = ormsgpack.unpackb(view)
        except (ormsgpack.MsgpackDecodeError, ValueError, TypeError, RecursionError) as exc:
            raise CorruptCheckpoint(checkpoint_id, f"unreadable value: {exc}") from None
        if tagged is False or (tagged is None and _TAG_PATTERN.search(view) is None):
            return value
        try:
            return self._untag(value)
        except _Refused as exc:
            raise CorruptCheckpoint(checkpoint_id, str(exc)) from None
        except RecursionError:
            raise CorruptCheckpoint(checkpoint_id, "a value nested too deeply") from None
        except _Unfit as exc:
            raise CodecError(f"checkpoint {checkpoint_id}: {exc}") from None

    def decode_fields(
        self,
        fields: Mapping[str, bytes | msgspec.Raw],
        checkpoint_id: CheckpointId | None,
        tagged: Collection[str] | None,
        skip: str,
    ) -> dict[str, Any]:
        """Each field but ``skip`` decoded, as :meth:`decode` decodes it.

        ``tagged`` names the fields that hold tagged values (``None``: unknown);
        the others are read as they are, in one loop, since a read decodes every
        field of a checkpoint.
        """
        decoded: dict[str, Any] = {}
        unpack = ormsgpack.unpackb
        for key, raw in fields.items():
            if key == skip:
                continue
            if tagged is None or key in tagged:
                decoded[key] = self.decode(
                    raw, checkpoint_id, tagged=None if tagged is None else True
                )
                continue
            try:
                decoded[key] = unpack(raw if type(raw) is bytes else memoryview(raw))
            except (ormsgpack.MsgpackDecodeError, ValueError, TypeError, RecursionError) as exc:
                raise CorruptCheckpoint(checkpoint_id, f"unreadable value: {exc}") from None
        return decoded

    # -- encoding ----------------------------------------------------------------------

    def _tagged(self, obj: Any) -> Any:
        """What is stored for ``obj``, a value that is not plain data.

        A tagged map for a class of the registry (or an ``int`` beyond 64 bits);
        a list for a tuple; the ``repr`` of an exception; the base value of a
        subclass of ``int``, ``float``, ``str``, ``bytes``, ``list`` or ``dict``, as
        LangGraph's serializer stores them. Anything else is refused.
        """
        cls = type(obj)
        kind = self.registry.kind_of(cls)
        if kind is not None:
            return {TAG: kind.name, _VALUE: kind.to_data(obj)}
        if cls is Tagged:
            if not isinstance(obj.name, str) or obj.name == "dict":
                raise _Refused(f"a tagged value cannot be named {obj.name!r:.60}")
            return {TAG: obj.name, _VALUE: obj.data}
        if cls is tuple:
            return list(obj)
        if isinstance(obj, BaseException):
            return repr(obj)
        if not isinstance(obj, (enum.Enum, tuple)):
            base = _plain_base(obj)
            if base is not None:
                return base
        raise _Refused(
            f"cannot store a value of type {cls.__module__}.{cls.__qualname__}: it is not on "
            f"the allowlist; register it with FlowpointSaver(..., allowed_types=[...]) "
            f"(pydantic models, dataclasses, enums and named tuples can be)"
        )

    def _encode_slowly(self, value: Any) -> Encoded:
        try:
            return Encoded(ormsgpack.packb(self._plain(value, 0)), True)
        except _Refused as exc:
            raise CodecError(str(exc)) from None
        except (ormsgpack.MsgpackEncodeError, TypeError, ValueError, RecursionError) as exc:
            raise CodecError(f"cannot encode a value: {exc}") from None

    def _plain(self, value: Any, depth: int) -> Any:
        """``value`` as plain data with every tag made, for ormsgpack to store as it is."""
        if depth > 250:
            raise _Refused("cannot store a value nested more than 250 levels deep")
        cls = type(value)
        if value is None or cls in (bool, float, bytes):
            return value
        if cls is int:
            return value if value in _INT64 else {TAG: "int", _VALUE: str(value)}
        if cls is str:
            return value if _encodable(value) else {TAG: "str", _VALUE: surrogate_bytes(value)}
        if cls is list:
            return [self._plain(item, depth + 1) for item in value]
        if cls is dict:
            if TAG not in value and all(type(k) is str and _encodable(k) for k in value):
                return {key: self._plain(item, depth + 1) for key, item in value.items()}
            pairs = [
                [self._plain(key, depth + 1), self._plain(item, depth + 1)]
                for key, item in value.items()
            ]
            return {TAG: "dict", _VALUE: pairs}
        if cls is bytearray or cls is memoryview:
            return bytes(value)
        tagged = self._tagged(value)
        if type(tagged) is dict:
            return {TAG: tagged[TAG], _VALUE: self._plain(tagged[_VALUE], depth + 1)}
        return self._plain(tagged, depth + 1)

    # -- decoding ----------------------------------------------------------------------

    def _untag(self, value: Any) -> Any:
        cls = type(value)
        if cls is list:
            return [self._untag(item) for item in value]
        if cls is not dict:
            return value
        if TAG not in value:
            return {key: self._untag(item) for key, item in value.items()}
        name = value[TAG]
        if len(value) != 2 or _VALUE not in value or type(name) is not str:
            raise _Refused(f"a tagged value must be {{{TAG!r}: name, {_VALUE!r}: data}}")
        data = self._untag(value[_VALUE])
        if name == "dict":
            return _dict_from_pairs(data)
        kind = self.registry.kind_named(name)
        if kind is None:
            raise _Refused(
                f"it holds a value of type {name!r:.120}, which is not on the allowlist "
                f"(register the class with FlowpointSaver(..., allowed_types=[...]) if it is yours)"
            )
        try:
            return kind.from_data(data)
        except Exception as exc:  # the class's own code refused the data
            raise _Unfit(f"stored data of type {name!r} does not fit it: {exc}") from exc


class _Refused(TypeError):
    """Data a codec will not store, or stored data it will not build."""


class _Unfit(ValueError):
    """A registered class refused its stored data."""


def _plain_base(obj: object) -> Any:
    """A subclass of a plain type as its base value (as ormsgpack stores it), else ``None``."""
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dict_from_pairs(data: Any) -> dict[Any, Any]:
    if type(data) is not list or not all(type(p) is list and len(p) == 2 for p in data):
        raise _Refused("a tagged dict must hold [key, value] pairs")
    try:
        return {_hashable(key): item for key, item in data}
    except TypeError as exc:
        raise _Refused(f"a tagged dict has a key that cannot be one: {exc}") from None


def _hashable(key: Any) -> Any:
    # Tuples are stored as lists; as keys they were tuples.
    return tuple(_hashable(k) for k in key) if type(key) is list else key
