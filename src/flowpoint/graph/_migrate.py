"""Applying migrations: a trace's latest checkpoint of an older graph, moved onto this one.

Moving a trace takes, in order:

1. **Reading** its latest checkpoint as the old graph wrote it: with a codec
   configured as the store's but for the first migration's ``state``, through a
   facade over the same blob store (so a checkpoint stored as changes is read
   down its chain, as any load is), checked against the old graph's hash.
2. **Migrating** the state through each migration of the chain, each result
   checked against the state type that comes next (nested values too), then
   encoded in memory with the store's codec: what cannot be saved fails here.
3. **Moving the position**: the checkpoint's next node, or its cursor (parallel
   tasks, ``Send`` arguments, joins under way), renamed through each migration's
   ``nodes``; every node it names must be in the graph, and a ``Send``'s argument
   must fit the node it goes to.
4. **Saving** the result as the trace's next step, stamped with the new hash,
   its metadata recording the source hash and the migrations (``source:
   migration``, ``migrated_from``, ``migration``) and keeping a pause marker. The
   old checkpoints are not touched. One save: a process killed before it leaves
   the trace as it was, after it, moved.

Pending writes saved against the old checkpoint (tasks of a parallel superstep
that finished before the deploy) are not carried over: they are updates of the
old state type, which a migration of whole states cannot translate in general.
The migrated checkpoint is a new checkpoint without writes, so its superstep
runs again, all of its tasks.

A failure in steps 1 to 3 is :class:`~flowpoint.errors.MigrationFailed` naming the
trace and the migration at fault, raised before anything is written.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, cast, runtime_checkable

from flowpoint._types import type_name
from flowpoint.checkpoint import Checkpoint, S
from flowpoint.codec import CheckpointCodec
from flowpoint.errors import (
    CheckpointConflict,
    CodecError,
    CorruptCheckpoint,
    GraphDefinitionError,
    GraphMismatch,
    InvalidUpdate,
    MigrationFailed,
)
from flowpoint.graph._builder import BuiltGraph
from flowpoint.graph._context import input_type
from flowpoint.graph._cursor import Cursor
from flowpoint.graph._interrupt import carried
from flowpoint.graph._migrations import Migration
from flowpoint.graph._state import StateType, from_plain
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.typed import TypedCheckpointStore

__all__ = ["MIGRATION_SOURCE", "Migrator", "Moved", "RetypableCodec"]

MIGRATION_SOURCE = "migration"
"""The ``source`` in the metadata of a checkpoint a migration saved."""

# How often moving a trace reads it again when another writer moved it meanwhile.
_ATTEMPTS = 3


@runtime_checkable
class RetypableCodec(Protocol):
    """A codec that can make a codec like itself for another state type."""

    def for_state(self, state_type: Any) -> CheckpointCodec[Any]:
        """A codec configured as this one for ``state_type``."""
        ...


@dataclass(frozen=True, slots=True)
class Moved(Generic[S]):
    """A trace's latest checkpoint of an older graph and the checkpoint it becomes (unsaved)."""

    source: Checkpoint[Any]
    from_hash: int
    checkpoint: Checkpoint[S]
    path: tuple[Migration, ...]


