"""Declaring migrations: how a state saved by an older graph becomes a state of this one.

A migration is declared on the graph that runs now, from the fingerprint of an
older version of it::

    @g.migration(from_hash=0x0C45767E508038ED, state=TicketV1, nodes={"draft": "compose"})
    def v1_to_v2(old: TicketV1) -> TicketV2:
        return TicketV2(text=old.text, answer=old.reply, language="en")

It leads to the graph it is declared on, or, with ``to_hash``, to another older
version that has a migration of its own: that is how v1 → v2 → v3 composes. The
migrations of a graph form chains that all end at the graph; :class:`Migrations`
checks that when the graph is built and finds the chain from a stored hash.

Migrations are about old data, not about the graph's structure: they are not
part of the fingerprint, so declaring one never changes ``hash_u64()``. Applying
them (reading the old checkpoint, moving its position, saving) is
:mod:`flowpoint.graph._migrate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._fingerprint import describe_type
from flowpoint.graph._state import StateType

__all__ = ["MAX_HASH", "Migration", "MigrationFunction", "Migrations", "declare"]

MAX_HASH: Final = 2**64 - 1
"""The largest graph hash: fingerprints are unsigned 64-bit integers."""

# Reserved names a position can never move to (the builder's START and END).
_RESERVED = ("__start__", "__end__")

MigrationFunction = Callable[[Any], Any]
"""``function(old_state) -> new_state``, sync or async."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One declared migration, from the graph ``from_hash`` to the graph ``to_hash``.

    ``function`` turns a ``state_type`` state into a state of graph ``to_hash``
    (``None``: the graph it is declared on).

    ``nodes`` maps the old graph's node names to the new one's; a name it does not
    map stays as it is. ``state`` checks what ``function`` reads.
    """

    from_hash: int
    state_type: Any
    function: MigrationFunction
    nodes: Mapping[str, str]
    to_hash: int | None
    state: StateType = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        """The function's qualified name, as the migrated checkpoint's metadata records it."""
        module = getattr(self.function, "__module__", None)
        qualname = getattr(self.function, "__qualname__", None) or repr(self.function)
        return f"{module}.{qualname}" if module else qualname

    def rename(self, node: str) -> str:
        """Where a position at old node ``node`` moves to."""
        return self.nodes.get(node, node)


def declare(
    function: Any,
    *,
    from_hash: Any,
    state: Any,
    nodes: Any,
    to_hash: Any,
    graph: str,
) -> Migration:
    """Check a migration's declaration on graph ``graph``; raise ``GraphDefinitionError``."""
    where = f"graph {graph!r}: the migration {getattr(function, '__qualname__', function)!r:.60}"
    source = _hash(from_hash, f"{where}: from_hash")
    target = None if to_hash is None else _hash(to_hash, f"{where}: to_hash")
    if target == source:
        raise GraphDefinitionError(f"{where} migrates 0x{source:016x} to itself")
    if not callable(function):
        raise GraphDefinitionError(f"{where} must decorate a function, not {function!r:.60}")
    try:
        inspect.signature(function).bind(None)
    except TypeError:
        raise GraphDefinitionError(
            f"{where} must take exactly one argument, the old state"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): called as it is
    if describe_type(state) == "any":
        raise GraphDefinitionError(
            f"{where} declares the old state as {state!r}, which flowpoint cannot decode; "
            f"declare the old graph's state type"
        )
    renames = _renames(nodes, where)
    return Migration(source, state, function, renames, target, StateType(state))


class Migrations:
    """The migrations of a built graph, by the hash they migrate from.

    Every chain of migrations must end at the graph: a ``to_hash`` names a hash
    another migration starts from, no chain loops, no migration starts from the
    graph's own hash, and a migration into the graph maps nodes to nodes it has.
    """

    __slots__ = ("_by_hash",)

    def __init__(
        self,
        migrations: Iterable[Migration],
        *,
        graph_hash: int,
        nodes: Iterable[str],
        graph: str,
    ) -> None:
        by_hash: dict[int, Migration] = {}
        for migration in migrations:
            if migration.from_hash in by_hash:
                raise GraphDefinitionError(
                    f"graph {graph!r} has two migrations from 0x{migration.from_hash:016x}: "
                    f"{by_hash[migration.from_hash].name} and {migration.name}"
                )
            by_hash[migration.from_hash] = migration
        known = set(nodes)
        for migration in by_hash.values():
            where = f"graph {graph!r}: the migration {migration.name}"
            if migration.from_hash == graph_hash:
                raise GraphDefinitionError(
                    f"{where} migrates from 0x{graph_hash:016x}, the graph's own hash: a trace "
                    f"on this graph needs no migration (did the graph not change?)"
                )
            if migration.to_hash == graph_hash:
                raise GraphDefinitionError(
                    f"{where} gives to_hash=0x{graph_hash:016x}, the graph's own hash: leave "
                    f"to_hash out"
                )
            if migration.to_hash is None:
                unknown = sorted(set(migration.nodes.values()) - known)
                if unknown:
                    raise GraphDefinitionError(
                        f"{where} maps nodes to {unknown}, which the graph does not have"
                    )
            elif migration.to_hash not in by_hash:
                raise GraphDefinitionError(
                    f"{where} leads to 0x{migration.to_hash:016x}, which no migration of the "
                    f"graph starts from"
                )
        self._by_hash: Mapping[int, Migration] = MappingProxyType(by_hash)
        for start in by_hash:
            self.path(start)  # refuses a chain that loops

    def __bool__(self) -> bool:
        return bool(self._by_hash)

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def hashes(self) -> tuple[int, ...]:
        """The hashes there are migrations from, sorted."""
        return tuple(sorted(self._by_hash))

    def path(self, from_hash: int) -> tuple[Migration, ...] | None:
        """The migrations from graph ``from_hash`` to this graph, in order; or ``None``."""
        chain: list[Migration] = []
        at: int | None = from_hash
        while at is not None:
            migration = self._by_hash.get(at)
            if migration is None:
                return None
            if migration in chain:
                raise GraphDefinitionError(
                    f"the migrations {', '.join(one.name for one in chain)} lead in a circle"
                )
            chain.append(migration)
            at = migration.to_hash
        return tuple(chain)


def _hash(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GraphDefinitionError(
            f"{what} must be a graph hash, an int such as 0x0c45767e508038ed, not {value!r:.40}"
        )
    if not 0 <= value <= MAX_HASH:
        raise GraphDefinitionError(f"{what} must be an unsigned 64-bit int, not {value}")
    return value


def _renames(nodes: Any, where: str) -> Mapping[str, str]:
    if nodes is None:
        return MappingProxyType({})
    if not isinstance(nodes, Mapping):
        raise GraphDefinitionError(
            f"{where}: nodes must map old node names to new ones, not {nodes!r:.40}"
        )
    renames: dict[str, str] = {}
    for old, new in nodes.items():
        for name in (old, new):
            if not isinstance(name, str) or not name or name in _RESERVED:
                raise GraphDefinitionError(
                    f"{where}: nodes must map node names to node names, not {name!r:.40}"
                )
        renames[old] = new
    return MappingProxyType(renames)
