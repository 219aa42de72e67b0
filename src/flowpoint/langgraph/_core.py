"""The saver's work, as coroutines over a typed store: what every public method runs.

Threads and namespaces are traces (:mod:`~flowpoint.langgraph._threads`); a
checkpoint's flowpoint step is its place in its trace, counted from 0; its
flowpoint id is its LangGraph id when that is a UUID not stored in another trace
already (a copied thread's are not), and otherwise one derived from the trace
and the LangGraph id, which the header then names. A trace's checkpoints are
saved in the order of their LangGraph ids, so that its newest step is LangGraph's
newest checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.base import Checkpoint as LangGraphCheckpoint

from flowpoint.blob import CheckpointBlob
from flowpoint.checkpoint import Checkpoint, TaskWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.langgraph._layout import (
    ADAPTER_GRAPH_HASH,
    Layout,
    Parent,
    header_metadata,
    lg_id_of,
    next_nodes,
)
from flowpoint.langgraph._threads import thread_key, thread_of, trace_for
from flowpoint.langgraph._tips import Tip, Tips
from flowpoint.typed import TypedCheckpointStore

__all__ = ["Core", "Stored", "Where"]

State = dict[str, msgspec.Raw]
_SAVE_ATTEMPTS: Final = 8
_MAX_LG_ID: Final = 1024
_ID_DOMAIN: Final = b"flowpoint.langgraph checkpoint id\x00"


@dataclass(frozen=True, slots=True)
class Where:
    """A thread and namespace, and the trace that holds them."""

    thread: str
    ns: str
    trace: TraceId
    thread_given: Any = None
    """The ``thread_id`` as the config gave it, returned in configs made for it."""

    @classmethod
    def of(cls, config: RunnableConfig) -> Where:
        """The thread and namespace a config names; ``ValueError`` if it names none."""
        # type() first: a config is a dict, and an ABC's isinstance is slow on every call.
        mapping = type(config) is dict or isinstance(config, Mapping)
        configurable = config.get("configurable") if mapping else None
        if type(configurable) is not dict and not isinstance(configurable, Mapping):
            raise ValueError("the config has no 'configurable' mapping naming a thread_id")
        given = configurable.get("thread_id")
        thread = thread_key(given)
        ns = configurable.get("checkpoint_ns") or ""
        return cls(thread, ns, trace_for(thread, ns), given)

    @classmethod
    def of_trace(cls, trace: TraceId) -> Where | None:
        found = thread_of(trace)
        return None if found is None else cls(found[0], found[1], trace, found[0])

    def config(self, lg_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": self.thread_given,
                "checkpoint_ns": self.ns,
                "checkpoint_id": lg_id,
            }
        }


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored checkpoint, read: where it is, and its fields (decoded when asked)."""

    where: Where
    checkpoint: Checkpoint[State]
    writes: list[TaskWrite] | None = None
    """Its pending writes, when they were read with it."""

    @property
    def fields(self) -> State:
        return self.checkpoint.state

    @property
    def lg_id(self) -> str:
        return lg_id_of(self.checkpoint.checkpoint_id, self.checkpoint.metadata)


def checkpoint_id_for(trace: TraceId, lg_id: str, *, derived: bool) -> CheckpointId:
    """The flowpoint id of LangGraph checkpoint ``lg_id`` in ``trace``.

    The LangGraph id itself when it is a UUID in canonical form and ``derived`` is
    false; otherwise a UUID (version 8) made from the trace and the LangGraph id.
    """
    if not derived:
        try:
            own = UUID(lg_id)
        except ValueError:
            pass
        else:
            if str(own) == lg_id:
                return CheckpointId(own)
    digest = hashlib.blake2b(
        _ID_DOMAIN + trace.encode() + b"\x00" + lg_id.encode("utf-8", "surrogatepass"),
        digest_size=16,
    ).digest()
    value = int.from_bytes(digest, "big")
    value = (value & ~(0xF000 << 64)) | (0x8000 << 64)  # version 8
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    return CheckpointId(UUID(int=value))


