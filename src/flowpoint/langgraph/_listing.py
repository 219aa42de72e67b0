"""``list``: checkpoints of some threads, newest first, a page at a time.

Each trace is read newest first from its headers, a few at a time; the traces
are merged on their LangGraph ids, as LangGraph's SQL savers order them. A
metadata filter is decided on the header's copy of the metadata where it has one
(see :mod:`~flowpoint.langgraph._layout`) and on the decoded metadata otherwise.
Only the checkpoints that are returned are decoded, in range reads per trace.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.langgraph._core import Core, Stored, Where
from flowpoint.langgraph._layout import header_filter, lg_id_of
from flowpoint.langgraph._maintain import traces_of

__all__ = ["Listing"]

_PAGE: Final = 64
_HEADERS: Final = 500
WritesOf = Callable[[list[Stored]], Awaitable[list[list[tuple[str, str, Any]]]]]
"""The pending writes of each of these checkpoints."""


@dataclass(slots=True)
class _Cursor:
    """One trace's headers, newest first, read a page at a time."""

    where: Where
    page: int
    before_step: int | None = None
    buffer: list[CheckpointInfo] = field(default_factory=list)
    done: bool = False

    async def head(self, core: Core) -> CheckpointInfo | None:
        if not self.buffer and not self.done:
            infos = await core.store.history(self.where.trace, self.page, self.before_step)
            self.page = min(2 * self.page, _HEADERS)
            if not infos:
                self.done = True
            else:
                self.before_step = infos[-1].step
                self.buffer = infos[::-1]
        return self.buffer[-1] if self.buffer else None

    def pop(self) -> None:
        self.buffer.pop()


class _Newest:
    """A cursor in the heap of cursors, ordered by its head's LangGraph id, newest first."""

    __slots__ = ("cursor", "lg_id")

    def __init__(self, lg_id: str, cursor: _Cursor) -> None:
        self.lg_id = lg_id
        self.cursor = cursor

    def __lt__(self, other: _Newest) -> bool:
        return self.lg_id > other.lg_id


class Listing:
    """One ``list`` call's state: call :meth:`page` until it returns an empty list."""

    def __init__(
        self,
        core: Core,
        writes_of: WritesOf,
        config: RunnableConfig | None,
        filter: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValueError(f"limit must be an int or None, not {limit!r}")
        if filter is not None and not isinstance(filter, Mapping):
            raise ValueError(f"filter must be a mapping, not {type(filter).__name__}")
        self._core = core
        self._writes_of = writes_of
        self._config = config
        self._filter = dict(filter or {})
        self._before = _checkpoint_id(before)
        self._remaining = limit
        self._heap: list[_Newest] | None = None

    async def page(self) -> list[CheckpointTuple]:
        """The next checkpoints, newest first; ``[]`` when there are no more."""
        if self._heap is None:
            self._heap = await self._start()
        found: list[CheckpointTuple] = []
        while not found and self._remaining != 0:
            wanted = _PAGE if self._remaining is None else min(_PAGE, self._remaining)
            picked = await self._pick(wanted)
            if not picked:
                break
            kept = await self._read(picked)
            if self._remaining is not None:
                kept = kept[: max(self._remaining, 0)]
                self._remaining -= len(kept)
            # The page's pending writes in one read of the store, not one per checkpoint.
            writes = await self._writes_of(kept)
            found.extend(map(self._core.to_tuple, kept, writes))
        return found

    async def _start(self) -> list[_Newest]:
        if self._remaining is not None and self._remaining <= 0:
            return []
        config = self._config
        if config is None:
            places = await traces_of(self._core, None)
        else:
            where = Where.of(config)
            if config["configurable"].get("checkpoint_ns") is None:
                places = [
                    Where(found.thread, found.ns, found.trace, where.thread_given)
                    for found in await traces_of(self._core, [where.thread])
                ]
            else:
                places = [where]
        only = None if config is None else config["configurable"].get("checkpoint_id")
        page = _PAGE if self._remaining is None or self._filter else self._remaining + 1
        heap: list[_Newest] = []
        for where in places:
            cursor = _Cursor(where, min(page, _HEADERS))
            if only:
                cursor.buffer, cursor.done = await self._only(where, str(only)), True
            elif self._before is not None:
                blob = await self._core.locate(where.trace, self._before)
                if blob is not None:
                    cursor.before_step = blob.step
            head = await cursor.head(self._core)
            if head is not None:
                heapq.heappush(heap, _Newest(lg_id_of(head.checkpoint_id, head.metadata), cursor))
        return heap

    async def _only(self, where: Where, lg_id: str) -> list[CheckpointInfo]:
        blob = await self._core.locate(where.trace, lg_id)
        return [] if blob is None else [blob.info()]

    async def _pick(self, wanted: int) -> list[tuple[CheckpointInfo, _Cursor, bool]]:
        """Up to ``wanted`` headers in order, each with whether its metadata must be checked."""
        heap = self._heap
        assert heap is not None
        picked: list[tuple[CheckpointInfo, _Cursor, bool]] = []
        while heap and len(picked) < wanted:
            newest = heapq.heappop(heap)
            cursor = newest.cursor
            info = await cursor.head(self._core)
            if info is None:
                continue
            cursor.pop()
            lg_id = newest.lg_id
            head = await cursor.head(self._core)
            if head is not None:
                heapq.heappush(heap, _Newest(lg_id_of(head.checkpoint_id, head.metadata), cursor))
            if self._before is not None and lg_id >= self._before:
                continue
            verdict = header_filter(info.metadata, self._filter) if self._filter else True
            if verdict is not False:
                picked.append((info, cursor, verdict is None))
        return picked

    async def _read(self, picked: list[tuple[CheckpointInfo, _Cursor, bool]]) -> list[Stored]:
        """The picked checkpoints decoded, in order, but for those the filter refuses."""
        by_trace: dict[str, list[CheckpointInfo]] = {}
        for info, _, _ in picked:
            by_trace.setdefault(info.trace_id, []).append(info)
        blobs: dict[Any, CheckpointBlob] = {}
        for infos in by_trace.values():
            steps = sorted(info.step for info in infos)
            if steps[-1] - steps[0] < 2 * len(steps):
                for blob in await self._core.store.store.load_steps(
                    infos[0].trace_id, steps[0], steps[-1]
                ):
                    blobs[blob.checkpoint_id] = blob
            else:
                for info in infos:
                    one = await self._core.store.store.load(info.checkpoint_id)
                    if one is not None:
                        blobs[one.checkpoint_id] = one
        decoded: dict[Any, Stored] = {}
        # Oldest first, so that each delta's base is the frame decoded just before.
        for info, cursor, _ in sorted(picked, key=lambda entry: entry[0].step):
            found = blobs.get(info.checkpoint_id)
            if found is not None:
                decoded[info.checkpoint_id] = await self._core.read(cursor.where, found)
        kept: list[Stored] = []
        for info, _, check in picked:
            stored = decoded.get(info.checkpoint_id)
            if stored is None:
                continue  # deleted since the listing
            if check and not self._matches(stored):
                continue
            kept.append(stored)
        return kept

    def _matches(self, stored: Stored) -> bool:
        metadata = self._core.layout.metadata(stored.fields, stored.checkpoint.checkpoint_id)
        return all(value == metadata.get(key) for key, value in self._filter.items())


def _checkpoint_id(config: RunnableConfig | None) -> str | None:
    if config is None:
        return None
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not isinstance(configurable, Mapping):
        raise ValueError("the 'before' config has no 'configurable' mapping")
    found = configurable.get("checkpoint_id")
    return None if not found else str(found)
