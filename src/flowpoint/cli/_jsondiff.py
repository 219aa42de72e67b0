"""What changed between two JSON-like values (dicts, lists and scalars).

>>> [c.describe() for c in diff_values({"a": 1, "b": [1]}, {"a": 2, "b": [1, 3]})]
['~ $.a: 1 -> 2', '+ $.b[1]: 3']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "diff_values", "same_value"]

ChangeKind = Literal["added", "removed", "changed"]

_MISSING: Any = object()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: at ``path`` (``$.findings[2]``), a value added, removed or changed."""

    path: str
    kind: ChangeKind
    old: Any = _MISSING
    new: Any = _MISSING

    def as_json(self) -> dict[str, Any]:
        """The change as ``{"path", "change", "old"?, "new"?}``: absent sides are left out."""
        document: dict[str, Any] = {"path": self.path, "change": self.kind}
        if self.old is not _MISSING:
            document["old"] = self.old
        if self.new is not _MISSING:
            document["new"] = self.new
        return document

    def describe(self, width: int = 120) -> str:
        """One line: ``+ path: new``, ``- path: old`` or ``~ path: old -> new``."""
        if self.kind == "added":
            return f"+ {self.path}: {_short(self.new, width)}"
        if self.kind == "removed":
            return f"- {self.path}: {_short(self.old, width)}"
        return f"~ {self.path}: {_short(self.old, width)} -> {_short(self.new, width)}"


def _short(value: Any, width: int) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.match(key) else f"{path}[{json.dumps(key)}]"


def same_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``1``, ``1.0`` and ``True`` are three different values."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def diff_values(old: Any, new: Any, path: str = "$") -> list[Change]:
    """The changes that turn ``old`` into ``new``, in document order.

    Dicts are compared key by key (the old value's keys first, then keys only the
    new one has); lists index by index, so an item appended shows as ``added`` at
    the end and a shortened list as ``removed`` items. A value whose kind changed
    (a list that became a dict) is one ``changed``.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key, value in old.items():
            where = _key_path(path, str(key))
            if key in new:
                changes.extend(diff_values(value, new[key], where))
            else:
                changes.append(Change(where, "removed", old=value))
        for key, value in new.items():
            if key not in old:
                changes.append(Change(_key_path(path, str(key)), "added", new=value))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index, (a, b) in enumerate(zip(old, new, strict=False)):
            changes.extend(diff_values(a, b, f"{path}[{index}]"))
        for index in range(len(new), len(old)):
            changes.append(Change(f"{path}[{index}]", "removed", old=old[index]))
        for index in range(len(old), len(new)):
            changes.append(Change(f"{path}[{index}]", "added", new=new[index]))
        return changes
    if same_value(old, new):
        return []
    return [Change(path, "changed", old=old, new=new)]