class Core:
    """What the saver does, over a typed store of :data:`State` checkpoints."""

    def __init__(
        self,
        store: TypedCheckpointStore[State],
        layout: Layout,
        *,
        copy_metadata: bool,
        tip_bytes: int,
    ) -> None:
        self.store = store
        self.layout = layout
        self.copy_metadata = copy_metadata
        self.tips = Tips(tip_bytes)

    def with_layout(self, layout: Layout) -> Core:
        """A copy with another layout (another registry of types), sharing the rest."""
        clone = copy.copy(self)
        clone.layout = layout
        return clone

    # -- reading ------------------------------------------------------------------------

    async def get(self, config: RunnableConfig) -> Stored | None:
        """The checkpoint a config names: by its ``checkpoint_id``, or the newest."""
        where = Where.of(config)
        lg_id = config["configurable"].get("checkpoint_id")
        if lg_id:
            blob = await self.locate(where.trace, str(lg_id))
            return None if blob is None else await self.read(where, blob)
        tip = self.tips.get(where.trace)
        if tip is not None and tip.checkpoint is not None and tip.stored is not None:
            writes = await self.store.writes_if_latest(tip.stored)
            if writes is not None:
                # The store's newest is, byte for byte, the newest this saver wrote or
                # read: what decoding it (and its chain) would give is the one kept.
                return Stored(where, tip.checkpoint, writes)
        blob = await self.store.store.load_latest(where.trace)
        if blob is None or blob.graph_hash != ADAPTER_GRAPH_HASH:
            return None
        stored = await self.read(where, blob)
        self._keep_tip(stored, blob)
        return stored

    async def locate(self, trace: TraceId, lg_id: str) -> CheckpointBlob | None:
        """The blob of LangGraph checkpoint ``lg_id`` in ``trace``, or ``None``."""
        for derived in (False, True):
            checkpoint_id = checkpoint_id_for(trace, lg_id, derived=derived)
            blob = await self.store.store.load(checkpoint_id)
            if (
                blob is not None
                and blob.trace_id == trace
                and blob.graph_hash == ADAPTER_GRAPH_HASH
                and lg_id_of(blob.checkpoint_id, blob.metadata) == lg_id
            ):
                return blob
        return None

    async def checkpoint_id_of(self, where: Where, lg_id: str) -> CheckpointId:
        """The flowpoint id of LangGraph checkpoint ``lg_id`` of the trace, stored or not yet.

        Writes may be saved before their checkpoint is (LangGraph saves in the
        background): such a checkpoint gets the id it will be saved under.
        """
        tip = self.tips.get(where.trace)
        if tip is not None and tip.lg_id == lg_id:
            return tip.checkpoint_id
        blob = await self.locate(where.trace, lg_id)
        if blob is not None:
            return blob.checkpoint_id
        return checkpoint_id_for(where.trace, lg_id, derived=False)

    async def read(self, where: Where, blob: CheckpointBlob) -> Stored:
        """Check and decode a blob of the store (its chain too, for a delta)."""
        return Stored(where, await self.store.decode(blob, ADAPTER_GRAPH_HASH))

    def to_tuple(
        self,
        stored: Stored,
        pending_writes: list[tuple[str, str, Any]],
        config: RunnableConfig | None = None,
    ) -> CheckpointTuple:
        """The LangGraph tuple of a stored checkpoint; ``config`` is returned as it is, if given."""
        cid = stored.checkpoint.checkpoint_id
        checkpoint, metadata, parent = self.layout.read(stored.fields, cid)
        if checkpoint["id"] != stored.lg_id:
            raise CorruptCheckpoint(
                cid, "the stored checkpoint's id is not the one its header names"
            )
        where = stored.where
        return CheckpointTuple(
            config=config or where.config(checkpoint["id"]),
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=None if parent is None else where.config(parent),
            pending_writes=pending_writes,
        )

    # -- writing ------------------------------------------------------------------------

    async def put(
        self,
        config: RunnableConfig,
        checkpoint: LangGraphCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save ``checkpoint`` as the newest of its thread and namespace."""
        where = Where.of(config)
        lg_id = checkpoint.get("id") if isinstance(checkpoint, Mapping) else None
        if not isinstance(lg_id, str) or not lg_id or len(lg_id) > _MAX_LG_ID:
            raise ValueError(f"a checkpoint's id must be a str of 1 to {_MAX_LG_ID} characters")
        parent_lg = config["configurable"].get("checkpoint_id") or None
        parent = None if parent_lg is None else await self._parent(where, str(parent_lg))
        full_metadata = get_checkpoint_metadata(config, metadata)
        fields = self.layout.fields(
            checkpoint,
            full_metadata,
            None if parent_lg is None else str(parent_lg),
            new_versions,
            parent,
        )
        state = {key: msgspec.Raw(value) for key, value in fields.items()}
        created_at = _created_at(checkpoint.get("ts"))
        current_node = next_nodes(checkpoint)
        derived = False
        for _ in range(_SAVE_ATTEMPTS):
            tip = await self._tip(where.trace)
            if tip is not None and lg_id <= tip.lg_id:
                if lg_id == tip.lg_id and await self._same_as_stored(where, tip, fields):
                    return where.config(lg_id)
                raise CheckpointConflict(
                    where.trace,
                    tip.step,
                    f"checkpoint {lg_id!r} is not newer than the thread's newest, "
                    f"{tip.lg_id!r}: a thread's checkpoints are saved in the order of their ids",
                )
            checkpoint_id = checkpoint_id_for(where.trace, lg_id, derived=derived)
            step = 0 if tip is None else tip.step + 1
            flowpoint_checkpoint = Checkpoint(
                checkpoint_id=checkpoint_id,
                step=step,
                parent_id=None if parent is None else parent.checkpoint_id,
                current_node=current_node,
                state=state,
                created_at=created_at,
                metadata=header_metadata(
                    full_metadata,
                    copy=self.copy_metadata,
                    lg_id=None if str(checkpoint_id) == lg_id else lg_id,
                ),
            )
            try:
                blob = await self.store.save_encoded(
                    where.trace, flowpoint_checkpoint, ADAPTER_GRAPH_HASH
                )
            except CheckpointConflict:
                self.tips.forget(where.trace)
                holder = await self.store.store.load(checkpoint_id)
                if holder is not None and holder.trace_id != where.trace:
                    derived = True  # the id is another trace's (a copied thread's)
                continue
            versions = dict(checkpoint.get("channel_versions") or {})
            saved = Tip(
                checkpoint_id,
                lg_id,
                step,
                fields,
                versions,
                checkpoint=flowpoint_checkpoint,
                stored=blob,
            )
            self.tips.put(where.trace, saved)
            return where.config(lg_id)
        raise CheckpointConflict(
            where.trace, step, f"{_SAVE_ATTEMPTS} attempts to save checkpoint {lg_id!r} collided"
        )

    async def _tip(self, trace: TraceId) -> Tip | None:
        tip = self.tips.get(trace)
        if tip is not None:
            return tip
        newest = await self.store.history(trace, 1)
        if not newest:
            return None
        info = newest[0]
        tip = Tip(info.checkpoint_id, lg_id_of(info.checkpoint_id, info.metadata), info.step)
        self.tips.put(trace, tip)
        return tip

    async def _parent(self, where: Where, lg_id: str) -> Parent | None:
        """What a checkpoint following ``lg_id`` may take from it; ``None`` if it is not stored."""
        tip = self.tips.get(where.trace)
        if tip is not None and tip.lg_id == lg_id and tip.fields is not None:
            versions = tip.versions
            if versions is None:
                versions = self.layout.versions(tip.fields, tip.checkpoint_id)
            return Parent(lg_id, tip.checkpoint_id, tip.fields, versions)
        blob = await self.locate(where.trace, lg_id)
        if blob is None:
            return None
        stored = await self.read(where, blob)
        cid = stored.checkpoint.checkpoint_id
        return Parent(lg_id, cid, stored.fields, self.layout.versions(stored.fields, cid))

    async def _same_as_stored(self, where: Where, tip: Tip, fields: Mapping[str, bytes]) -> bool:
        """Whether the trace's newest checkpoint holds exactly ``fields`` (a repeated put)."""
        blob = await self.store.store.load(tip.checkpoint_id)
        if blob is None:
            return False
        stored = await self.read(where, blob)
        return {key: bytes(value) for key, value in stored.fields.items()} == dict(fields)

    def _keep_tip(self, stored: Stored, blob: CheckpointBlob) -> None:
        checkpoint = stored.checkpoint
        tip = Tip(
            checkpoint.checkpoint_id,
            stored.lg_id,
            checkpoint.step,
            stored.fields,
            checkpoint=checkpoint,
            stored=blob,
        )
        self.tips.put(stored.where.trace, tip)


def _created_at(ts: object) -> datetime:
    """The creation time a LangGraph checkpoint states, or now if it states none usable."""
    if isinstance(ts, str):
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)
    return datetime.now(UTC)
