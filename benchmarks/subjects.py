"""The checkpointers under test, each behind the same small interface.

Every subject offers, async or blocking:

- ``prepare(trace, state, changed)``: build the next checkpoint of a trace (never timed):
  flowpoint's ``previous.child(node, state)``, or LangGraph's checkpoint dict with its
  channel versions and ``new_versions`` naming only the channels that changed;
- ``save(prepared)``, ``load_latest(trace)``, ``load_by_id(key)``, ``list_newest_20(trace)``,
  ``list_all(trace)``: exactly one library call each (these are what the workloads time);
- ``reopen()``: a new, unopened subject on the same place (``None`` where a fresh one would
  be empty, in memory, or is not measured), which ``open_cold()`` opens as an application
  does after a restart: what W1's cold load times, with a ``load_latest`` after it;
- ``state_of(loaded)``: the state dict out of what a load returned (never timed);
- ``bytes_at_rest()``: the backend's size on disk or on the server, or ``None`` in memory;
- ``settings()``: what the subject was configured with, as read back (PRAGMAs);
- ``open()`` / ``close()``.

A subject is one entry of :data:`SUBJECTS`.
"""

from __future__ import annotations

import abc
import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.places import Place, directory_bytes, postgres_bytes, sqlite_bytes, sqlite_pragmas
from benchmarks.w5 import open_flowpoint_saver, open_flowpoint_saver_async

GRAPH = 0x5EA7C0DE
"""The graph fingerprint every flowpoint checkpoint is saved and loaded with."""
NODE = "agent"
"""The node to run next, in every checkpoint."""
LIST_PAGE = 1000
"""flowpoint's ``history`` page size when listing a whole trace (one call for 300 steps)."""

Footprint = Callable[[], dict[str, Any]]
Probe = Callable[[], dict[str, Any]]


@dataclass
class Prepared:
    """A checkpoint built ahead of its save: what ``save`` takes, and the key to load it by."""

    trace: str
    key: Any
    payload: Any


class Subject(abc.ABC):
    """What both kinds of subject share: preparing checkpoints, reading results, sizes."""

    def __init__(self, footprint: Footprint | None) -> None:
        self._footprint = footprint
        self._settings: dict[str, Any] = {}

    @abc.abstractmethod
    def prepare(self, trace: str, state: dict[str, Any], changed: frozenset[str]) -> Prepared: ...

    @abc.abstractmethod
    def state_of(self, loaded: Any) -> dict[str, Any]: ...

    def bytes_at_rest(self) -> dict[str, Any] | None:
        return None if self._footprint is None else self._footprint()

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)


class AsyncSubject(Subject):
    @abc.abstractmethod
    async def open(self) -> None: ...

    def reopen(self) -> AsyncSubject | None:
        return None

    async def open_cold(self) -> None:
        await self.open()

    @abc.abstractmethod
    async def save(self, prepared: Prepared) -> None: ...

    @abc.abstractmethod
    async def load_latest(self, trace: str) -> Any: ...

    @abc.abstractmethod
    async def load_by_id(self, key: Any) -> Any: ...

    @abc.abstractmethod
    async def list_newest_20(self, trace: str) -> list[Any]: ...

    @abc.abstractmethod
    async def list_all(self, trace: str) -> list[Any]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class SyncSubject(Subject):
    @abc.abstractmethod
    def open(self) -> None: ...

    def reopen(self) -> SyncSubject | None:
        return None

    def open_cold(self) -> None:
        self.open()

    @abc.abstractmethod
    def save(self, prepared: Prepared) -> None: ...

    @abc.abstractmethod
    def load_latest(self, trace: str) -> Any: ...

    @abc.abstractmethod
    def load_by_id(self, key: Any) -> Any: ...

    @abc.abstractmethod
    def list_newest_20(self, trace: str) -> list[Any]: ...

    @abc.abstractmethod
    def list_all(self, trace: str) -> list[Any]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


# -- flowpoint ---------------------------------------------------------------------------


