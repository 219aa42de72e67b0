"""A graph's state type: applying updates to its states, and checking whole states.

Everything here runs before the runner saves anything, so that a state the codec
could store but never load back (a field of the wrong type, a key its
``TypedDict`` does not declare) is refused with the node's name instead of
ending the trace's life at its next resume.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import sys
import typing
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import msgspec

from flowpoint.errors import InvalidUpdate

__all__ = ["StateType"]

# Scalars msgspec checks as they are: a UUID in a str field is refused, as it is
# when a partial update sets it.
_NATIVE = (
    bytes,
    bytearray,
    memoryview,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
)
_ANY = (Any, object)


class StateType:
    """The runner's view of a graph's state type.

    :meth:`apply` merges what a node or a human returns into the state;
    :meth:`check` refuses a whole state that would not load back as the state
    type. Both raise :class:`~flowpoint.errors.InvalidUpdate` (also a
    ``TypeError``), naming where the state came from and the field at fault.

    A plain ``dict`` state (``dict``, ``dict[str, Any]``) holds anything the codec
    can encode, so its values are not checked: applying an update to it costs a
    dict merge.
    """

    __slots__ = (
        "_field_types",
        "_free",
        "_projected",
        "_typeddict",
        "_values",
        "_wire",
        "cls",
        "state_type",
    )

    def __init__(self, state_type: Any) -> None:
        self.state_type = state_type
        self.cls = _runtime_class(state_type)
        self._typeddict = typing.is_typeddict(state_type)
        self._projected = callable(getattr(state_type, "__flowpoint_snapshot__", None)) and (
            callable(getattr(state_type, "__flowpoint_restore__", None))
        )
        self._wire: Any = state_type
        if self._projected:
            self._wire = _hints(state_type.__flowpoint_snapshot__).get("return", Any)
        self._field_types: dict[str, Any] = {}
        # The type of every value of a dict[str, V] state (None: not such a state).
        self._values: Any = None
        if self._typeddict or self.cls is not dict:
            self._field_types = _hints(state_type)
        elif typing.get_args(state_type):
            self._values = typing.get_args(state_type)[-1]
        self._free = not self._typeddict and (
            self._wire in _ANY or (self.cls is dict and self._values in (None, *_ANY))
        )

    def apply(self, state: Any, update: Any, source: str) -> Any:
        """The state after ``update``.

        ``None`` keeps the state, a whole state replaces it (and is checked as
        :meth:`check` does), and a dict of fields is merged into it (keys of a dict
        state, fields of a dataclass, ``msgspec.Struct`` or pydantic model), each
        value checked against its field's type. Anything else raises
        :class:`~flowpoint.errors.InvalidUpdate`, naming ``source``.
        """
        if update is None:
            return state
        cls = self.cls
        if cls is dict:
            if not isinstance(update, Mapping):
                raise InvalidUpdate(
                    f"{source} returned a {type(update).__qualname__}; a dict state takes a dict "
                    f"of keys to merge, or None"
                )
            if self._typeddict:
                unknown = [key for key in update if key not in self._field_types]
                if unknown:
                    raise InvalidUpdate(
                        f"{source} returned an update of unknown key(s) {unknown} for "
                        f"{self.state_type.__qualname__}"
                    )
                self._check_fields(update, source)
            elif not self._free:
                self._check_fields(update, source)
            return {**state, **update}
        if cls is not None and isinstance(update, cls):
            self.check(update, f"{source} returned a {type(update).__qualname__} that")
            return update
        if not isinstance(update, Mapping):
            expected = cls.__qualname__ if cls is not None else repr(self.state_type)
            raise InvalidUpdate(
                f"{source} returned a {type(update).__qualname__}; expected a {expected}, "
                f"a dict of its fields to change, or None"
            )
        fields = _field_names(state)
        unknown = [key for key in update if key not in fields]
        if unknown:
            raise InvalidUpdate(
                f"{source} returned an update of unknown field(s) {unknown} for "
                f"{type(state).__qualname__}"
            )
        if not _is_pydantic(state):  # pydantic validates the merged model itself
            self._check_fields(update, source)
        try:
            return _replace(state, update)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidUpdate(f"{source} returned an update that does not fit: {exc}") from exc

    def check(self, state: Any, source: str) -> None:
        """Refuse a whole ``state`` that would not load back as the state type.

        It must be an instance of the state type, every value must fit its
        field's annotation (nested values too), and it must hold nothing that
        loading would drop silently (a key a ``TypedDict`` does not declare, a
        field of a subclass). ``source`` says where the state came from: the
        message reads ``"{source} does not fit ..."``.
        """
        cls = self.cls
        if cls is not None and not isinstance(state, cls):
            raise InvalidUpdate(
                f"{source} does not fit {_type_name(self.state_type)}: it is a "
                f"{type(state).__qualname__}"
            )
        if self._free:
            return
        value = state
        if self._projected:
            try:
                value = state.__flowpoint_snapshot__()
            except Exception as exc:  # user code: whatever it raises, the state cannot be saved
                raise InvalidUpdate(f"{source} cannot be stored: {exc}") from exc
        if self._values is not None:  # a dict[str, V]: name the key whose value is wrong
            for key, item in value.items():
                problem = _misfit(item, self._values)
                if problem is not None:
                    raise InvalidUpdate(
                        f"{source} does not fit {_type_name(self.state_type)}: the value of "
                        f"{key!r}: {problem}"
                    )
            return
        problem = _misfit(value, self._wire)
        if problem is not None:
            raise InvalidUpdate(f"{source} does not fit {_type_name(self.state_type)}: {problem}")

    def _check_fields(self, update: Mapping[str, Any], source: str) -> None:
        """Refuse a value of an update that does not fit its field's annotation."""
        for key, value in update.items():
            hint = self._values if self._values is not None else self._field_types.get(key)
            if hint is None or hint in _ANY:
                continue
            problem = _misfit(value, hint)
            if problem is not None:
                raise InvalidUpdate(
                    f"{source} set {key!r} to {value!r:.60}, which does not fit its type: {problem}"
                )


