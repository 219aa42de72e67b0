"""The typed facade: a codec and a blob store, speaking in :class:`Checkpoint` objects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Self, overload

from flowpoint._chains import (
    DEFAULT_FRAME_CACHE_BYTES,
    FrameCache,
    MissingBase,
    delta_frame,
    make_whole,
    read_history,
)
from flowpoint.blob import CheckpointBlob, CheckpointInfo, PendingWrite
from flowpoint.checkpoint import Checkpoint, S, State, TaskWrite
from flowpoint.codec import CheckpointCodec, SerdeCheckpointCodec
from flowpoint.codec._base import DeltaCheckpointCodec, WriteCodec
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, GraphMismatch
from flowpoint.ids import CheckpointId, TraceId, coerce_checkpoint_id, validate_trace_id
from flowpoint.stores import BlobCheckpointStore, PruneRule
from flowpoint.stores._base import RewritableBlobStore
from flowpoint.stores._registry import DEFAULT_STORE_URL, open_store

__all__ = ["RekeyResult", "TypedCheckpointStore"]

# How often a read whose chain lost a checkpoint reads the checkpoint again.
_REREADS = 3


@dataclass(frozen=True, slots=True)
class RekeyResult:
    """What :meth:`TypedCheckpointStore.rekey` did."""

    rewritten: int
    """How many checkpoints it re-encrypted under the primary key."""
    skipped: tuple[CheckpointId, ...] = ()
    """Unencrypted checkpoints it left as they are (see :meth:`~TypedCheckpointStore.rekey`),
    and checkpoints whose unencrypted pending writes it left so."""
    writes: int = 0
    """How many pending writes it re-encrypted under the primary key."""


class TypedCheckpointStore(Generic[S]):
    """Saves and loads :class:`Checkpoint` objects of state type ``S``.

    The blob store comes first, then the codec (a
    :class:`~flowpoint.SerdeCheckpointCodec` of plain dict states by default)::

        store = TypedCheckpointStore(open_store("sqlite:///runs.db"),
                                     SerdeCheckpointCodec(ResearchState))
        async with store:
            await store.save_with_trace("trace-1", checkpoint, graph.hash_u64())
            latest = await store.load_latest("trace-1", graph.hash_u64())

    Closing this facade closes the blob store it wraps.

    With the stock codec and a store that can rewrite data
    (:class:`~flowpoint.stores._base.RewritableBlobStore`: every built-in backend),
    a checkpoint is stored as its changes to the one saved before it in the trace,
    where that pays (see :class:`~flowpoint.SerdeCheckpointCodec`); on any other
    store every checkpoint is stored whole. To compute and read those changes
    the facade keeps the fields of the checkpoints it saved or loaded lately in
    memory, up to ``frame_cache_bytes`` (64 MiB by default) of what they hold,
    array elements split out of them included (and, for later reads of a chain,
    the whole checkpoint it starts from and, on a load by id, every 8th state on
    the way). Deleting or
    pruning through the facade first stores whole any checkpoint that depends on
    one being deleted; the blob store's own ``delete`` and ``prune`` do not, so
    delete through the facade.
    """

    def __init__(
        self,
        store: BlobCheckpointStore,
        codec: CheckpointCodec[S] | None = None,
        *,
        frame_cache_bytes: int = DEFAULT_FRAME_CACHE_BYTES,
    ) -> None:
        if not isinstance(store, BlobCheckpointStore):
            raise TypeError(f"store must be a BlobCheckpointStore, not {type(store).__name__}")
        self.store = store
        self.codec: CheckpointCodec[S] = codec if codec is not None else SerdeCheckpointCodec()
        self._frames = FrameCache(frame_cache_bytes)
        # Deleting a checkpoint that others are stored as changes to means rewriting
        # them whole first: a store that cannot rewrite gets every checkpoint whole.
        self._deltas = isinstance(store, RewritableBlobStore)

    @overload
    @classmethod
    def open(
        cls, url: str = ..., state_type: type[S] = ..., **codec_options: Any
    ) -> TypedCheckpointStore[S]: ...
    @overload
    @classmethod
    def open(cls, url: str, state_type: Any, **codec_options: Any) -> TypedCheckpointStore[Any]: ...
    @classmethod
    def open(
        cls, url: str = DEFAULT_STORE_URL, state_type: Any = State, **codec_options: Any
    ) -> TypedCheckpointStore[Any]:
        """Open ``url`` with a ``SerdeCheckpointCodec(state_type, **codec_options)``."""
        codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(state_type, **codec_options)
        return TypedCheckpointStore(open_store(url), codec)

    async def save_with_trace(
        self, trace_id: TraceId | str, checkpoint: Checkpoint[S], graph_hash: int
    ) -> CheckpointInfo:
        """Encode and save ``checkpoint`` in the trace, stamped with the graph's hash.

        Raises :class:`~flowpoint.errors.CheckpointConflict` if the trace holds that
        step already, :class:`~flowpoint.errors.CodecError` if the state cannot be
        encoded. When this returns, the checkpoint is durable.
        """
        return (await self.save_encoded(trace_id, checkpoint, graph_hash)).info()

    async def save_encoded(
        self, trace_id: TraceId | str, checkpoint: Checkpoint[S], graph_hash: int
    ) -> CheckpointBlob:
        """:meth:`save_with_trace`, returning the blob it stored.

        For a caller that keeps what it saved: a later load of the same bytes under
        the same id is that checkpoint, with nothing to decode.
        """
        trace = validate_trace_id(trace_id)
        codec = self.codec
        if not isinstance(codec, DeltaCheckpointCodec):
            blob = codec.serialize(checkpoint, graph_hash, trace)
            await self.store.save(blob)
            return blob
        base = self._frames.tip(trace) if self._deltas else None
        blob, frame = codec.encode(checkpoint, graph_hash, trace, base)
        try:
            await self.store.save(blob)
        except CheckpointConflict:
            self._frames.forget_tip(trace)  # another writer is ahead in this trace
            raise
        if frame is None:
            self._frames.forget_tip(trace)
        else:
            self._frames.put(frame)
        return blob

    async def load(
        self, checkpoint_id: CheckpointId | str, expected_hash: int | None
    ) -> Checkpoint[S] | None:
        """The checkpoint with this id, or ``None``.

        Raises :class:`~flowpoint.errors.GraphMismatch` if it was written by another
        graph than ``expected_hash`` (``None`` accepts any graph). A checkpoint
        deleted while it is read (by a prune, say) gives ``None`` too.
        """
        wanted = coerce_checkpoint_id(checkpoint_id)

        async def fetch() -> CheckpointBlob | None:
            blob = await self.store.load(wanted)
            if blob is not None and blob.checkpoint_id != wanted:
                raise CorruptCheckpoint(
                    wanted, f"the store returned checkpoint {blob.checkpoint_id}"
                )
            return blob

        blob = await fetch()
        if blob is None:
            return None
        # A load by id is random access into history: keep frames along its chain.
        return await self._read(blob, fetch, expected_hash, waypoints=True)

    async def load_latest(
        self, trace_id: TraceId | str, expected_hash: int | None
    ) -> Checkpoint[S] | None:
        """The checkpoint with the highest step in the trace, or ``None`` for an empty trace.

        Raises :class:`~flowpoint.errors.GraphMismatch` as :meth:`load` does. If the
        latest changes while it is read (a prune deletes the checkpoint it is stored
        as changes to, say), the new latest is read.
        """
        trace = validate_trace_id(trace_id)

        async def fetch() -> CheckpointBlob | None:
            blob = await self.store.load_latest(trace)
            if blob is not None and blob.trace_id != trace:
                raise CorruptCheckpoint(
                    blob.checkpoint_id,
                    f"asked for trace {trace!r}, the store returned {blob.trace_id!r}",
                )
            return blob

        blob = await fetch()
        return None if blob is None else await self._read(blob, fetch, expected_hash)

    async def decode(self, blob: CheckpointBlob, expected_hash: int | None) -> Checkpoint[S]:
        """Check and decode a blob of this store, reading the chain below it if it is a delta.

        What :meth:`load` does once it has the blob; tools that list and read blobs
        themselves use it. Raises as :meth:`load` does, and
        :class:`~flowpoint.errors.CorruptCheckpoint` for a broken chain: a
        :class:`~flowpoint._chains.MissingBase` if a checkpoint of the chain is not in
        the store even after the blob's checkpoint was read again (it was deleted
        meanwhile, or the chain is broken).
        """
        checkpoint_id = blob.checkpoint_id

        async def fetch() -> CheckpointBlob | None:
            return await self.store.load(checkpoint_id)

        checkpoint = await self._read(blob, fetch, expected_hash)
        if checkpoint is None:
            raise MissingBase(checkpoint_id, None)
        return checkpoint

    async def _read(
        self,
        blob: CheckpointBlob,
        fetch: Callable[[], Awaitable[CheckpointBlob | None]],
        expected_hash: int | None,
        *,
        waypoints: bool = False,
    ) -> Checkpoint[S] | None:
        """Decode ``blob``; if its chain lost a checkpoint meanwhile, decode what ``fetch`` finds.

        A prune or delete stores whole every checkpoint that is changes to one it
        deletes before it deletes it, so a reader that meets a missing base read the
        chain in the middle of that: read again, what it finds is whole (or gone:
        ``None``). A delta that still names a missing base, unchanged, is damage.
        """
        rereads = 0
        while True:
            try:
                return await self._decode(blob, expected_hash, waypoints)
            except MissingBase as exc:
                rereads += 1
                if rereads > _REREADS:
                    raise
                again = await fetch()
                if again is None:
                    return None
                if exc.named_by == blob.checkpoint_id and again.data == blob.data:
                    raise  # the checkpoint itself names a base that is not there
                blob = again

    async def _decode(
        self, blob: CheckpointBlob, expected_hash: int | None, waypoints: bool
    ) -> Checkpoint[S]:
        codec = self.codec
        if not isinstance(codec, DeltaCheckpointCodec):
            return codec.deserialize(blob, expected_hash)
        if expected_hash is not None and blob.graph_hash != expected_hash:
            # Raised by the codec, after it has checked the bytes: before any chain is read.
            codec.decode(blob, expected_hash, None)
            raise GraphMismatch(expected_hash, blob.graph_hash)
        known = self._frames.get(blob.checkpoint_id)
        if known is None and codec.base_of(blob) is not None:
            known = await delta_frame(self.store, codec, self._frames, blob, waypoints=waypoints)
        checkpoint, frame = codec.decode(blob, expected_hash, None, known=known)
        if frame is not None and frame is not known:
            self._frames.put(frame)
        return checkpoint

    async def history(
        self, trace_id: TraceId | str, limit: int = 50, before_step: int | None = None
    ) -> list[CheckpointInfo]:
        """Up to ``limit`` headers of the trace, newest first, without decoding states.

        Page on by passing the last step seen as ``before_step``.
        """
        return await self.store.history(trace_id, limit, before_step)

    async def traces(self) -> list[TraceId]:
        """Every trace holding at least one checkpoint, sorted."""
        return await self.store.traces()

    async def save_writes(
        self,
        trace_id: TraceId | str,
        checkpoint_id: CheckpointId | str,
        writes: Iterable[TaskWrite],
        *,
        overwrite: bool = False,
    ) -> int:
        """Encode and save task writes against the checkpoint the tasks ran from; all or none.

        A write is keyed by ``(checkpoint_id, task_id, index)``. Without
        ``overwrite`` the first write of a key wins (a rerun's copy is dropped, and
        that is not an error); with it, the new data replaces the old (an error
        recorded again, a reserved channel). Returns how many were stored or
        replaced. Raises :class:`~flowpoint.errors.CodecError` for a value the codec
        cannot encode, and ``TypeError`` if the codec cannot store writes.

        A LangGraph saver's ``put_writes(config, writes, task_id, task_path)`` is
        ``save_writes(thread, checkpoint, [TaskWrite(task_id, WRITES_IDX_MAP.get(channel,
        i), channel, value, task_path) for i, (channel, value) in enumerate(writes)],
        overwrite=all(channel in WRITES_IDX_MAP for channel, _ in writes))``.
        """
        trace = validate_trace_id(trace_id)
        checkpoint = coerce_checkpoint_id(checkpoint_id)
        codec = self._write_codec()
        encoded = []
        for write in writes:
            if not isinstance(write, TaskWrite):
                raise TypeError(f"save_writes takes TaskWrite objects, not {type(write).__name__}")
            encoded.append(codec.encode_write(trace, checkpoint, write))
        return await self.store.save_writes(encoded, overwrite=overwrite)

    async def load_writes(self, checkpoint_id: CheckpointId | str) -> list[TaskWrite]:
        """The writes saved against the checkpoint, by task id, then index; ``[]`` if none.

        Values come back as plain data. Raises
        :class:`~flowpoint.errors.CorruptCheckpoint` for damaged data, or data that
        belongs to another checkpoint, task or index than it is stored under.
        """
        checkpoint = coerce_checkpoint_id(checkpoint_id)
        codec = self._write_codec()
        return self._decode_writes(codec, checkpoint, await self.store.load_writes(checkpoint))

    async def writes_if_latest(self, blob: CheckpointBlob) -> list[TaskWrite] | None:
        """The writes of ``blob``'s checkpoint if it is still its trace's latest; else ``None``.

        :meth:`load_writes`, when the store holds ``blob`` as the latest byte for byte
        (see :meth:`~flowpoint.BlobCheckpointStore.writes_if_latest`); ``blob`` is one
        this store saved (:meth:`save_encoded`) or loaded.
        """
        found = await self.store.writes_if_latest(blob)
        if found is None:
            return None
        return self._decode_writes(self._write_codec(), blob.checkpoint_id, found)

    async def load_writes_many(
        self, checkpoint_ids: Iterable[CheckpointId | str]
    ) -> dict[CheckpointId, list[TaskWrite]]:
        """:meth:`load_writes` of each of these checkpoints, read in one call to the store.

        Every id asked for is a key, with ``[]`` for a checkpoint without writes.
        """
        wanted = [coerce_checkpoint_id(one) for one in checkpoint_ids]
        codec = self._write_codec()
        found = await self.store.load_writes_many(wanted)
        return {
            checkpoint: self._decode_writes(codec, checkpoint, stored)
            for checkpoint, stored in found.items()
        }

    @staticmethod
    def _decode_writes(
        codec: WriteCodec, checkpoint: CheckpointId, stored_writes: list[PendingWrite]
    ) -> list[TaskWrite]:
        writes = []
        for stored in stored_writes:
            if stored.checkpoint_id != checkpoint:
                raise CorruptCheckpoint(
                    checkpoint, f"the store returned a write of checkpoint {stored.checkpoint_id}"
                )
            writes.append(codec.decode_write(stored))
        return writes

    def _write_codec(self) -> WriteCodec:
        codec = self.codec
        if not isinstance(codec, WriteCodec):
            raise TypeError(f"{type(codec).__name__} cannot store pending writes (a WriteCodec)")
        return codec

    async def delete(self, checkpoint_id: CheckpointId | str) -> bool:
        """Delete one checkpoint; ``False`` if it was not there.

        A checkpoint stored as changes to this one is first stored whole.
        """
        wanted = coerce_checkpoint_id(checkpoint_id)
        blob = await self.store.load(wanted)
        if blob is None:
            return False
        await self._make_dependents_whole(blob.trace_id, [wanted], None)
        self._frames.forget(wanted)
        return await self.store.delete(wanted)

    async def delete_trace(self, trace_id: TraceId | str) -> int:
        """Delete a whole trace; return how many checkpoints it held."""
        trace = validate_trace_id(trace_id)
        self._frames.forget_trace(trace)
        return await self.store.delete_trace(trace)

    async def prune(
        self,
        trace_id: TraceId | str,
        *,
        keep_latest: int | None = None,
        older_than: timedelta | None = None,
    ) -> int:
        """Delete old checkpoints of a trace; return how many were deleted.

        A checkpoint goes when it meets every rule given: it is not among the newest
        ``keep_latest``, and it is older than ``older_than``. ``keep_latest=1,
        older_than=timedelta(days=7)`` drops week-old checkpoints but always keeps
        the latest. Giving neither raises ``ValueError``.
        """
        rule = PruneRule(keep_latest, older_than)
        trace = validate_trace_id(trace_id)
        infos = await read_history(self.store, trace)
        doomed = [info.checkpoint_id for info in rule.doomed(infos)]
        return await self._delete_from(trace, doomed, infos)

    async def delete_checkpoints(
        self, trace_id: TraceId | str, checkpoint_ids: Iterable[CheckpointId | str]
    ) -> int:
        """Delete these checkpoints of the trace at once; return how many were there.

        Checkpoints stored as changes to them are first stored whole; ids that are
        not in the trace are skipped.
        """
        trace = validate_trace_id(trace_id)
        wanted = {coerce_checkpoint_id(one) for one in checkpoint_ids}
        infos = await read_history(self.store, trace)
        return await self._delete_from(
            trace, [i.checkpoint_id for i in infos if i.checkpoint_id in wanted], infos
        )

    async def _delete_from(
        self, trace: TraceId, doomed: list[CheckpointId], infos: list[CheckpointInfo]
    ) -> int:
        if not doomed:
            return 0
        await self._make_dependents_whole(trace, doomed, infos)
        for checkpoint_id in doomed:
            self._frames.forget(checkpoint_id)
        return await self.store.delete_many(doomed)

    async def _make_dependents_whole(
        self,
        trace: TraceId,
        doomed: list[CheckpointId],
        infos: list[CheckpointInfo] | None,
    ) -> None:
        codec = self.codec
        if not isinstance(codec, DeltaCheckpointCodec):
            return  # such a codec writes no deltas, and reads none
        if infos is None:
            infos = await read_history(self.store, trace)
        await make_whole(self.store, codec, self._frames, infos, set(doomed))

    async def rekey(self, trace_id: TraceId | str | None = None) -> RekeyResult:
        """Re-encrypt the trace's checkpoints (every trace's, by default) under the primary key.

        Each checkpoint encrypted with another key of the codec's key ring is
        decrypted (and so authenticated) and encrypted again under the ring's primary
        key, keeping its header, body format and compression; its state is never
        decoded. Its pending writes are re-encrypted the same way. Checkpoints
        deleted meanwhile are passed over. Run it after making a new key the
        primary, and remove the old key from the ring only once it rewrites nothing
        more.

        An unencrypted checkpoint is left as it is and its id reported in
        :attr:`RekeyResult.skipped`: in a store written with a key ring, only a writer
        without the key could have put it there, and encrypting it would vouch for
        it. A codec with ``allow_unencrypted=True`` (while turning encryption on for
        a store written before) encrypts those too: rekey such a store only when you
        trust what it holds.

        Raises ``TypeError`` if the store cannot rewrite data
        (:class:`~flowpoint.stores._base.RewritableBlobStore`) or the codec is not a
        :class:`~flowpoint.SerdeCheckpointCodec` with a key ring;
        :class:`~flowpoint.errors.CodecError` (naming the key id) for a checkpoint
        whose key the ring no longer holds; and
        :class:`~flowpoint.errors.CorruptCheckpoint` for damaged data. Checkpoints
        rewritten before an error stay rewritten: run it again to finish.
        """
        store = self.store
        if not isinstance(store, RewritableBlobStore):
            raise TypeError(f"{type(store).__name__} cannot rewrite checkpoints, so cannot rekey")
        codec = self.codec
        if not isinstance(codec, SerdeCheckpointCodec) or codec.encryption is None:
            raise TypeError(
                "rekey needs a SerdeCheckpointCodec with a key ring (encryption=KeyRing(...))"
            )
        primary = codec.encryption.primary
        traces = await store.traces() if trace_id is None else [validate_trace_id(trace_id)]
        rewritten = writes = 0
        skipped: list[CheckpointId] = []
        for trace in traces:
            before: int | None = None
            while page := await store.history(trace, 500, before):
                before = page[-1].step
                for info in page:
                    writes += await self._rekey_writes(codec, info.checkpoint_id, skipped)
                    blob = await store.load(info.checkpoint_id)
                    if blob is None:
                        continue  # deleted since the listing
                    key_id = codec.key_id_of(blob)
                    if key_id == primary:
                        continue
                    if key_id is None and not codec.allow_unencrypted:
                        skipped.append(blob.checkpoint_id)
                        continue
                    rewritten += await store.rewrite(codec.reseal(blob))
        return RekeyResult(rewritten, tuple(dict.fromkeys(skipped)), writes)

    async def _rekey_writes(
        self,
        codec: SerdeCheckpointCodec[Any],
        checkpoint_id: CheckpointId,
        skipped: list[CheckpointId],
    ) -> int:
        """Re-encrypt the checkpoint's pending writes that are not under the primary key."""
        assert codec.encryption is not None
        resealed = []
        for write in await self.store.load_writes(checkpoint_id):
            key_id = codec.key_id_of_write(write)
            if key_id == codec.encryption.primary:
                continue
            if key_id is None and not codec.allow_unencrypted:
                skipped.append(checkpoint_id)
                continue
            resealed.append(codec.reseal_write(write))
        return await self.store.save_writes(resealed, overwrite=True) if resealed else 0

    async def close(self) -> None:
        """Close the blob store."""
        await self.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