class Migrator(Generic[S]):
    """Moves traces of ``store`` onto ``graph`` with the graph's migrations.

    It keeps one reading facade per old state type, so that reading many traces
    (``flowpoint migrate``) reuses what it decoded.
    """

    def __init__(self, store: TypedCheckpointStore[S], graph: BuiltGraph[S]) -> None:
        self.store = store
        self.graph = graph
        self.graph_hash = graph.hash_u64()
        self._readers: dict[int, TypedCheckpointStore[Any]] = {}

    async def latest(self, trace: TraceId) -> Checkpoint[S] | None:
        """The trace's latest checkpoint on the graph: as stored, or migrated and saved first.

        ``None`` for a trace without checkpoints. Raises
        :class:`~flowpoint.errors.GraphMismatch` (its ``migrations`` listing the
        hashes the graph has migrations from) for a trace of a graph without a
        chain of migrations to this one, and :class:`~flowpoint.errors.MigrationFailed`.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self.store.load_latest(trace, self.graph_hash)
            except GraphMismatch as mismatch:
                moved = await self.plan(trace, mismatch.actual)
            if moved is None:
                continue  # the latest changed while it was read: read it again
            try:
                await self.store.save_with_trace(trace, moved.checkpoint, self.graph_hash)
            except CheckpointConflict:
                if attempt == _ATTEMPTS:
                    raise
                continue  # another writer moved the trace on: read what it wrote
            return moved.checkpoint
        return await self.store.load_latest(trace, self.graph_hash)

    async def plan(self, trace: TraceId, from_hash: int) -> Moved[S] | None:
        """The trace's latest checkpoint, written by graph ``from_hash``, migrated in memory.

        ``None`` if the trace's latest checkpoint is no longer one of that graph
        (moved on meanwhile) or the trace is gone. Raises as :meth:`latest` does.
        """
        path = self._path(from_hash)
        try:
            old = await self._reader(path[0]).load_latest(trace, from_hash)
        except GraphMismatch:
            return None
        except CodecError as exc:
            raise _undecodable(trace, from_hash, path[0], exc) from None
        if old is None:
            return None
        return await self._move(trace, from_hash, old, path)

    async def plan_checkpoint(
        self, trace: TraceId, checkpoint_id: CheckpointId | str, from_hash: int
    ) -> Moved[S] | None:
        """Checkpoint ``checkpoint_id``, written by graph ``from_hash``, migrated in memory.

        As :meth:`plan` does for a trace's latest, for any checkpoint (a fork onto
        this graph): ``trace`` is the trace it goes to, which errors name. ``None``
        if there is no such checkpoint.
        """
        path = self._path(from_hash)
        try:
            old = await self._reader(path[0]).load(checkpoint_id, from_hash)
        except CodecError as exc:
            raise _undecodable(trace, from_hash, path[0], exc) from None
        if old is None:
            return None
        return await self._move(trace, from_hash, old, path)

    def _path(self, from_hash: int) -> tuple[Migration, ...]:
        path = self.graph.migrations.path(from_hash)
        if path is None:
            raise GraphMismatch(self.graph_hash, from_hash, migrations=self.graph.migrations.hashes)
        return path

    async def _move(
        self, trace: TraceId, from_hash: int, old: Checkpoint[Any], path: tuple[Migration, ...]
    ) -> Moved[S]:
        """``old`` migrated: its state, its position and its pause, as its unsaved child."""
        state = await self._migrated_state(trace, from_hash, old.state, path)
        cursor = self._moved_cursor(trace, from_hash, old, path)
        try:
            stored_cursor = carried(old.cursor, cursor, lambda node: _renamed(node, path))
        except ValueError as exc:
            raise CorruptCheckpoint(old.checkpoint_id, str(exc)) from None
        metadata: dict[str, Any] = {
            "source": MIGRATION_SOURCE,
            "migrated_from": f"0x{from_hash:016x}",
            "migration": ", ".join(migration.name for migration in path),
        }
        if "interrupt" in old.metadata:  # a pause reached stays reached
            metadata["interrupt"] = old.metadata["interrupt"]
        moved = cast(
            Checkpoint[S],
            old.child(cursor.current_node(), state, metadata=metadata, cursor=stored_cursor),
        )
        try:
            self.store.codec.serialize(moved, self.graph_hash, trace)
        except CodecError as exc:
            raise MigrationFailed(
                trace, from_hash, path[-1].name, f"the state it returned cannot be stored: {exc}"
            ) from None
        return Moved(old, from_hash, moved, path)

    def _reader(self, migration: Migration) -> TypedCheckpointStore[Any]:
        """A facade over the same blob store that decodes ``migration``'s old state type."""
        reader = self._readers.get(migration.from_hash)
        if reader is None:
            codec = self.store.codec
            if not isinstance(codec, RetypableCodec):
                raise TypeError(
                    f"reading a checkpoint of an older graph takes a codec of its state type: "
                    f"{type(codec).__name__} cannot make one (it has no for_state method, as "
                    f"SerdeCheckpointCodec has)"
                )
            reader = TypedCheckpointStore(self.store.store, codec.for_state(migration.state_type))
            self._readers[migration.from_hash] = reader
        return reader

    async def _migrated_state(
        self, trace: TraceId, from_hash: int, state: Any, path: Sequence[Migration]
    ) -> Any:
        """``state`` through each migration, each result checked against the type that follows."""
        targets: list[StateType] = [one.state for one in path[1:]] + [self.graph.state]
        for migration, target in zip(path, targets, strict=True):
            try:
                result = migration.function(state)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # the user's function: whatever it raises is its failure
                raise MigrationFailed(
                    trace, from_hash, migration.name, f"it raised {type(exc).__name__}: {exc}"
                ) from exc
            try:
                target.check(result, "the state it returned")
            except InvalidUpdate as exc:
                raise MigrationFailed(trace, from_hash, migration.name, str(exc)) from None
            state = result
        return state

    def _moved_cursor(
        self, trace: TraceId, from_hash: int, old: Checkpoint[Any], path: Sequence[Migration]
    ) -> Cursor:
        """Where the old checkpoint's run continues, in the graph's node names."""
        try:
            cursor = Cursor.parse(old.current_node, old.cursor)
        except ValueError as exc:
            raise CorruptCheckpoint(old.checkpoint_id, str(exc)) from None
        try:
            cursor = cursor.renamed(lambda node: _renamed(node, path))
            cursor.check(self.graph)
        except GraphDefinitionError as exc:
            raise MigrationFailed(
                trace, from_hash, None, f"{exc}; map the old name to a node with nodes={{...}}"
            ) from None
        except ValueError as exc:
            raise MigrationFailed(trace, from_hash, None, str(exc)) from None
        for task in cursor.tasks:
            if task.send is None:
                continue
            expected = input_type(self.graph.nodes[task.node].function)
            if expected is Any:
                continue
            try:
                from_plain(task.arg, expected)
            except InvalidUpdate as exc:
                raise MigrationFailed(
                    trace,
                    from_hash,
                    None,
                    f"the argument of the Send task {task.id!r} does not fit node "
                    f"{task.node!r}: {exc}",
                ) from None
        return cursor


def _renamed(node: str, path: Sequence[Migration]) -> str:
    """``node``'s name once each migration of ``path`` has renamed it."""
    for migration in path:
        node = migration.rename(node)
    return node


def _undecodable(
    trace: TraceId, from_hash: int, migration: Migration, exc: CodecError
) -> MigrationFailed:
    return MigrationFailed(
        trace,
        from_hash,
        migration.name,
        f"its state does not decode as {type_name(migration.state_type)}, the "
        f"migration's state: {exc}",
    )