def _misfit(value: Any, tp: Any) -> str | None:
    """What is wrong with ``value`` as a ``tp`` once stored and loaded, or ``None``.

    The value goes to plain data as the codec would store it, then back into
    ``tp`` as a load would; data that the way back drops (keys a ``TypedDict``
    does not declare, fields only a subclass has) is named too.
    """
    try:
        stored = msgspec.to_builtins(value, builtin_types=_NATIVE, enc_hook=_to_builtins)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return f"it holds what flowpoint cannot store ({exc})"
    try:
        loaded = msgspec.convert(stored, tp, dec_hook=_from_builtins, builtin_types=_NATIVE)
    except msgspec.ValidationError as exc:
        return str(exc)
    except (TypeError, RecursionError):  # a type msgspec cannot check: the codec judges
        return None
    try:
        again = msgspec.to_builtins(loaded, builtin_types=_NATIVE, enc_hook=_to_builtins)
        same = bool(stored == again)
    except Exception:  # an odd equality: fall back to looking for dropped keys
        same = False
    if same:
        return None
    dropped = _dropped(stored, again, "$")
    if dropped is None:
        return None  # only conversions differ (an int in a float field, a set's order)
    return f"{dropped} is not a field of its type, and loading the state would drop it"


def _dropped(stored: Any, loaded: Any, path: str) -> str | None:
    """The first key ``stored`` has at some depth and ``loaded`` lacks there."""
    if isinstance(stored, dict) and isinstance(loaded, dict):
        for key, value in stored.items():
            where = f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"
            if key not in loaded:
                return where
            found = _dropped(value, loaded[key], where)
            if found is not None:
                return found
    elif isinstance(stored, list) and isinstance(loaded, list) and len(stored) == len(loaded):
        for index, (item, back) in enumerate(zip(stored, loaded, strict=True)):
            found = _dropped(item, back, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _to_builtins(value: Any) -> Any:
    """Pydantic models and secrets as the codec stores them; nothing else."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="python", by_alias=True, warnings=False)
        if isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
            return value.get_secret_value()
        try:  # types pydantic defines (URLs, emails...) go as pydantic writes them
            return sys.modules["pydantic_core"].to_jsonable_python(value)
        except ValueError:
            pass
    raise TypeError(f"flowpoint cannot store a value of type {type(value).__qualname__}")


def _from_builtins(tp: Any, raw: Any) -> Any:
    """Pydantic models validate what a load would give them; secrets wrap their value."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(tp, type):
        if issubclass(tp, pydantic.BaseModel):
            model: Any = tp
            try:
                return model.model_validate(raw)
            except pydantic.ValidationError as exc:  # one line per error, not pydantic's page
                raise ValueError(
                    "; ".join(
                        f"{'.'.join(map(str, error['loc'])) or tp.__name__}: {error['msg']}"
                        for error in exc.errors()
                    )
                ) from None
        if issubclass(tp, pydantic.SecretStr | pydantic.SecretBytes):
            return tp(raw)
    raise TypeError(f"flowpoint does not know how to load {_type_name(tp)}")


def _hints(owner: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(owner)
    except Exception:  # annotations that do not resolve: the fingerprint has refused them
        return {}


def _is_pydantic(state: Any) -> bool:
    return isinstance(getattr(type(state), "model_fields", None), dict)


def _runtime_class(state_type: Any) -> type | None:
    if typing.is_typeddict(state_type):
        return dict
    origin = typing.get_origin(state_type) or state_type
    if not isinstance(origin, type) or origin is object or origin is Any:
        return None
    return origin


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def _field_names(state: Any) -> set[str]:
    if isinstance(state, msgspec.Struct):
        return set(state.__struct_fields__)
    if dataclasses.is_dataclass(state):
        return {field.name for field in dataclasses.fields(state)}
    model_fields = getattr(type(state), "model_fields", None)
    if isinstance(model_fields, dict):  # a pydantic model: names and aliases both work
        return set(model_fields) | {info.alias for info in model_fields.values() if info.alias}
    raise InvalidUpdate(
        f"a {type(state).__qualname__} state cannot be updated field by field; "
        f"return a whole state instead"
    )


def _replace(state: Any, update: Mapping[str, Any]) -> Any:
    if isinstance(state, msgspec.Struct):
        return msgspec.structs.replace(state, **update)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.replace(state, **update)
    # A pydantic model: set the fields by name, then validate the whole model by alias,
    # as constructing it would (model_copy alone would not check the new values).
    model_fields = type(state).model_fields
    by_alias = {info.alias: name for name, info in model_fields.items() if info.alias}
    named = {by_alias.get(key, key): value for key, value in update.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a wrong value warns while dumping; validation refuses it
        merged = state.model_copy(update=named).model_dump(by_alias=True)
    return type(state).model_validate(merged)
