"""A graph's fingerprint: BLAKE2b-64 over a canonical JSON description.

The description holds plain data only (names, version tags, edges, and a
structural description of the state type), encoded as JSON with fixed
separators, so the hash is the same in every process, Python version and
machine; Python's ``hash()`` (salted per process) is never used.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import types
import typing
import uuid
from typing import Any

import msgspec

from flowpoint.errors import GraphDefinitionError

__all__ = ["describe_type", "fingerprint"]

FINGERPRINT_VERSION = 1

_SCALARS: dict[Any, str] = {
    type(None): "none",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    bytearray: "bytes",
    memoryview: "bytes",
    datetime.datetime: "datetime",
    datetime.date: "date",
    datetime.time: "time",
    datetime.timedelta: "timedelta",
    uuid.UUID: "uuid",
    decimal.Decimal: "decimal",
    typing.Any: "any",
    object: "any",
}


def fingerprint(structure: dict[str, Any], state_type: Any) -> int:
    """The unsigned 64-bit fingerprint of a graph's ``structure`` and its state schema."""
    document = {
        "fingerprint": FINGERPRINT_VERSION,
        **structure,
        "state": describe_type(state_type),
    }
    canonical = json.dumps(document, ensure_ascii=True, separators=(",", ":"), sort_keys=True)
    digest = hashlib.blake2b(canonical.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def describe_type(tp: Any) -> Any:
    """A structural, JSON-ready description of a state type.

    Field names and field types count, in declaration order; class names,
    defaults and docstrings do not. A state that stores a projection
    (``__flowpoint_snapshot__``) is described by the snapshot's return type.

    >>> describe_type(dict[str, list[int]])
    ['dict', 'str', ['list', 'int']]
    """
    return _describe(tp, ())


def _describe(tp: Any, seen: tuple[Any, ...]) -> Any:
    if tp in _SCALARS:
        return _SCALARS[tp]
    if isinstance(tp, typing.TypeVar):
        return "any"
    if tp in seen:  # a recursive type refers back to itself
        return ["ref", seen.index(tp)]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Annotated, typing.NotRequired, typing.Required):
        return _describe(args[0], seen)
    if origin is typing.Literal:
        return ["literal", [repr(arg) for arg in args]]
    if origin is typing.Union or origin is types.UnionType:
        members = [_describe(arg, seen) for arg in args]
        return ["union", sorted(members, key=lambda member: json.dumps(member, sort_keys=True))]
    if origin is not None:
        return _describe_generic(origin, args, seen)
    if not isinstance(tp, type):
        return ["unknown", repr(tp)]
    return _describe_class(tp, (*seen, tp))


def _describe_generic(origin: Any, args: tuple[Any, ...], seen: tuple[Any, ...]) -> Any:
    import collections.abc as abc

    if origin in (list, abc.Sequence, abc.MutableSequence):
        return ["list", _describe(args[0], seen) if args else "any"]
    if origin in (set, frozenset, abc.Set, abc.MutableSet):
        return ["set", _describe(args[0], seen) if args else "any"]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ["list", _describe(args[0], seen)]
        return ["tuple", [_describe(arg, seen) for arg in args]]
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        key, value = args if len(args) == 2 else (Any, Any)
        return ["dict", _describe(key, seen), _describe(value, seen)]
    return ["generic", _describe(origin, seen), [_describe(arg, seen) for arg in args]]


def _describe_class(tp: type, seen: tuple[Any, ...]) -> Any:
    snapshot = getattr(tp, "__flowpoint_snapshot__", None)
    if callable(snapshot) and callable(getattr(tp, "__flowpoint_restore__", None)):
        return ["snapshot", _describe(_hints(snapshot, tp).get("return", Any), seen)]
    if issubclass(tp, enum.Enum):
        return ["enum", [[member.name, repr(member.value)] for member in tp]]
    if typing.is_typeddict(tp):
        required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
        return [
            "typeddict",
            [
                [name, _describe(field, seen), _is_required(name, field, required)]
                for name, field in _hints(tp, tp).items()
            ],
        ]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return [
            "struct",
            [
                [field.encode_name, _describe(field.type, seen)]
                for field in msgspec.structs.fields(tp)
            ],
        ]
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp, tp)
        return [
            "dataclass",
            [[field.name, _describe(hints[field.name], seen)] for field in dataclasses.fields(tp)],
        ]
    model_fields = getattr(tp, "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(tp, "model_validate"):  # a pydantic model
        return [
            "model",
            [
                [info.alias or name, _describe(info.annotation, seen)]
                for name, info in model_fields.items()
            ],
        ]
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple
        hints = _hints(tp, tp)
        return [
            "namedtuple",
            [[name, _describe(hints.get(name, Any), seen)] for name in tp._fields],
        ]
    if tp in (list, tuple, set, frozenset, dict):
        return _describe_generic(tp, (), seen)
    return ["class", f"{tp.__module__}.{tp.__qualname__}"]


def _is_required(name: str, hint: Any, required: frozenset[str]) -> bool:
    # With postponed annotations, Python 3.11 cannot see NotRequired when it builds
    # __required_keys__; the resolved hint still says it.
    origin = typing.get_origin(hint)
    if origin is typing.NotRequired:
        return False
    if origin is typing.Required:
        return True
    return name in required


def _hints(obj: Any, owner: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception as exc:  # unresolvable annotations are a definition error
        raise GraphDefinitionError(
            f"cannot read the type annotations of {owner.__qualname__}: {exc}"
        ) from exc
