"""What the codec and the graph both ask of a state type: its class, and its name for people.

Both layers import this module; it imports nothing of flowpoint's, so that
neither layer depends on the other for it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

__all__ = ["origin", "runtime_class", "type_name"]


def origin(tp: Any) -> Any:
    """The class behind a type, for comparing two: ``dict`` for ``dict[str, Any]``.

    >>> origin(dict[str, int]), origin(int)
    (<class 'dict'>, <class 'int'>)
    """
    return typing.get_origin(tp) or tp


def runtime_class(state_type: Any) -> type | None:
    """The class every state of ``state_type`` is an instance of, where that says something.

    ``dict`` for a TypedDict; ``None`` for ``Any``, ``object`` and what is not a
    class (a union, say), which every value or no single class fits.

    >>> runtime_class(list[int]), runtime_class(Any), runtime_class(int | str)
    (<class 'list'>, None, None)
    """
    if typing.is_typeddict(state_type):
        return dict
    found = origin(state_type)
    # A union's origin is a class too (types.UnionType), but no state is an instance of it.
    if found in (typing.Union, types.UnionType):
        return None
    if not isinstance(found, type) or found is object or found is Any:
        return None
    return found


def type_name(tp: Any) -> str:
    """``tp``'s qualified name if it is a class, else its ``repr`` (``list[int]``).

    >>> type_name(int), type_name(list[int])
    ('int', 'list[int]')
    """
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)
