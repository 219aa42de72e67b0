"""Values as LangGraph's own serializer stored them, read as data: nothing is built.

LangGraph's savers store a value as ``(type, bytes)``: ``"msgpack"`` (MessagePack
whose extension types name a class by module and name, with its arguments),
``"json"`` (LangChain's ``{"lc": ..., "type": "constructor", "id": [...]}``
objects), ``"bytes"``, ``"bytearray"``, ``"null"``, ``"empty"`` (no value) or
``"pickle"``. :func:`read_value` turns them into plain data in which each named
class is a :class:`~flowpoint.langgraph._values.Tagged` value: its name as the
:class:`~flowpoint.langgraph._values.TypeRegistry` knows it, and its data as the
registry stores it. No module is imported and no class is called: a class the
registry does not hold is stored under its name, and loads once the application
registers it. Pickled values are refused.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Final
from uuid import UUID

import ormsgpack

from flowpoint.langgraph._types import TypeRegistry
from flowpoint.langgraph._values import Tagged

__all__ = ["EMPTY", "UnreadableValue", "read_value"]

EMPTY: Final = object()
"""What :func:`read_value` returns for LangGraph's ``"empty"``: the channel has no value."""

# LangGraph's extension codes (langgraph.checkpoint.serde.jsonplus).
_ONE_ARGUMENT, _ARGUMENTS, _KEYWORDS, _METHOD, _PYDANTIC_V1, _PYDANTIC_V2 = range(6)
_NUMPY, _DELTA_SNAPSHOT = 6, 7


class UnreadableValue(ValueError):
    """A stored value that cannot be read as data (pickled, or not what its type says)."""


def read_value(type_: str, data: bytes | None, registry: TypeRegistry) -> Any:
    """The value LangGraph stored as ``(type_, data)``, as plain data and tagged values."""
    if type_ in ("null", "empty") or data is None:
        return EMPTY if type_ == "empty" else None
    if type_ in ("bytes", "bytearray"):
        return bytes(data)
    names = _Names(registry)
    if type_ == "msgpack":
        return _unpack(data, names)
    if type_ == "json":
        try:
            return json.loads(data, object_hook=names.lc_object)
        except (ValueError, RecursionError) as exc:
            raise UnreadableValue(f"a JSON value that does not parse: {exc}") from None
    if type_ == "pickle":
        raise UnreadableValue("a pickled value: flowpoint never unpickles")
    raise UnreadableValue(f"a value of unknown serialization type {type_!r:.40}")


def _unpack(data: bytes, names: _Names) -> Any:
    def ext_hook(code: int, payload: bytes) -> Any:
        inner = _unpack(payload, names)
        if code == _DELTA_SNAPSHOT:
            return Tagged("DeltaSnapshot", inner)
        if code == _NUMPY or not isinstance(inner, list) or len(inner) < 3:
            raise UnreadableValue(f"an extension value of code {code} that flowpoint cannot read")
        module, name, argument = inner[0], inner[1], inner[2]
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnreadableValue("an extension value that names no class")
        return names.tagged(module, name, code, argument, inner[3:])

    try:
        return ormsgpack.unpackb(data, ext_hook=ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
    except UnreadableValue:
        raise
    except (ormsgpack.MsgpackDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise UnreadableValue(f"MessagePack that does not decode: {exc}") from None


class _Names:
    """LangGraph's ``(module, name)`` of a class as the registry names it."""

    def __init__(self, registry: TypeRegistry) -> None:
        self._known = registry.names_by_class_path()

    def name(self, module: str, name: str) -> str:
        return self._known.get((module, name), f"{module}.{name}")

    def tagged(self, module: str, name: str, code: int, argument: Any, rest: list[Any]) -> Any:
        """The value of one of LangGraph's extension values."""
        known = self.name(module, name)
        try:
            if code == _METHOD:
                if known == "datetime" and rest == ["fromisoformat"]:
                    return Tagged("datetime", argument)
            elif known == "uuid":
                return Tagged("uuid", str(UUID(hex=argument)))
            elif known == "date":
                return Tagged("date", dt.date(*argument).isoformat())
            elif known == "time" and isinstance(argument, dict) and argument.get("tzinfo") is None:
                fields = {key: argument[key] for key in ("hour", "minute", "second", "microsecond")}
                return Tagged("time", dt.time(**fields, fold=argument.get("fold", 0)).isoformat())
            elif known == "Send" and isinstance(argument, list):
                node, arg, *timeout = argument
                return Tagged("Send", {"node": node, "arg": arg, "timeout": (timeout or [None])[0]})
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise UnreadableValue(f"a stored {module}.{name} that does not read: {exc}") from None
        return Tagged(known, argument)

    def lc_object(self, value: dict[str, Any]) -> Any:
        """A LangChain ``{"lc": ..., "type": "constructor"}`` object of LangGraph's old JSON."""
        ids = value.get("id")
        if (
            value.get("type") != "constructor"
            or value.get("lc") not in (1, 2)
            or not isinstance(ids, list)
            or not ids
            or not all(isinstance(part, str) for part in ids)
        ):
            return value
        kwargs = value.get("kwargs") or {}
        if value["lc"] == 1:  # LangChain's own classes, by a path of its namespace
            return Tagged(self.name_of_last(ids[-1]), kwargs)
        return Tagged(self.name(".".join(ids[:-1]), ids[-1]), kwargs)

    def name_of_last(self, name: str) -> str:
        return name if name in self._known.values() else f"langchain.{name}"
