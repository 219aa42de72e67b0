"""A graph's fingerprint: BLAKE2b-64 over a canonical JSON description.

The description holds plain data only, encoded as JSON with sorted keys and fixed
separators, so the hash is the same in every process, Python version and machine;
Python's ``hash()`` (salted per process) is never used. It is canonical: what
cannot change how a stored run loads or continues does not change the hash (the
order of ``add_node`` and ``add_edge`` calls, the order of a router's targets or of
``Literal`` members, the names of enum members, class names, defaults, docstrings),
and everything that can does.

The document, format version :data:`FINGERPRINT_VERSION`::

    {"fingerprint": 2,
     "graph": <the graph's name>,
     "nodes": {<name>: {<attribute>: <value>, ...}, ...},   # an object: no order
     "edges": [<edge>, ...],                                # a set: sorted, unique
     "state": <the state type's description>}

An edge is ``{"kind": "static", "from": <node>, "to": <node>}`` (several from one
node are a fan-out), ``{"kind": "conditional", "from": <node>, "to": [<targets>]}``
(or ``"map"``: a path map's routes as a set; a router's targets are where its
``Send`` objects may go too), or ``{"kind": "join", "from": [<sources>], "to":
<node>}`` with its sources as a set. Which state fields have reducers, and which
(by qualified name), is part of the state's description: ``Annotated`` metadata.

A node's attributes are ``"version"``, ``"goto"`` (its declared ``Command``
targets, as a set) and ``"subgraph"`` (the document of the graph it runs, nested).
A node's attributes and an edge's keys are left out when they have their default
value, so a feature that adds an attribute (a node's ``goto`` targets, its retry
policy, a subgraph's own fingerprint) or a kind of edge leaves the fingerprint of
every graph that does not use it as it was.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import re
import sys
import types
import typing
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from flowpoint.errors import GraphDefinitionError

__all__ = [
    "FINGERPRINT_VERSION",
    "canonical_set",
    "describe_graph",
    "describe_type",
    "describe_value",
    "fingerprint",
    "hash_description",
]

FINGERPRINT_VERSION = 2
"""Bumped whenever the description changes for a graph that did not: 2 made it canonical."""

_SCALARS: dict[Any, str] = {
    type(None): "none",
    None: "none",
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
_LISTS = (list, abc.Sequence, abc.MutableSequence, abc.Collection)
_SETS = (set, frozenset, abc.Set, abc.MutableSet)
_DICTS = (dict, abc.Mapping, abc.MutableMapping)
# Wrappers that say nothing about what is stored.
_TRANSPARENT = (typing.NotRequired, typing.Required, typing.Final)
# msgspec.Meta's constraints; its title, description and examples only document.
_META_CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length")
# msgspec.Struct options that change what is stored or what loads.
_STRUCT_OPTIONS = ("array_like", "omit_defaults", "forbid_unknown_fields", "tag", "tag_field")
# pydantic model settings that change what loads (aliases are read from each field).
_MODEL_SETTINGS = ("extra", "strict", "populate_by_name", "validate_by_alias", "validate_by_name")


def fingerprint(
    *, name: str, nodes: Mapping[str, Mapping[str, Any]], edges: Iterable[Any], state: Any
) -> int:
    """The unsigned 64-bit fingerprint of a graph: :func:`hash_description` of its description.

    ``nodes`` maps each node's name to its attributes (those at their default left
    out); ``edges`` describes each edge as plain data, in any order; ``state`` is
    :func:`describe_type` of the state type.
    """
    return hash_description(describe_graph(name=name, nodes=nodes, edges=edges, state=state))


def describe_graph(
    *, name: str, nodes: Mapping[str, Mapping[str, Any]], edges: Iterable[Any], state: Any
) -> dict[str, Any]:
    """The document a graph's fingerprint hashes (see :func:`fingerprint` for the arguments).

    A subgraph node's attributes hold its graph's document (``"subgraph"``), so
    a change of the subgraph changes the fingerprint of every graph it is a node of.
    """
    return {
        "fingerprint": FINGERPRINT_VERSION,
        "graph": name,
        "nodes": {node: dict(attributes) for node, attributes in nodes.items()},
        "edges": canonical_set(edges),
        "state": state,
    }


def hash_description(document: Mapping[str, Any]) -> int:
    """BLAKE2b-64 of a graph's document (:func:`describe_graph`), as canonical JSON."""
    digest = hashlib.blake2b(_canonical(document).encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def canonical_set(items: Iterable[Any]) -> list[Any]:
    """``items`` (plain data) as a set: sorted by their canonical JSON, each once."""
    unique = {_canonical(item): item for item in items}
    return [unique[key] for key in sorted(unique)]


def describe_type(tp: Any) -> Any:
    """A structural, JSON-ready description of a state type.

    Field names (as stored) and field types count, in declaration order, with
    ``Annotated`` constraints, a Struct's storage options and a pydantic model's
    aliases and settings; class names, defaults and docstrings do not. Enums count
    by their values, ``Literal`` members and union members as sets, a ``NewType``
    as its supertype. A state that stores a projection (``__flowpoint_snapshot__``)
    is described by the snapshot's return type.

    An annotation flowpoint cannot store raises
    :class:`~flowpoint.errors.GraphDefinitionError`.

    >>> describe_type(dict[str, list[int]])
    ['dict', 'str', ['list', 'int']]
    >>> describe_type(typing.Literal["b", "a"]) == describe_type(typing.Literal["a", "b"])
    True
    """
    return _Describer().describe(tp, "the state type")


def describe_value(value: Any) -> Any:
    """A JSON-ready description of a constant: a ``Literal`` member, a path-map key...

    Python's ``repr`` is not used: it may hold a memory address. An enum member is
    described by its value, as it is stored.

    >>> describe_value(("a", 1, None))
    ['tuple', [['str', 'a'], ['int', 1], ['none']]]
    """
    return _value(value, ())


def _canonical(document: Any) -> str:
    return json.dumps(
        document, ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False
    )


class _Describer:
    """One walk over a type: the classes on the way (for recursive types)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def describe(self, tp: Any, where: str, *, pydantic: bool = False) -> Any:
        """Describe ``tp``, found at ``where``; inside a pydantic model when ``pydantic``."""
        try:
            hash(tp)
        except TypeError:
            raise _unsupported(tp, where) from None
        if tp in _SCALARS:
            return _SCALARS[tp]
        if isinstance(tp, typing.TypeVar):
            return "any"
        if tp in self.seen:  # a recursive type refers back to itself
            return ["ref", self.seen.index(tp)]
        supertype = getattr(tp, "__supertype__", None)
        if supertype is not None:  # a NewType is stored as what it wraps
            return self.describe(supertype, where, pydantic=pydantic)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            metadata = [_value(item, ()) for item in tp.__metadata__]
            return ["annotated", self.describe(args[0], where, pydantic=pydantic), metadata]
        if origin in _TRANSPARENT:
            return self.describe(args[0], where, pydantic=pydantic)
        if origin is typing.Literal:
            return ["literal", canonical_set(_value(arg, ()) for arg in args)]
        if origin is typing.Union or origin is types.UnionType:
            return [
                "union",
                canonical_set(self.describe(arg, where, pydantic=pydantic) for arg in args),
            ]
        if origin is not None:
            return self._generic(origin, args, where, pydantic)
        if isinstance(tp, type):
            self.seen.append(tp)
            try:
                return self._class(tp, where, pydantic)
            finally:
                self.seen.pop()
        raise _unsupported(tp, where)

    def _generic(self, origin: Any, args: tuple[Any, ...], where: str, pydantic: bool) -> Any:
        item = f"{where}[]"
        if origin in _LISTS:
            return ["list", self.describe(args[0], item, pydantic=pydantic) if args else "any"]
        if origin in _SETS:
            return ["set", self.describe(args[0], item, pydantic=pydantic) if args else "any"]
        if origin is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                return ["list", self.describe(args[0], item, pydantic=pydantic) if args else "any"]
            return ["tuple", [self.describe(arg, item, pydantic=pydantic) for arg in args]]
        if origin in _DICTS:
            key, value = args if len(args) == 2 else (Any, Any)
            return [
                "dict",
                self.describe(key, f"{where} key", pydantic=pydantic),
                self.describe(value, item, pydantic=pydantic),
            ]
        if isinstance(origin, type) and _structured(origin):  # a generic dataclass, model...
            return [
                "generic",
                self.describe(origin, where, pydantic=pydantic),
                [self.describe(arg, item, pydantic=pydantic) for arg in args],
            ]
        raise _unsupported(origin, where)

    def _class(self, tp: type, where: str, pydantic: bool) -> Any:
        name = tp.__qualname__
        snapshot = getattr(tp, "__flowpoint_snapshot__", None)
        if callable(snapshot) and callable(getattr(tp, "__flowpoint_restore__", None)):
            returns = _hints(snapshot, tp).get("return", Any)
            return ["snapshot", self.describe(returns, f"{name}.__flowpoint_snapshot__()")]
        if issubclass(tp, enum.Enum):  # stored by value: member names do not count
            return ["enum", canonical_set(_value(member.value, ()) for member in tp)]
        if typing.is_typeddict(tp):
            required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
            return [
                "typeddict",
                [
                    [key, self.describe(hint, f"{name}.{key}"), _is_required(key, hint, required)]
                    for key, hint in _hints(tp, tp).items()
                ],
            ]
        if issubclass(tp, msgspec.Struct):
            config = tp.__struct_config__
            options = {
                option: getattr(config, option)
                for option in _STRUCT_OPTIONS
                if getattr(config, option) not in (None, False)
            }
            fields = [
                [field.encode_name, self.describe(field.type, f"{name}.{field.name}")]
                for field in _struct_fields(tp)
            ]
            return ["struct", fields, options]
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp, tp)
            return [
                "dataclass",
                [
                    [field.name, self.describe(hints[field.name], f"{name}.{field.name}")]
                    for field in dataclasses.fields(tp)
                ],
            ]
        attributes = getattr(tp, "__attrs_attrs__", None)
        if attributes is not None:  # an attrs class (attrs itself is never imported)
            hints = _hints(tp, tp)
            return [
                "attrs",
                [
                    [a.name, self.describe(hints.get(a.name, a.type or Any), f"{name}.{a.name}")]
                    for a in attributes
                ],
            ]
        if _pydantic_model(tp):
            return self._model(tp)
        if issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple
            hints = _hints(tp, tp)
            return [
                "namedtuple",
                [
                    [field, self.describe(hints.get(field, Any), f"{name}.{field}")]
                    for field in tp._fields
                ],
            ]
        if tp in (list, tuple, set, frozenset, dict) or tp in _LISTS + _SETS + _DICTS:
            return self._generic(tp, (), where, pydantic)
        if _pydantic_secret(tp) or pydantic:
            # Inside a model, pydantic validates what it knows (URLs, emails...).
            return ["class", f"{tp.__module__}.{tp.__qualname__}"]
        raise _unsupported(tp, where)

    def _model(self, tp: Any) -> Any:
        """A pydantic model: each field as stored and loaded, and the settings that count."""
        fields = []
        for field_name, info in tp.model_fields.items():
            where = f"{tp.__qualname__}.{field_name}"
            field: dict[str, Any] = {
                "name": field_name,
                "type": self.describe(info.annotation, where, pydantic=True),
            }
            for option in ("alias", "validation_alias", "serialization_alias", "discriminator"):
                value = getattr(info, option, None)
                if value is not None:
                    field[option] = _value(value, ())
            if info.metadata:
                field["constraints"] = [_value(item, ()) for item in info.metadata]
            if info.exclude:
                field["exclude"] = True
            fields.append(field)
        config = getattr(tp, "model_config", {})
        settings = {key: _value(config[key], ()) for key in _MODEL_SETTINGS if key in config}
        return ["model", fields, settings]


def _value(value: Any, seen: tuple[int, ...]) -> Any:
    """A constant as plain data: what it is, never where it lives in memory."""
    if value is None:
        return ["none"]
    if isinstance(value, enum.Enum):
        return ["enum", _value(value.value, seen)]
    for kind in (bool, int, str):  # bool first: it is an int too
        if isinstance(value, kind):
            return [kind.__name__, kind(value)]
    if isinstance(value, float):
        return ["float", repr(value)]  # repr is exact, and spells nan and inf
    if isinstance(value, bytes | bytearray):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, datetime.timedelta):
        return ["timedelta", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return [type(value).__name__.lower(), str(value)]
    if isinstance(value, re.Pattern):
        return ["pattern", value.pattern, value.flags]
    if id(value) in seen:
        return ["cycle"]
    seen = (*seen, id(value))
    if isinstance(value, tuple | list):
        return [type(value).__name__, [_value(item, seen) for item in value]]
    if isinstance(value, set | frozenset):
        return ["set", canonical_set(_value(item, seen) for item in value)]
    if isinstance(value, Mapping):
        pairs = [[_value(key, seen), _value(item, seen)] for key, item in value.items()]
        return ["map", canonical_set(pairs)]
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        # A class or function by its qualified name (a reducer, a validator...).
        return ["named", f"{getattr(value, '__module__', None)}.{value.__qualname__}"]
    if isinstance(value, msgspec.Meta):
        constraints = {c: _value(getattr(value, c), seen) for c in _META_CONSTRAINTS}
        if value.tz is not None:
            constraints["tz"] = _value(value.tz, seen)
        return ["meta", {c: v for c, v in constraints.items() if v != ["none"]}]
    return ["object", type(value).__name__, _attributes(value, seen)]


def _attributes(value: Any, seen: tuple[int, ...]) -> dict[str, Any]:
    """The public attributes of an object (an annotated-types constraint, a validator...)."""
    if _pydantic_field(value):  # only what pydantic's Annotated[..., Field(...)] checks
        return {
            "alias": _value(value.alias, seen),
            "validation_alias": _value(value.validation_alias, seen),
            "serialization_alias": _value(value.serialization_alias, seen),
            "constraints": [_value(item, seen) for item in value.metadata],
        }
    if dataclasses.is_dataclass(value):
        names = [field.name for field in dataclasses.fields(value)]
    else:
        names = list(getattr(value, "__dict__", {}))
        for cls in type(value).__mro__:
            slots = getattr(cls, "__slots__", ())
            names.extend([slots] if isinstance(slots, str) else slots)
    return {
        name: _value(getattr(value, name), seen)
        for name in sorted(set(names))
        if not name.startswith("_") and hasattr(value, name)
    }


def _struct_fields(tp: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    try:
        return msgspec.structs.fields(tp)
    except Exception as exc:  # unresolvable annotations are a definition error
        raise GraphDefinitionError(
            f"cannot read the type annotations of {tp.__qualname__}: {exc}"
        ) from exc


def _structured(tp: type) -> bool:
    return (
        dataclasses.is_dataclass(tp)
        or issubclass(tp, msgspec.Struct)
        or typing.is_typeddict(tp)
        or hasattr(tp, "__attrs_attrs__")
        or _pydantic_model(tp)
    )


def _pydantic_model(tp: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # a pydantic class means pydantic is imported
    return pydantic is not None and issubclass(tp, pydantic.BaseModel)


def _pydantic_secret(tp: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(tp, pydantic.SecretStr | pydantic.SecretBytes)


def _pydantic_field(value: Any) -> bool:
    fields = sys.modules.get("pydantic.fields")
    return fields is not None and isinstance(value, fields.FieldInfo)


def _unsupported(tp: Any, where: str) -> GraphDefinitionError:
    return GraphDefinitionError(
        f"{where} is annotated {tp!r:.80}, which flowpoint cannot store; a state holds "
        f"scalars, datetimes, UUIDs, decimals, bytes, enums, Literal, lists, tuples, sets, "
        f"dicts, dataclasses, TypedDicts, msgspec Structs, attrs classes, NamedTuples and "
        f"pydantic models"
    )


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
