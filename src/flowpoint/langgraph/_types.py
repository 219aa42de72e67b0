"""The allowlist of classes a value codec stores and builds back, by name.

Built in: ``set``, ``frozenset``, ``deque``, ``datetime``, ``date``, ``time``,
``timedelta``, ``uuid``, ``decimal``, ``int`` (beyond 64 bits), ``str`` (holding lone
surrogates); LangChain's message classes (``HumanMessage``, ``AIMessage``, ... and their
chunks, ``RemoveMessage``), ``Document``; LangGraph's ``Send``, ``Interrupt``,
``Command``, ``Overwrite``, ``TimeoutPolicy`` and delta-channel snapshots. And the
classes the application registers: pydantic models, dataclasses, enums and named
tuples, by default under ``"<module>.<qualified name>"``. Nothing here is looked up by
anything but its name in the registry: no module is imported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from uuid import UUID

from langchain_core import messages as lc_messages
from langchain_core.documents import Document
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.types import Command, Interrupt, Overwrite, Send, TimeoutPolicy

__all__ = ["Kind", "TypeRegistry", "registry_name", "surrogate_bytes"]


class Kind(NamedTuple):
    """How one class is stored: its name, its data, and how it is built back."""

    name: str
    cls: type
    to_data: Callable[[Any], Any]
    from_data: Callable[[Any], Any]


def registry_name(cls: type) -> str:
    """The name a registered class is stored under by default: ``module.QualifiedName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class TypeRegistry:
    """The classes a :class:`ValueCodec` stores and builds back, by name.

    ``allowed`` adds application classes: an iterable of classes (each stored as
    :func:`registry_name` gives) or a mapping of names to classes (a name that must
    stay the same when the class moves). Each is a pydantic v2 model (stored as its
    ``model_dump()``, built with ``cls(**data)``), a dataclass (its ``init`` fields),
    an ``Enum`` (its value) or a named tuple (its fields). Anything else, a
    second class under one name, or a name without a dot (those are the built-in
    ones) raises ``TypeError``.
    """

    def __init__(self, allowed: Iterable[type] | Mapping[str, type] = ()) -> None:
        self._by_class: dict[type, Kind] = {}
        self._by_name: dict[str, Kind] = {}
        for kind in _builtin_kinds():
            self._add(kind)
        if isinstance(allowed, str | bytes):
            raise TypeError(f"allowed_types takes classes, not {allowed!r:.60}")
        pairs: list[tuple[str | None, object]] = (
            list(allowed.items())
            if isinstance(allowed, Mapping)
            else [(None, cls) for cls in allowed]
        )
        for given, cls in pairs:
            if not isinstance(cls, type):
                raise TypeError(f"allowed_types takes classes, not {cls!r:.60}")
            name = registry_name(cls) if given is None else given
            if not isinstance(name, str) or "." not in name:
                raise TypeError(
                    f"register {cls!r} under a name with a dot (such as 'app.Invoice'), "
                    f"not {name!r}: names without one are flowpoint's own"
                )
            self._add(_application_kind(name, cls))

    def with_classes(self, allowed: Iterable[type]) -> TypeRegistry:
        """A registry with these classes added (those it holds already are skipped)."""
        merged = TypeRegistry()
        merged._by_class, merged._by_name = dict(self._by_class), dict(self._by_name)
        for cls in allowed:
            if cls not in merged._by_class:
                merged._add(_application_kind(registry_name(cls), cls))
        return merged

    @property
    def names(self) -> list[str]:
        """Every name this registry builds values of, sorted."""
        return sorted(self._by_name)

    def names_by_class_path(self) -> dict[tuple[str, str], str]:
        """Each class's ``(module, name)``, as other serializers name it, to its name here."""
        return {
            (kind.cls.__module__, kind.cls.__name__): kind.name for kind in self._by_name.values()
        }

    def kind_of(self, cls: type) -> Kind | None:
        return self._by_class.get(cls)

    def kind_named(self, name: str) -> Kind | None:
        return self._by_name.get(name)

    def _add(self, kind: Kind) -> None:
        known = self._by_name.get(kind.name)
        if known is not None and known.cls is not kind.cls:
            raise TypeError(
                f"the name {kind.name!r} is taken by {known.cls!r}; register {kind.cls!r} "
                f"under another name"
            )
        if kind.cls in self._by_class and self._by_class[kind.cls].name != kind.name:
            raise TypeError(f"{kind.cls!r} is registered twice, under two names")
        self._by_name[kind.name] = kind
        self._by_class[kind.cls] = kind


