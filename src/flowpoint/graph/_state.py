"""A graph's state type: applying updates to its states, and checking whole states.

Everything here runs before the runner saves anything, so that a state the codec
could store but never load back (a field of the wrong type, a key its
``TypedDict`` does not declare) is refused with the node's name instead of
ending the trace's life at its next resume.

A field annotated ``Annotated[T, reducer]`` (any binary callable, such as
``operator.add``) combines what is written to it: ``new = reducer(old, value)``.
That is how the updates of parallel tasks to one field add up; without a
reducer, two tasks of one superstep writing the same field is an error.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import inspect
import sys
import typing
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from flowpoint._types import runtime_class, type_name
from flowpoint.errors import GraphDefinitionError, InvalidUpdate

__all__ = ["Reducer", "StateType", "WholeState", "from_plain", "to_plain"]

Reducer = Callable[[Any, Any], Any]
"""A field's reducer: ``reducer(old, value)`` is the field's new value."""

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
_MISSING: Any = object()
# What plain data is: values as MessagePack holds them, which is how the runner's
# cursor and pending writes are stored.
_plain_encoder = msgspec.msgpack.Encoder(enc_hook=lambda value: _stored_form(value))
_plain_decoder = msgspec.msgpack.Decoder()


@dataclasses.dataclass(frozen=True, slots=True)
class WholeState:
    """An update that replaces the state with ``state``: no field merged, no reducer run.

    What a subgraph node that shares its parent's state type returns: the
    subgraph's own reducers combined what its nodes wrote already, so running
    the parent's again would count it twice. A dict state could not say so by
    itself: a dict update is merged.
    """

    state: Any


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
        "_aliases",
        "_field_types",
        "_free",
        "_projected",
        "_typeddict",
        "_values",
        "_wire",
        "cls",
        "reducers",
        "state_type",
    )

    def __init__(self, state_type: Any) -> None:
        self.state_type = state_type
        self.cls = runtime_class(state_type)
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
        self.reducers: dict[str, Reducer] = _reducers(state_type, self._values, self._field_types)
        # A pydantic model's updates may name a field by its alias.
        self._aliases: dict[str, str] = {}
        model_fields = getattr(state_type, "model_fields", None)
        if isinstance(model_fields, dict):
            self._aliases = {info.alias: name for name, info in model_fields.items() if info.alias}

    def field_name(self, key: str) -> str:
        """The field an update's key names (a pydantic alias names its field)."""
        return self._aliases.get(key, key)

    def apply(self, state: Any, update: Any, source: str) -> Any:
        """The state after ``update``.

        ``None`` keeps the state, a whole state replaces it (and is checked as
        :meth:`check` does), and a dict of fields is merged into it (keys of a dict
        state, fields of a dataclass, ``msgspec.Struct`` or pydantic model), each
        value checked against its field's type; a field with a reducer gets
        ``reducer(old, value)``, checked too. Anything else raises
        :class:`~flowpoint.errors.InvalidUpdate`, naming ``source``.
        """
        if update is None:
            return state
        if isinstance(update, WholeState):
            self.check(update.state, f"{source} returned a state that")
            return update.state
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
            if self.reducers:
                update = self._reduce(update, state.get, source)
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
        if self.reducers:
            update = self._reduce(
                update, lambda key, default: getattr(state, self.field_name(key), default), source
            )
        try:
            return _replace(state, update)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidUpdate(f"{source} returned an update that does not fit: {exc}") from exc

    def merge(self, state: Any, updates: Sequence[tuple[str, Any]]) -> Any:
        """The state after a superstep: each task's update applied, in the order given.

        ``updates`` holds ``(task_id, update)`` pairs in canonical order. Two
        tasks writing a field without a reducer, or a task returning a whole state
        while another returns anything but ``None``, raise
        :class:`~flowpoint.errors.InvalidUpdate` naming both tasks (and the field).
        """
        changes = [(task, update) for task, update in updates if update is not None]
        if len(changes) > 1:
            writers: dict[str, str] = {}
            for task, update in changes:
                if not isinstance(update, Mapping):
                    other = next(t for t, _ in changes if t != task)
                    raise InvalidUpdate(
                        f"node {task!r} returned a whole state while node {other!r} updated "
                        f"the state in the same superstep; parallel nodes return dicts of "
                        f"the fields they change",
                        tasks=(task, other),
                    )
                for key in update:
                    name = self.field_name(key) if isinstance(key, str) else key
                    if name in self.reducers:
                        continue
                    if name in writers:
                        raise InvalidUpdate(
                            f"nodes {writers[name]!r} and {task!r} both wrote {name!r} in the "
                            f"same superstep; give the field a reducer "
                            f"(Annotated[..., operator.add]) to combine them, or write it "
                            f"from one of them",
                            field=name,
                            tasks=(writers[name], task),
                        )
                    writers[name] = task
        for task, update in changes:
            state = self.apply(state, update, f"node {task!r}")
        return state

    def decode_update(self, update: Any) -> Any:
        """An update read back as plain data (see :func:`to_plain`), typed as the fields are.

        A dict's values are converted to their fields' types (a dataclass field
        comes back as the dataclass); a whole state's plain data to the state
        type. Raises :class:`~flowpoint.errors.InvalidUpdate` for data that does not fit.
        """
        if update is None:
            return None
        if not isinstance(update, Mapping):
            raise InvalidUpdate(f"a stored update is a {type(update).__qualname__}, not a dict")
        typed: dict[str, Any] = {}
        for key, value in update.items():
            hint = self._values if self._values is not None else self._field_types.get(key)
            if hint is None and isinstance(key, str):
                hint = self._field_types.get(self.field_name(key))
            typed[key] = value if hint is None or hint in _ANY else from_plain(value, hint)
        return typed

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
                f"{source} does not fit {type_name(self.state_type)}: it is a "
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
                        f"{source} does not fit {type_name(self.state_type)}: the value of "
                        f"{key!r}: {problem}"
                    )
            return
        problem = _misfit(value, self._wire)
        if problem is not None:
            raise InvalidUpdate(f"{source} does not fit {type_name(self.state_type)}: {problem}")

    def _reduce(
        self, update: Mapping[str, Any], old: Callable[[str, Any], Any], source: str
    ) -> Mapping[str, Any]:
        """``update`` with the value of each field that has a reducer combined with the old."""
        reduced = dict(update)
        for key, value in update.items():
            name = self.field_name(key)
            reducer = self.reducers.get(name)
            if reducer is None:
                continue
            current = old(key, _MISSING)
            if current is _MISSING:
                continue  # nothing to combine with yet: the value is the field's first
            try:
                combined = reducer(current, value)
            except Exception as exc:  # user code: whatever it raises, the update cannot apply
                raise InvalidUpdate(
                    f"{source} set {key!r}, and its reducer {_qualname(reducer)} raised "
                    f"{type(exc).__name__}: {exc}",
                    field=name,
                ) from exc
            hint = self._field_types.get(name)
            if hint is not None and hint not in _ANY:
                problem = _misfit(combined, hint)
                if problem is not None:
                    raise InvalidUpdate(
                        f"{source} set {key!r}, and its reducer {_qualname(reducer)} returned "
                        f"{combined!r:.60}, which does not fit its type: {problem}",
                        field=name,
                    )
            reduced[key] = combined
        return reduced

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


