"""Applying what a node returns (or what a human sends on resume) to the state."""

from __future__ import annotations

import dataclasses
import typing
import warnings
from collections.abc import Mapping
from typing import Any

import msgspec

from flowpoint.errors import InvalidUpdate

__all__ = ["apply_update"]


def apply_update(state: Any, update: Any, state_type: Any, source: str) -> Any:
    """The state after ``update``.

    ``None`` keeps the state, a whole state replaces it, and a dict of fields is
    merged into it (keys of a dict state, fields of a dataclass, ``msgspec.Struct``
    or pydantic model). Anything else raises
    :class:`~flowpoint.errors.InvalidUpdate`, naming ``source``.
    """
    if update is None:
        return state
    cls = _runtime_class(state_type)
    if cls is dict:
        if not isinstance(update, Mapping):
            raise InvalidUpdate(
                f"{source} returned a {type(update).__qualname__}; a dict state takes a dict "
                f"of keys to merge, or None"
            )
        if typing.is_typeddict(state_type):
            # The codec drops keys a TypedDict does not declare: refuse them here, or
            # they would vanish from the state at the next resume.
            known = state_type.__required_keys__ | state_type.__optional_keys__
            unknown = [key for key in update if key not in known]
            if unknown:
                raise InvalidUpdate(
                    f"{source} returned an update of unknown key(s) {unknown} for "
                    f"{state_type.__qualname__}"
                )
            _check_values(state_type, update, source)
        return {**state, **update}
    if cls is not None and isinstance(update, cls):
        return update
    if not isinstance(update, Mapping):
        expected = cls.__qualname__ if cls is not None else repr(state_type)
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
        _check_values(type(state), update, source)
    try:
        return _replace(state, update)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidUpdate(f"{source} returned an update that does not fit: {exc}") from exc


def _check_values(owner: Any, update: Mapping[str, Any], source: str) -> None:
    """Refuse a value that does not fit its field's annotation.

    Now, rather than when the saved checkpoint fails to load.
    """
    try:
        hints = typing.get_type_hints(owner)
    except Exception:  # annotations that do not resolve: the codec judges on save
        return
    for key, value in update.items():
        hint = hints.get(key)
        if hint is None:
            continue
        try:
            msgspec.convert(value, hint)
        except msgspec.ValidationError as exc:
            raise InvalidUpdate(
                f"{source} set {key!r} to {value!r:.60}, which does not fit its type: {exc}"
            ) from None
        except TypeError:
            continue  # a type msgspec cannot check; the codec judges on save


def _is_pydantic(state: Any) -> bool:
    return isinstance(getattr(type(state), "model_fields", None), dict)


def _runtime_class(state_type: Any) -> type | None:
    if typing.is_typeddict(state_type):
        return dict
    origin = typing.get_origin(state_type) or state_type
    return origin if isinstance(origin, type) and origin is not object else None


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