class _FlowpointChain:
    """The previous checkpoint of each trace, so the next one is ``previous.child(...)``."""

    def __init__(self) -> None:
        self._last: dict[str, Any] = {}

    def prepare(self, trace: str, state: dict[str, Any]) -> Prepared:
        from flowpoint import Checkpoint

        previous = self._last.get(trace)
        checkpoint = (
            Checkpoint.first(NODE, state) if previous is None else previous.child(NODE, state)
        )
        self._last[trace] = checkpoint
        return Prepared(trace, checkpoint.checkpoint_id, checkpoint)


def _flowpoint_settings(url: str, blobs: Any, probe: Probe | None) -> dict[str, Any]:
    text = repr(blobs)
    settings: dict[str, Any] = {
        "url": url,
        "store": text if " object at " not in text else type(blobs).__name__,
    }
    durability = re.search(r"durability='(\w+)'", text)
    if durability:
        settings["durability"] = durability.group(1)
    if probe is not None:
        settings.update(probe())
    return settings


def _reopens(url: str) -> bool:
    """Whether W1 times cold loads on this URL: SQLite and files (not memory, not servers)."""
    return url.startswith(("sqlite:", "file:"))


class FlowpointAsync(AsyncSubject):
    """``TypedCheckpointStore(open_store(url), SerdeCheckpointCodec(**codec))``: dict states."""

    def __init__(
        self,
        url: str,
        footprint: Footprint | None,
        probe: Probe | None = None,
        codec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(footprint)
        self.url = url
        self.codec_options = codec or {}
        self._probe = probe
        self._chain = _FlowpointChain()
        self.store: Any = None

    async def open(self) -> None:
        from flowpoint import SerdeCheckpointCodec, TypedCheckpointStore, open_store

        blobs = open_store(self.url)
        self.store = TypedCheckpointStore(blobs, SerdeCheckpointCodec(**self.codec_options))
        await self.store.traces()  # connect now, as LangGraph's setup() does, not in a save
        self._settings = _flowpoint_settings(self.url, blobs, self._probe)

    def reopen(self) -> FlowpointAsync | None:
        if not _reopens(self.url):
            return None
        return FlowpointAsync(self.url, None, None, self.codec_options)

    async def open_cold(self) -> None:
        from flowpoint import SerdeCheckpointCodec, TypedCheckpointStore, open_store

        codec = SerdeCheckpointCodec(**self.codec_options)
        self.store = TypedCheckpointStore(open_store(self.url), codec)

    def prepare(self, trace: str, state: dict[str, Any], changed: frozenset[str]) -> Prepared:
        return self._chain.prepare(trace, state)

    async def save(self, prepared: Prepared) -> None:
        await self.store.save_with_trace(prepared.trace, prepared.payload, GRAPH)

    async def load_latest(self, trace: str) -> Any:
        return await self.store.load_latest(trace, GRAPH)

    async def load_by_id(self, key: Any) -> Any:
        return await self.store.load(key, GRAPH)

    async def list_newest_20(self, trace: str) -> list[Any]:
        return await self.store.history(trace, limit=20)

    async def list_all(self, trace: str) -> list[Any]:
        found: list[Any] = []
        before: int | None = None
        while True:
            page = await self.store.history(trace, limit=LIST_PAGE, before_step=before)
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found
            before = page[-1].step

    def state_of(self, loaded: Any) -> dict[str, Any]:
        state: dict[str, Any] = loaded.state
        return state

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


class FlowpointSync(SyncSubject):
    """``SyncCheckpointStore`` (the blocking facade) over the same typed store."""

    def __init__(
        self,
        url: str,
        footprint: Footprint | None,
        probe: Probe | None = None,
        codec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(footprint)
        self.url = url
        self.codec_options = codec or {}
        self._probe = probe
        self._chain = _FlowpointChain()
        self.store: Any = None

    def open(self) -> None:
        from flowpoint import (
            SerdeCheckpointCodec,
            SyncCheckpointStore,
            TypedCheckpointStore,
            open_store,
        )

        blobs = open_store(self.url)
        codec = SerdeCheckpointCodec(**self.codec_options)
        self.store = SyncCheckpointStore(TypedCheckpointStore(blobs, codec))
        self.store.traces()  # connect now, as LangGraph's setup() does, not in a save
        self._settings = _flowpoint_settings(self.url, blobs, self._probe)

    def reopen(self) -> FlowpointSync | None:
        if not _reopens(self.url):
            return None
        return FlowpointSync(self.url, None, None, self.codec_options)

    def open_cold(self) -> None:
        from flowpoint import SyncCheckpointStore

        self.store = SyncCheckpointStore.open(self.url, **self.codec_options)

    def prepare(self, trace: str, state: dict[str, Any], changed: frozenset[str]) -> Prepared:
        return self._chain.prepare(trace, state)

    def save(self, prepared: Prepared) -> None:
        self.store.save_with_trace(prepared.trace, prepared.payload, GRAPH)

    def load_latest(self, trace: str) -> Any:
        return self.store.load_latest(trace, GRAPH)

    def load_by_id(self, key: Any) -> Any:
        return self.store.load(key, GRAPH)

    def list_newest_20(self, trace: str) -> list[Any]:
        return self.store.history(trace, limit=20)

    def list_all(self, trace: str) -> list[Any]:
        found: list[Any] = []
        before: int | None = None
        while True:
            page = self.store.history(trace, limit=LIST_PAGE, before_step=before)
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found
            before = page[-1].step

    def state_of(self, loaded: Any) -> dict[str, Any]:
        state: dict[str, Any] = loaded.state
        return state

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# -- LangGraph ---------------------------------------------------------------------------

CHECKPOINT_FORMAT = 4
"""The checkpoint format LangGraph 1.x writes (``"v"``); below 4 the Postgres saver runs a
pending-sends migration query on every read."""


@dataclass
class _Thread:
    step: int = -1
    versions: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None


class _LangGraphThreads:
    """Builds each trace's next checkpoint as LangGraph's loop would.

    ``channel_values`` is the whole state; ``channel_versions`` carries every channel's
    current version, advanced (by the saver's own ``get_next_version``) for the channels
    that changed, and ``new_versions`` names only those. The config of a put is the one
    the previous put returned.
    """

    def __init__(self) -> None:
        self._threads: dict[str, _Thread] = {}
        self.latest_configs: dict[str, dict[str, Any]] = {}

    def prepare(
        self,
        saver: Any,
        trace: str,
        state: dict[str, Any],
        changed: frozenset[str],
    ) -> Prepared:
        from langgraph.checkpoint.base.id import uuid6

        thread = self._threads.get(trace)
        if thread is None:
            thread = self._threads[trace] = _Thread()
            self.latest_configs[trace] = {"configurable": {"thread_id": trace, "checkpoint_ns": ""}}
        thread.step += 1
        versions = dict(thread.versions)
        new_versions: dict[str, Any] = {}
        for channel in sorted(changed):
            versions[channel] = new_versions[channel] = saver.get_next_version(
                versions.get(channel), None
            )
        thread.versions = versions
        checkpoint = {
            "v": CHECKPOINT_FORMAT,
            "id": str(uuid6(clock_seq=thread.step)),
            "ts": datetime.now(UTC).isoformat(),
            "channel_values": state,
            "channel_versions": versions,
            "versions_seen": {},
            "updated_channels": sorted(changed),
        }
        metadata = {"source": "loop", "step": thread.step, "parents": {}}
        config = thread.config or self.latest_configs[trace]
        key = {
            "configurable": {
                "thread_id": trace,
                "checkpoint_ns": "",
                "checkpoint_id": checkpoint["id"],
            }
        }
        return Prepared(trace, key, (config, checkpoint, metadata, new_versions))

    def saved(self, trace: str, config: dict[str, Any]) -> None:
        self._threads[trace].config = config


AsyncSaverOpener = Callable[[AsyncExitStack, dict[str, Any]], Awaitable[Any]]
SyncSaverOpener = Callable[[list[Callable[[], None]], dict[str, Any]], Any]


class LangGraphAsync(AsyncSubject):
    """A LangGraph saver through its async methods: aput, aget_tuple, alist."""

    def __init__(
        self,
        opener: AsyncSaverOpener,
        footprint: Footprint | None,
        cold: AsyncSaverOpener | None = None,
    ) -> None:
        super().__init__(footprint)
        self._opener = opener
        self._cold = cold
        self._stack = AsyncExitStack()
        self._threads = _LangGraphThreads()
        self.saver: Any = None

    async def open(self) -> None:
        self.saver = await self._opener(self._stack, self._settings)

    def reopen(self) -> LangGraphAsync | None:
        if self._cold is None:
            return None
        fresh = LangGraphAsync(self._cold, None, self._cold)
        fresh._threads.latest_configs = dict(self._threads.latest_configs)
        return fresh

    def prepare(self, trace: str, state: dict[str, Any], changed: frozenset[str]) -> Prepared:
        return self._threads.prepare(self.saver, trace, state, changed)

    async def save(self, prepared: Prepared) -> None:
        self._threads.saved(prepared.trace, await self.saver.aput(*prepared.payload))

    async def load_latest(self, trace: str) -> Any:
        return await self.saver.aget_tuple(self._threads.latest_configs[trace])

    async def load_by_id(self, key: Any) -> Any:
        return await self.saver.aget_tuple(key)

    async def list_newest_20(self, trace: str) -> list[Any]:
        return [t async for t in self.saver.alist(self._threads.latest_configs[trace], limit=20)]

    async def list_all(self, trace: str) -> list[Any]:
        return [t async for t in self.saver.alist(self._threads.latest_configs[trace])]

    def state_of(self, loaded: Any) -> dict[str, Any]:
        state: dict[str, Any] = loaded.checkpoint["channel_values"]
        return state

    async def close(self) -> None:
        await self._stack.aclose()


class LangGraphSync(SyncSubject):
    """A LangGraph saver through its blocking methods: put, get_tuple, list."""

    def __init__(
        self,
        opener: SyncSaverOpener,
        footprint: Footprint | None,
        cold: SyncSaverOpener | None = None,
    ) -> None:
        super().__init__(footprint)
        self._opener = opener
        self._cold = cold
        self._closers: list[Callable[[], None]] = []
        self._threads = _LangGraphThreads()
        self.saver: Any = None

    def open(self) -> None:
        self.saver = self._opener(self._closers, self._settings)

    def reopen(self) -> LangGraphSync | None:
        if self._cold is None:
            return None
        fresh = LangGraphSync(self._cold, None, self._cold)
        fresh._threads.latest_configs = dict(self._threads.latest_configs)
        return fresh

    def prepare(self, trace: str, state: dict[str, Any], changed: frozenset[str]) -> Prepared:
        return self._threads.prepare(self.saver, trace, state, changed)

    def save(self, prepared: Prepared) -> None:
        self._threads.saved(prepared.trace, self.saver.put(*prepared.payload))

    def load_latest(self, trace: str) -> Any:
        return self.saver.get_tuple(self._threads.latest_configs[trace])

    def load_by_id(self, key: Any) -> Any:
        return self.saver.get_tuple(key)

    def list_newest_20(self, trace: str) -> list[Any]:
        return list(self.saver.list(self._threads.latest_configs[trace], limit=20))

    def list_all(self, trace: str) -> list[Any]:
        return list(self.saver.list(self._threads.latest_configs[trace]))

    def state_of(self, loaded: Any) -> dict[str, Any]:
        state: dict[str, Any] = loaded.checkpoint["channel_values"]
        return state

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


# The LangGraph savers, opened at flowpoint's default durability: WAL, synchronous=FULL.


def _open_in_memory_saver() -> AsyncSaverOpener:
    async def opener(stack: AsyncExitStack, settings: dict[str, Any]) -> Any:
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()

    return opener


def _open_async_sqlite_saver(path: Path) -> AsyncSaverOpener:
    async def opener(stack: AsyncExitStack, settings: dict[str, Any]) -> Any:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(path)
        stack.push_async_callback(conn.close)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        async with conn.execute("PRAGMA journal_mode") as cursor:
            (mode,) = await cursor.fetchone()  # type: ignore[misc]
        async with conn.execute("PRAGMA synchronous") as cursor:
            (sync,) = await cursor.fetchone()  # type: ignore[misc]
        settings.update(
            path=str(path), journal_mode=mode, synchronous=sync, synchronous_full=sync == 2
        )
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        return saver

    return opener


def _open_async_sqlite_saver_cold(path: Path) -> AsyncSaverOpener:
    """As an application opens it after a restart: the connection, its PRAGMAs, the saver.

    The saver sets its tables up on its first call, inside the timed load.
    """

    async def opener(stack: AsyncExitStack, settings: dict[str, Any]) -> Any:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        conn = await aiosqlite.connect(path)
        stack.push_async_callback(conn.close)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        return AsyncSqliteSaver(conn)

    return opener


def _open_sqlite_saver_cold(path: Path) -> SyncSaverOpener:
    """:func:`_open_async_sqlite_saver_cold` for ``SqliteSaver``."""

    def opener(closers: list[Callable[[], None]], settings: dict[str, Any]) -> Any:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(path, check_same_thread=False)
        closers.append(conn.close)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return SqliteSaver(conn)

    return opener


def _open_sqlite_saver(path: Path) -> SyncSaverOpener:
    def opener(closers: list[Callable[[], None]], settings: dict[str, Any]) -> Any:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(path, check_same_thread=False)
        closers.append(conn.close)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        settings.update(path=str(path), **sqlite_pragmas(conn))
        saver = SqliteSaver(conn)
        saver.setup()
        return saver

    return opener


def _open_async_postgres_saver(dsn: str) -> AsyncSaverOpener:
    async def opener(stack: AsyncExitStack, settings: dict[str, Any]) -> Any:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        saver = await stack.enter_async_context(AsyncPostgresSaver.from_conn_string(dsn))
        await saver.setup()
        cursor = await saver.conn.execute("SHOW synchronous_commit")
        row = await cursor.fetchone()
        settings.update(dsn=dsn, synchronous_commit=row["synchronous_commit"])
        return saver

    return opener


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectSpec:
    """One checkpointer configuration: how to build it in a fresh place."""

    name: str
    label: str
    family: str  # "flowpoint" or "langgraph"
    backend: str  # "memory", "sqlite", "file" or "postgres"
    api: str  # "async" or "sync"
    build: Callable[[Place], AsyncSubject | SyncSubject]
    workloads: frozenset[str] | None = None  # None: every workload that applies

    @property
    def needs_postgres(self) -> bool:
        return self.backend == "postgres"

    def describe(self) -> Mapping[str, str]:
        return {
            "label": self.label,
            "family": self.family,
            "backend": self.backend,
            "api": self.api,
        }


def _dir(place: Place) -> Path:
    if place.directory is None:
        raise ValueError("this subject needs a directory")
    return place.directory


def _dsn(place: Place) -> str:
    if place.dsn is None:
        raise ValueError("this subject needs a PostgreSQL database")
    return place.dsn


def _sqlite_file(place: Place) -> Path:
    return _dir(place) / "checkpoints.db"


def _sqlite_url(place: Place) -> str:
    return f"sqlite:///{_sqlite_file(place)}"  # an absolute path: sqlite:////tmp/...


def _file_url(place: Place) -> str:
    return f"file://{_dir(place) / 'store'}"


def _sqlite_footprint(place: Place) -> Footprint:
    return lambda: sqlite_bytes(_sqlite_file(place))


def _sqlite_probe(place: Place) -> Probe:
    def probe() -> dict[str, Any]:
        conn = sqlite3.connect(_sqlite_file(place))
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        finally:
            conn.close()
        return {"journal_mode": mode}

    return probe


def _dir_footprint(place: Place) -> Footprint:
    return lambda: directory_bytes(_dir(place) / "store")


def _pg_footprint(place: Place) -> Footprint:
    return lambda: postgres_bytes(_dsn(place))


# The default codec compresses states of 512 bytes or more with zstd; these subjects
# show, in the same run, what that costs.
_PLAIN: dict[str, Any] = {"compression": None}

SUBJECTS: list[SubjectSpec] = [
    SubjectSpec(
        "fp.memory",
        "flowpoint memory:// (async)",
        "flowpoint",
        "memory",
        "async",
        lambda place: FlowpointAsync("memory://", None),
    ),
    SubjectSpec(
        "fp.sqlite",
        "flowpoint SQLite (async)",
        "flowpoint",
        "sqlite",
        "async",
        lambda place: FlowpointAsync(
            _sqlite_url(place), _sqlite_footprint(place), _sqlite_probe(place)
        ),
    ),
    SubjectSpec(
        "fp.sqlite.sync",
        "flowpoint SQLite (SyncCheckpointStore)",
        "flowpoint",
        "sqlite",
        "sync",
        lambda place: FlowpointSync(
            _sqlite_url(place), _sqlite_footprint(place), _sqlite_probe(place)
        ),
    ),
    # The same without compression (the default compresses states of 512 bytes or more
    # with zstd): the cost of compression, in the same run.
    SubjectSpec(
        "fp.sqlite.plain",
        "flowpoint SQLite (async), compression=None",
        "flowpoint",
        "sqlite",
        "async",
        lambda place: FlowpointAsync(
            _sqlite_url(place),
            _sqlite_footprint(place),
            _sqlite_probe(place),
            {"compression": None},
        ),
    ),
    SubjectSpec(
        "fp.sqlite.sync.plain",
        "flowpoint SQLite (SyncCheckpointStore), compression=None",
        "flowpoint",
        "sqlite",
        "sync",
        lambda place: FlowpointSync(
            _sqlite_url(place),
            _sqlite_footprint(place),
            _sqlite_probe(place),
            {"compression": None},
        ),
    ),
    SubjectSpec(
        "fp.memory.plain",
        "flowpoint memory:// (async), compression=None",
        "flowpoint",
        "memory",
        "async",
        lambda place: FlowpointAsync("memory://", None, None, _PLAIN),
    ),
    SubjectSpec(
        "fp.file",
        "flowpoint file:// (async)",
        "flowpoint",
        "file",
        "async",
        lambda place: FlowpointAsync(_file_url(place), _dir_footprint(place)),
    ),
    SubjectSpec(
        "fp.postgres",
        "flowpoint PostgreSQL (async)",
        "flowpoint",
        "postgres",
        "async",
        lambda place: FlowpointAsync(_dsn(place), _pg_footprint(place)),
    ),
    SubjectSpec(
        "lg.InMemorySaver",
        "LangGraph InMemorySaver (async methods)",
        "langgraph",
        "memory",
        "async",
        lambda place: LangGraphAsync(_open_in_memory_saver(), None),
    ),
    SubjectSpec(
        "lg.AsyncSqliteSaver",
        "LangGraph AsyncSqliteSaver",
        "langgraph",
        "sqlite",
        "async",
        lambda place: LangGraphAsync(
            _open_async_sqlite_saver(_sqlite_file(place)),
            _sqlite_footprint(place),
            _open_async_sqlite_saver_cold(_sqlite_file(place)),
        ),
    ),
    SubjectSpec(
        "lg.SqliteSaver",
        "LangGraph SqliteSaver",
        "langgraph",
        "sqlite",
        "sync",
        lambda place: LangGraphSync(
            _open_sqlite_saver(_sqlite_file(place)),
            _sqlite_footprint(place),
            _open_sqlite_saver_cold(_sqlite_file(place)),
        ),
    ),
    SubjectSpec(
        "lg.AsyncPostgresSaver",
        "LangGraph AsyncPostgresSaver",
        "langgraph",
        "postgres",
        "async",
        lambda place: LangGraphAsync(_open_async_postgres_saver(_dsn(place)), _pg_footprint(place)),
    ),
    # flowpoint's LangGraph adapter, driven as LangGraph's savers are (W5 only).
    SubjectSpec(
        "lgfp.sqlite.sync",
        "FlowpointSaver over SQLite (put, get_tuple, list)",
        "flowpoint",
        "sqlite",
        "sync",
        lambda place: LangGraphSync(
            open_flowpoint_saver(_sqlite_url(place)), _sqlite_footprint(place)
        ),
        frozenset({"W5"}),
    ),
    SubjectSpec(
        "lgfp.sqlite",
        "FlowpointSaver over SQLite (aput, aget_tuple, alist)",
        "flowpoint",
        "sqlite",
        "async",
        lambda place: LangGraphAsync(
            open_flowpoint_saver_async(_sqlite_url(place)), _sqlite_footprint(place)
        ),
        frozenset({"W5"}),
    ),
    SubjectSpec(
        "lgfp.postgres",
        "FlowpointSaver over PostgreSQL (aput, aget_tuple, alist)",
        "flowpoint",
        "postgres",
        "async",
        lambda place: LangGraphAsync(open_flowpoint_saver_async(_dsn(place)), _pg_footprint(place)),
        frozenset({"W5"}),
    ),
]


def by_name() -> dict[str, SubjectSpec]:
    return {spec.name: spec for spec in SUBJECTS}
