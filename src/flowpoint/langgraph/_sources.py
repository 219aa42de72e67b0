"""The tables of LangGraph's ``SqliteSaver`` and ``PostgresSaver``, read without LangGraph.

Each source lists its threads and yields a thread's checkpoints namespace by
namespace, oldest id first, each with its metadata and its pending writes, and
with values read by :func:`~flowpoint.langgraph._lgformat.read_value` (nothing
is unpickled, imported or built). Both open their database read-only.
"""

from __future__ import annotations

import abc
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

from flowpoint.langgraph._lgformat import EMPTY, UnreadableValue, read_value
from flowpoint.langgraph._types import TypeRegistry

__all__ = ["SourceCheckpoint", "SourceWrite", "UnreadableSource", "open_source"]

_TASKS = "__pregel_tasks"


class UnreadableSource(ValueError):
    """A source that is not LangGraph's tables, or a row of them that does not read."""


@dataclass(frozen=True, slots=True)
class SourceWrite:
    """A pending write as LangGraph's saver kept it."""

    task_id: str
    task_path: str
    index: int
    channel: str
    value: Any


@dataclass(frozen=True, slots=True)
class SourceCheckpoint:
    """A checkpoint as LangGraph's saver kept it: the checkpoint with its channel values."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    writes: list[SourceWrite]


class Source(abc.ABC):
    """LangGraph's tables in one database."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry

    @abc.abstractmethod
    def threads(self) -> list[str]:
        """Every thread id that has a checkpoint, sorted."""

    @abc.abstractmethod
    def checkpoints(self, thread_id: str) -> Iterator[SourceCheckpoint]:
        """The thread's checkpoints, by namespace, then by id, oldest first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _value(self, where: str, type_: object, data: object) -> Any:
        if not isinstance(type_, str) or not (data is None or isinstance(data, bytes)):
            raise UnreadableSource(f"{where}: a value stored as {type(data).__name__}")
        try:
            return read_value(type_, data, self.registry)
        except UnreadableValue as exc:
            raise UnreadableSource(f"{where}: {exc}") from None

    def _made(
        self,
        where: str,
        key: tuple[Any, Any, Any, Any],
        checkpoint: dict[str, Any],
        metadata: object,
        writes: list[tuple[Any, ...]],
    ) -> SourceCheckpoint:
        """A checkpoint of a row keyed ``(thread, namespace, id, parent id)``."""
        thread_id, ns, checkpoint_id, parent_id = key
        return SourceCheckpoint(
            str(thread_id),
            str(ns),
            str(checkpoint_id),
            None if parent_id is None else str(parent_id),
            checkpoint,
            _metadata(where, metadata),
            self._writes(where, writes),
        )

    def _writes(self, where: str, rows: list[tuple[Any, ...]]) -> list[SourceWrite]:
        writes = [
            SourceWrite(
                str(task_id),
                str(task_path or ""),
                int(index),
                str(channel),
                self._value(f"{where}, write {task_id}/{index}", type_, data),
            )
            for task_id, task_path, index, channel, type_, data in rows
        ]
        return sorted(writes, key=lambda write: (write.task_path, write.task_id, write.index))


def open_source(location: str, registry: TypeRegistry) -> Source:
    """The LangGraph database ``location`` names.

    ``sqlite:///path.db`` or a file path: a ``SqliteSaver`` database;
    ``postgresql://...``: a ``PostgresSaver`` database (needs ``flowpoint[postgres]``).
    """
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return _PostgresSource(location, registry)
    if scheme == "sqlite":
        path = unquote(urlsplit(location).path)[1:]
    elif scheme in ("", "file"):
        path = unquote(urlsplit(location).path) if scheme == "file" else location
    else:
        raise UnreadableSource(
            f"not a LangGraph database: {location!r:.80} (give sqlite:///file.db, a file "
            f"path, or postgresql://...)"
        )
    if not path or not Path(path).is_file():
        raise UnreadableSource(f"no SQLite database at {path!r:.120}")
    return _SqliteSource(Path(path), registry)


class _SqliteSource(Source):
    """A ``SqliteSaver`` database: tables ``checkpoints`` and ``writes``."""

    def __init__(self, path: Path, registry: TypeRegistry) -> None:
        super().__init__(registry)
        self._connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in self._connection.execute("PRAGMA table_info(writes)")}
            self._has_task_path = "task_path" in columns
            self._connection.execute("SELECT 1 FROM checkpoints LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            self._connection.close()
            raise UnreadableSource(f"{path} holds no SqliteSaver tables: {exc}") from None

    def threads(self) -> list[str]:
        rows = self._connection.execute(
            "SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id"
        )
        return [str(thread_id) for (thread_id,) in rows]

    def checkpoints(self, thread_id: str) -> Iterator[SourceCheckpoint]:
        rows = self._connection.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
            "metadata FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_ns, checkpoint_id",
            (thread_id,),
        ).fetchall()
        task_path = "task_path" if self._has_task_path else "''"
        for ns, checkpoint_id, parent_id, type_, blob, metadata in rows:
            where = f"thread {thread_id!r}, checkpoint {checkpoint_id}"
            checkpoint = self._value(where, type_, blob)
            if not isinstance(checkpoint, dict):
                raise UnreadableSource(f"{where}: the checkpoint is not a map")
            writes = self._connection.execute(
                f"SELECT task_id, {task_path}, idx, channel, type, value FROM writes "
                "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                (thread_id, ns, checkpoint_id),
            ).fetchall()
            yield self._made(
                where, (thread_id, ns, checkpoint_id, parent_id), checkpoint, metadata, writes
            )

    def close(self) -> None:
        self._connection.close()


class _PostgresSource(Source):
    """A ``PostgresSaver`` database: ``checkpoints``, ``checkpoint_blobs``, ``checkpoint_writes``.

    A checkpoint of format version 4 or later holds its pending sends; an older one
    gets them from its parent's writes to the tasks channel, as ``PostgresSaver``
    reads it.
    """

    def __init__(self, url: str, registry: TypeRegistry) -> None:
        super().__init__(registry)
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError(
                f"reading PostgreSQL needs psycopg ({exc.name}): pip install 'flowpoint[postgres]'"
            ) from exc
        self._connection = psycopg.connect(url, autocommit=True)
        self._connection.read_only = True

    def threads(self) -> list[str]:
        rows = self._connection.execute(
            "SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id"
        ).fetchall()
        return [str(thread_id) for (thread_id,) in rows]

    def checkpoints(self, thread_id: str) -> Iterator[SourceCheckpoint]:
        rows = self._connection.execute(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata "
            "FROM checkpoints WHERE thread_id = %s ORDER BY checkpoint_ns, checkpoint_id",
            (thread_id,),
        ).fetchall()
        for ns, checkpoint_id, parent_id, stored, metadata in rows:
            where = f"thread {thread_id!r}, checkpoint {checkpoint_id}"
            if not isinstance(stored, dict):
                raise UnreadableSource(f"{where}: the checkpoint is not a JSON object")
            checkpoint = dict(stored)
            values = dict(checkpoint.get("channel_values") or {})
            versions = dict(checkpoint.get("channel_versions") or {})
            for channel, type_, blob in self._connection.execute(
                "SELECT b.channel, b.type, b.blob FROM checkpoint_blobs b "
                "JOIN unnest(%s::text[], %s::text[]) AS v(channel, version) "
                "ON b.channel = v.channel AND b.version = v.version "
                "WHERE b.thread_id = %s AND b.checkpoint_ns = %s",
                (list(versions), [str(v) for v in versions.values()], thread_id, ns),
            ).fetchall():
                value = self._value(f"{where}, channel {channel!r}", type_, blob)
                if value is not EMPTY:
                    values[channel] = value
            if int(checkpoint.get("v", 4)) < 4 and parent_id is not None:
                self._migrate_sends(thread_id, ns, str(parent_id), checkpoint, values, where)
            checkpoint["channel_values"] = values
            writes = self._connection.execute(
                "SELECT task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
                "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
                (thread_id, ns, checkpoint_id),
            ).fetchall()
            yield self._made(
                where, (thread_id, ns, checkpoint_id, parent_id), checkpoint, metadata, writes
            )

    def _migrate_sends(
        self,
        thread_id: str,
        ns: str,
        parent_id: str,
        checkpoint: dict[str, Any],
        values: dict[str, Any],
        where: str,
    ) -> None:
        rows = self._connection.execute(
            "SELECT type, blob FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s "
            "AND checkpoint_id = %s AND channel = %s ORDER BY task_path, task_id, idx",
            (thread_id, ns, parent_id, _TASKS),
        ).fetchall()
        if not rows:
            return
        values[_TASKS] = [self._value(f"{where}, a pending send", t, b) for t, b in rows]
        versions = dict(checkpoint.get("channel_versions") or {})
        versions[_TASKS] = max(versions.values()) if versions else 1
        checkpoint["channel_versions"] = versions

    def close(self) -> None:
        self._connection.close()


def _metadata(where: str, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UnreadableSource(f"{where}: metadata that is not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise UnreadableSource(f"{where}: metadata that is not a JSON object")
    return dict(raw)
