"""What ``show`` says of parallel work: what runs next, and what tasks already wrote.

A checkpoint's cursor (:attr:`~flowpoint.Checkpoint.cursor`) names the tasks of
the next superstep (nodes, and each ``Send`` with its argument) and the joins
under way; its pending writes are what tasks of that superstep saved before the
superstep finished: each task's update, or the error it raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from flowpoint.checkpoint import TaskWrite
from flowpoint.cli._output import table, to_plain
from flowpoint.graph._runner import ERROR_CHANNEL, UPDATE_CHANNEL

__all__ = ["cursor_rows", "pending_json", "pending_table"]

_SEND_TASK = re.compile(r"(?s)(.+)#\d+")
"""A task id of a ``Send``: its node, ``#`` and its index (``summarise#3``)."""


def _node_of(task_id: str) -> str:
    found = _SEND_TASK.fullmatch(task_id)
    return task_id if found is None else found.group(1)


def _compact(value: Any) -> str:
    return json.dumps(to_plain(value), ensure_ascii=False, separators=(", ", ": "))


def _error(write: TaskWrite) -> str | None:
    """``type: message`` of an error the task raised; ``None`` for another write."""
    if write.channel != ERROR_CHANNEL:
        return None
    value = write.value
    if isinstance(value, Mapping) and {"type", "message"} <= value.keys():
        return f"{value['type']}: {' '.join(str(value['message']).split())}"
    return _compact(value)


def _fields(write: TaskWrite) -> list[str] | None:
    """The state fields an update writes, sorted; ``None`` for another write."""
    if write.channel != UPDATE_CHANNEL or not isinstance(write.value, Mapping):
        return None
    return sorted(str(key) for key in write.value)


def pending_json(writes: list[TaskWrite]) -> list[dict[str, Any]]:
    """The writes as JSON-ready values, in a fixed key order."""
    return [
        {
            "task_id": write.task_id,
            "node": _node_of(write.task_id),
            "index": write.index,
            "channel": write.channel,
            "fields": _fields(write),
            "error": _error(write),
            "value": to_plain(write.value),
        }
        for write in writes
    ]


def pending_table(writes: list[TaskWrite]) -> Table:
    """The writes for people: who wrote what, and which task failed with what."""
    grid = table("task", "node", "channel", "wrote", title=f"pending writes ({len(writes)})")
    for write in writes:
        error, fields = _error(write), _fields(write)
        if error is not None:
            wrote = Text(f"failed: {error}", style="red")
        elif fields is not None:
            wrote = Text(", ".join(fields) or "nothing")
        else:
            wrote = Text(_compact(write.value))
        grid.add_row(write.task_id, _node_of(write.task_id), write.channel, wrote)
    return grid


def cursor_rows(cursor: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``show``'s lines for a stored cursor: ``("next tasks", ...)`` and ``("joins", ...)``.

    None for an empty cursor (``next node`` says it all). A cursor of a shape
    the runner does not write is shown as it is, as JSON.
    """
    if not cursor:
        return []
    tasks, joins = cursor.get("tasks", []), cursor.get("joins", [])
    try:
        rows = []
        if tasks:
            rows.append(("next tasks", "; ".join(_task(task) for task in tasks)))
        if joins:
            rows.append(("joins", "; ".join(_join(join) for join in joins)))
    except (TypeError, KeyError, AttributeError):
        return [("cursor", _compact(cursor))]
    return rows


def _task(task: Mapping[str, Any]) -> str:
    node = str(task["node"])
    if task.get("send") is None:
        return node
    return f"{node} #{int(task['send'])} with {_compact(task.get('arg'))}"


def _join(join: Mapping[str, Any]) -> str:
    sources = ", ".join(str(source) for source in join["from"])
    done = ", ".join(str(source) for source in join["done"])
    return f"{join['to']} after {sources} (done: {done or 'none'})"