def surrogate_bytes(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates kept."""
    return text.encode("utf-8", "surrogatepass")


def _str_of(data: Any) -> str:
    if type(data) is not str:
        raise TypeError(f"expected a string, got {type(data).__name__}")
    return data


def _kw(data: Any) -> dict[str, Any]:
    if type(data) is not dict:
        raise TypeError(f"expected a map of fields, got {type(data).__name__}")
    return data


def _from_surrogates(data: Any) -> str:
    if type(data) is not bytes:
        raise TypeError("expected bytes")
    return data.decode("utf-8", "surrogatepass")


def _timedelta(data: Any) -> dt.timedelta:
    days, seconds, microseconds = data
    return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _builtin_kinds() -> list[Kind]:
    kinds = [
        Kind("set", set, list, set),
        Kind("frozenset", frozenset, list, frozenset),
        Kind("deque", deque, list, deque),
        Kind("datetime", dt.datetime, dt.datetime.isoformat, _iso(dt.datetime)),
        Kind("date", dt.date, dt.date.isoformat, _iso(dt.date)),
        Kind("time", dt.time, dt.time.isoformat, _iso(dt.time)),
        Kind(
            "timedelta",
            dt.timedelta,
            lambda v: [v.days, v.seconds, v.microseconds],
            _timedelta,
        ),
        Kind("uuid", UUID, str, lambda data: UUID(_str_of(data))),
        Kind("decimal", decimal.Decimal, str, lambda data: decimal.Decimal(_str_of(data))),
        # Found by value, never by class: plain ints and strings stay plain, and
        # only an int beyond 64 bits or a str with a lone surrogate is tagged.
        Kind("int", int, str, lambda data: int(_str_of(data))),
        Kind("str", str, surrogate_bytes, _from_surrogates),
        Kind("DeltaSnapshot", _DeltaSnapshot, lambda v: v.value, _DeltaSnapshot),
        Kind(
            "Send",
            Send,
            lambda v: {"node": v.node, "arg": v.arg, "timeout": v.timeout},
            lambda d: Send(_kw(d)["node"], d["arg"], timeout=d.get("timeout")),
        ),
        Kind(
            "Interrupt",
            Interrupt,
            lambda v: {"value": v.value, "id": v.id, "response_schema": v.response_schema},
            lambda d: Interrupt(_kw(d)["value"], d["id"], response_schema=d.get("response_schema")),
        ),
        _dataclass_kind("Command", Command),
        _dataclass_kind("Overwrite", Overwrite),
        _dataclass_kind("TimeoutPolicy", TimeoutPolicy),
        _pydantic_kind("Document", Document),
    ]
    for name in sorted(lc_messages.__all__):
        cls = getattr(lc_messages, name)
        if (
            isinstance(cls, type)
            and issubclass(cls, lc_messages.BaseMessage)
            and cls not in (lc_messages.BaseMessage, lc_messages.BaseMessageChunk)
        ):
            kinds.append(_pydantic_kind(name, cls))
    return kinds


def _iso(cls: Any) -> Callable[[Any], Any]:
    return lambda data: cls.fromisoformat(_str_of(data))


def _application_kind(name: str, cls: Any) -> Kind:
    if not isinstance(cls, type):
        raise TypeError(f"allowed_types takes classes, not {cls!r:.60}")
    if issubclass(cls, enum.Enum):
        return Kind(name, cls, lambda v: v.value, cls)
    if callable(getattr(cls, "model_dump", None)) and hasattr(cls, "model_fields"):
        return _pydantic_kind(name, cls)
    if dataclasses.is_dataclass(cls):
        return _dataclass_kind(name, cls)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return Kind(name, cls, lambda v: v._asdict(), lambda d: cls(**_kw(d)))
    raise TypeError(
        f"{cls.__qualname__} is not a pydantic model, dataclass, enum or named tuple, "
        f"which is what allowed_types can hold"
    )


def _pydantic_kind(name: str, cls: Any) -> Kind:
    return Kind(name, cls, lambda v: v.model_dump(), lambda d: cls(**_kw(d)))


def _dataclass_kind(name: str, cls: Any) -> Kind:
    fields = [field.name for field in dataclasses.fields(cls) if field.init]
    return Kind(
        name,
        cls,
        lambda v: {field: getattr(v, field) for field in fields},
        lambda d: cls(**_kw(d)),
    )
