"""``FlowpointSaver``: LangGraph's ``BaseCheckpointSaver`` over any flowpoint store."""

from __future__ import annotations

import builtins
import copy
import random
import sys
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)

from flowpoint._chains import DEFAULT_FRAME_CACHE_BYTES
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.langgraph._core import Core, State, Stored
from flowpoint.langgraph._layout import Layout
from flowpoint.langgraph._listing import Listing
from flowpoint.langgraph._maintain import copy_thread, delete_for_runs, delete_threads, prune
from flowpoint.langgraph._runner import Runner
from flowpoint.langgraph._types import TypeRegistry
from flowpoint.langgraph._values import ValueCodec
from flowpoint.langgraph._writes import (
    copy_writes,
    delta_channel_history,
    pending_writes,
    pending_writes_many,
    put_writes,
)
from flowpoint.stores._base import BlobCheckpointStore
from flowpoint.stores._registry import open_store
from flowpoint.typed import TypedCheckpointStore

__all__ = ["FlowpointSaver"]


class FlowpointSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that keeps checkpoints in a flowpoint store.

    ::

        saver = FlowpointSaver.from_url("sqlite:///agent.db")
        graph = builder.compile(checkpointer=saver)

    ``store`` is any :class:`~flowpoint.BlobCheckpointStore`, which stays open when
    the saver is closed (a saver closes the store only when it opened it:
    :meth:`from_url`). ``codec_options`` go to the
    :class:`~flowpoint.SerdeCheckpointCodec` (``compression``,
    ``encryption=KeyRing(...)``, ``allow_unencrypted``, ``max_payload_size``,
    ``max_state_size``, ``max_delta_chain``); the format is always MessagePack.
    ``allowed_types`` are the application's classes that channel values may hold
    (pydantic models, dataclasses, enums, named tuples: see
    :class:`~flowpoint.langgraph._values.TypeRegistry`), as a list of classes or a
    mapping of stored names to classes. ``frame_cache_bytes`` bounds the state
    bytes kept in memory to store and read checkpoints as changes.

    Every method has its blocking and its async form. Over a store the saver
    opened (``from_url``) both work from any thread or event loop; over a store of
    an async driver that the application gave, the async methods run on the
    caller's loop and the blocking ones must be called from another thread than
    that loop's (see :mod:`~flowpoint.langgraph._runner`). Use the saver as
    ``with`` or ``async with``, or call :meth:`close`.
    """

    def __init__(
        self,
        store: BlobCheckpointStore,
        *,
        allowed_types: Iterable[type] | Mapping[str, type] = (),
        frame_cache_bytes: int = DEFAULT_FRAME_CACHE_BYTES,
        **codec_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(store, BlobCheckpointStore):
            raise TypeError(f"store must be a BlobCheckpointStore, not {type(store).__name__}")
        if codec_options.get("format", "msgpack") != "msgpack":
            raise ValueError("a FlowpointSaver stores MessagePack; it takes no other format")
        codec: SerdeCheckpointCodec[State] = SerdeCheckpointCodec(
            dict[str, msgspec.Raw], **codec_options
        )
        self.registry = TypeRegistry(allowed_types)
        typed = TypedCheckpointStore(store, codec, frame_cache_bytes=frame_cache_bytes)
        self._core = Core(
            typed,
            Layout(ValueCodec(self.registry)),
            copy_metadata=codec.encryption is None,
            tip_bytes=frame_cache_bytes,
        )
        self._runner = Runner(store, owned=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        allowed_types: Iterable[type] | Mapping[str, type] = (),
        **codec_options: Any,
    ) -> FlowpointSaver:
        """A saver over the store ``url`` names (``sqlite:///agent.db``, ``postgresql://...``).

        ``codec_options`` and ``allowed_types`` are as for the constructor. The store
        connects on first use, and closes when the saver does.
        """
        store = open_store(url)
        saver = cls(store, allowed_types=allowed_types, **codec_options)
        # Its connections are the saver's alone: every call can run on the saver's loop.
        saver._runner = Runner(store, owned=True)
        return saver

    @property
    def store(self) -> TypedCheckpointStore[State]:
        """The typed flowpoint store the checkpoints are kept in."""
        return self._core.store

    # -- reading ------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint the config names by ``checkpoint_id``, or its thread's newest."""
        return self._runner.run(self._get_tuple(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The async form of :meth:`get_tuple`."""
        return await self._runner.arun(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of a thread and namespace, a whole thread, or all.

        ``config`` names a thread, and its ``checkpoint_ns`` (without one: every
        namespace of the thread) and ``checkpoint_id`` (that checkpoint only);
        ``None`` lists every thread. ``filter`` keeps those whose metadata has these
        values; ``before`` those whose id sorts before its ``checkpoint_id``.
        """
        listing = Listing(self._core, self._writes_of_many, config, filter, before, limit)
        while page := self._runner.run(listing.page()):
            yield from page

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """The async form of :meth:`list`."""
        listing = Listing(self._core, self._writes_of_many, config, filter, before, limit)
        while page := await self._runner.arun(listing.page()):
            for item in page:
                yield item

    # -- writing ------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save ``checkpoint`` as the newest of the config's thread and namespace.

        Channels in ``new_versions`` take their values from the checkpoint; the
        others keep what the parent (the config's ``checkpoint_id``) stored. Its id
        must sort after the thread's newest (LangGraph makes them so); saving one
        that does not raises :class:`~flowpoint.errors.CheckpointConflict`, unless it
        is the newest saved again unchanged.
        """
        return self._runner.run(self._core.put(config, checkpoint, metadata, new_versions))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """The async form of :meth:`put`."""
        return await self._runner.arun(self._core.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Save a task's writes against the checkpoint the config names.

        Keyed by task id and index (a special channel's reserved negative index): a
        regular write saved again is dropped, a special one replaces the one stored.
        """
        self._runner.run(put_writes(self._core, config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """The async form of :meth:`put_writes`."""
        await self._runner.arun(put_writes(self._core, config, writes, task_id, task_path))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Each channel's writes along the checkpoint's ancestors, and the value they start from.

        As LangGraph's savers define it; see
        :func:`~flowpoint.langgraph._writes.delta_channel_history`.
        """
        return self._runner.run(delta_channel_history(self._core, config, channels))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """The async form of :meth:`get_delta_channel_history`."""
        return await self._runner.arun(delta_channel_history(self._core, config, channels))

    # -- threads ------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of the thread, in every namespace."""
        self._runner.run(delete_threads(self._core, [thread_id]))

    async def adelete_thread(self, thread_id: str) -> None:
        """The async form of :meth:`delete_thread`."""
        await self._runner.arun(delete_threads(self._core, [thread_id]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and writes) whose metadata names one of these runs.

        Reads the metadata of every checkpoint of the store: from the headers when
        the codec does not encrypt, else by decoding each.
        """
        self._runner.run(delete_for_runs(self._core, run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """The async form of :meth:`delete_for_runs`."""
        await self._runner.arun(delete_for_runs(self._core, run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another, in every namespace.

        The copies keep their LangGraph ids; run it again after an interruption and
        it copies what is missing.
        """
        self._runner.run(self._copy_thread(source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """The async form of :meth:`copy_thread`."""
        await self._runner.arun(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep each namespace's newest checkpoint (``"keep_latest"``), or delete all.

        See :meth:`~flowpoint.langgraph._core.Core.prune` for the ancestors that
        delta channels need, which ``keep_latest`` keeps.
        """
        self._runner.run(prune(self._core, thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """The async form of :meth:`prune`."""
        await self._runner.arun(prune(self._core, thread_ids, strategy))

    def get_next_version(self, current: int | str | float | None, channel: None) -> Any:
        """The version after ``current``: ``1``, then ``2``...

        A version of the string form LangGraph's SQL savers use (in a thread
        imported from one) is followed by one of that form, which sorts after it.
        """
        if current is None:
            return 1
        if isinstance(current, str):
            number = int(current.split(".", 1)[0])
            return f"{number + 1:032}.{random.random():016}"
        return int(current) + 1

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...] | type]) -> Self:
        """A saver over the same store that also stores these classes.

        LangGraph passes ``(module, name)`` pairs of its graphs' state types here;
        a pair names a class only when that module is imported already (nothing
        is imported), and kinds the registry cannot hold are left out.
        """
        classes: list[type] = []
        for entry in extra_allowlist:
            found: object = entry
            if isinstance(entry, tuple) and len(entry) == 2:
                found = getattr(sys.modules.get(str(entry[0])), str(entry[1]), None)
            if isinstance(found, type):
                classes.append(found)
        registry = self.registry.with_classes(_storable(classes))
        clone = copy.copy(self)
        clone.registry = registry
        clone._core = self._core.with_layout(Layout(ValueCodec(registry)))
        return clone

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the store if the saver opened it; later calls raise ``RuntimeError``.

        Closing twice is harmless.
        """
        if self._runner.closed:
            return
        try:
            if self._runner.owned:
                self._runner.run(self._core.store.close())
        finally:
            self._runner.stop()

    async def aclose(self) -> None:
        """The async form of :meth:`close`."""
        if self._runner.closed:
            return
        try:
            if self._runner.owned:
                await self._runner.arun(self._core.store.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the work -----------------------------------------------------------------------

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        stored = await self._core.get(config)
        if stored is None:
            return None
        given = config if config["configurable"].get("checkpoint_id") else None
        return self._core.to_tuple(stored, await self._writes_of(stored), given)

    async def _writes_of(self, stored: Stored) -> builtins.list[tuple[str, str, Any]]:
        return await pending_writes(self._core, stored)

    async def _writes_of_many(
        self, stored: builtins.list[Stored]
    ) -> builtins.list[builtins.list[tuple[str, str, Any]]]:
        return await pending_writes_many(self._core, stored)

    async def _copy_thread(self, source: str, target: str) -> None:
        await copy_writes(self._core, await copy_thread(self._core, source, target))


def _storable(classes: Iterable[type]) -> list[type]:
    """The classes a registry can hold, of these."""
    kept = []
    for cls in classes:
        try:
            TypeRegistry([cls])
        except TypeError:
            continue
        kept.append(cls)
    return kept