def to_plain(value: Any) -> Any:
    """``value`` as plain data: what MessagePack gives back after storing it.

    Dicts, lists, strings, numbers, bytes, datetimes and ``None``: dataclasses,
    Structs and pydantic models become dicts, tuples and sets lists, UUIDs and
    decimals strings, enums their values. Raises ``TypeError`` (or
    ``ValueError``, ``OverflowError``) for what flowpoint cannot store.
    """
    return _plain_decoder.decode(_plain_encoder.encode(value))


def from_plain(value: Any, tp: Any) -> Any:
    """Plain data (see :func:`to_plain`) back as a ``tp``: a dict as a dataclass, a str as a UUID.

    Raises :class:`~flowpoint.errors.InvalidUpdate` if it does not fit.
    """
    try:
        return msgspec.convert(value, tp, dec_hook=_from_builtins)
    except (msgspec.ValidationError, ValueError) as exc:
        raise InvalidUpdate(f"{value!r:.60} does not fit {type_name(tp)}: {exc}") from exc
    except (TypeError, RecursionError):  # a type msgspec cannot convert to: left as it is
        return value


def _stored_form(value: Any) -> Any:
    """For :func:`to_plain`: pydantic models as the codec stores them; secrets refused."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
        raise TypeError(f"a pydantic {type(value).__name__} is kept out of the runner's records")
    return _to_builtins(value)


def _reducers(state_type: Any, values: Any, field_types: Mapping[str, Any]) -> dict[str, Reducer]:
    """The reducer of each field that has one (``Annotated[T, reducer]``)."""
    if values is not None and _reducer_of(values, "the values of the dict state") is not None:
        raise GraphDefinitionError(
            f"{type_name(state_type)}: a reducer applies to a declared field; declare the "
            f"state as a TypedDict, a dataclass, a Struct or a pydantic model"
        )
    if not field_types:
        return {}
    try:
        hints = typing.get_type_hints(state_type, include_extras=True)
    except Exception:  # annotations that do not resolve: the fingerprint has refused them
        return {}
    found: dict[str, Reducer] = {}
    for name in field_types:
        hint = hints.get(name)
        if typing.get_origin(hint) in (typing.Required, typing.NotRequired):
            hint = typing.get_args(hint)[0]
        reducer = _reducer_of(hint, f"{type_name(state_type)}.{name}")
        if reducer is not None:
            found[name] = reducer
    return found


def _reducer_of(hint: Any, where: str) -> Reducer | None:
    """The reducer in an ``Annotated`` hint's metadata: its one callable that is not a class."""
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    candidates = [m for m in hint.__metadata__ if callable(m) and not isinstance(m, type)]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise GraphDefinitionError(
            f"{where} is annotated with {len(candidates)} callables "
            f"({', '.join(map(_qualname, candidates))}); a field has at most one reducer"
        )
    reducer: Reducer = candidates[0]
    try:
        inspect.signature(reducer).bind(None, None)
    except TypeError as exc:
        raise GraphDefinitionError(
            f"the reducer {_qualname(reducer)} of {where} cannot be called as "
            f"reducer(old, value): {exc}"
        ) from None
    except ValueError:  # no signature to read (some builtins): taken as binary
        pass
    return reducer


def _qualname(function: Any) -> str:
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None)
    return f"{module}.{name}" if module else str(name)


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
    raise TypeError(f"flowpoint does not know how to load {type_name(tp)}")


def _hints(owner: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(owner)
    except Exception:  # annotations that do not resolve: the fingerprint has refused them
        return {}


def _is_pydantic(state: Any) -> bool:
    return isinstance(getattr(type(state), "model_fields", None), dict)


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
