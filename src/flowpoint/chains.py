"""Delta chains, for the typed facade: the frames it keeps, and how it reads and cuts a chain.

A checkpoint stored as a delta names its base; reading it means reading the
chain of bases down to a whole checkpoint (or to a frame kept in memory), then
applying the deltas forward. Deleting a base first makes its dependents whole,
so that no delete or prune ever leaves a delta without its base.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.codec.base import DeltaCheckpointCodec
from flowpoint.codec.delta import Frame
from flowpoint.codec.serde import DELTA_BASE_KEY
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores.base import BlobCheckpointStore, RewritableBlobStore

__all__ = ["DEFAULT_FRAME_CACHE_BYTES", "FrameCache", "base_frame", "make_whole", "read_history"]

DEFAULT_FRAME_CACHE_BYTES = 64 * 1024 * 1024
"""State bytes the frames a facade keeps may hold, by default."""
_MAX_RANGE_READ = 256


class FrameCache:
    """Frames of checkpoints saved or loaded lately, by id, least recently used out first.

    Each trace's *tip* is the frame of the highest step seen in it: the base the
    next save in that trace is stored against; other frames stay for loads near
    them. Frames are what the codec made or checked itself, so one kept here is
    as good as one read back. ``max_bytes`` bounds the state bytes kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_FRAME_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"the frame cache size must be an int >= 0, not {max_bytes!r}")
        self.max_bytes = max_bytes
        self._frames: OrderedDict[CheckpointId, Frame] = OrderedDict()
        self._tips: dict[TraceId, CheckpointId] = {}
        self._bytes = 0

    def get(self, checkpoint_id: CheckpointId) -> Frame | None:
        """The frame of this checkpoint, if it is kept."""
        frame = self._frames.get(checkpoint_id)
        if frame is not None:
            self._frames.move_to_end(checkpoint_id)
        return frame

    def tip(self, trace_id: TraceId) -> Frame | None:
        """The frame of the highest step kept for the trace."""
        checkpoint_id = self._tips.get(trace_id)
        return None if checkpoint_id is None else self.get(checkpoint_id)

    def put(self, frame: Frame) -> None:
        """Keep ``frame``; it becomes its trace's tip unless the tip has a higher step.

        A tip that is superseded goes: a run's next save needs only the newest.
        """
        if frame.size > self.max_bytes:
            return
        self.forget(frame.checkpoint_id)
        tip = self.tip(frame.trace_id)
        if tip is None or tip.step <= frame.step:
            if tip is not None:
                self.forget(tip.checkpoint_id)
            self._tips[frame.trace_id] = frame.checkpoint_id
        self._frames[frame.checkpoint_id] = frame
        self._bytes += frame.size
        while self._bytes > self.max_bytes:
            _, oldest = self._frames.popitem(last=False)
            self._dropped(oldest)

    def forget(self, checkpoint_id: CheckpointId) -> None:
        """Drop this checkpoint's frame (it is being deleted)."""
        frame = self._frames.pop(checkpoint_id, None)
        if frame is not None:
            self._dropped(frame)

    def forget_tip(self, trace_id: TraceId) -> None:
        """Store the trace's next checkpoint whole (its saves may have conflicted)."""
        self._tips.pop(trace_id, None)

    def forget_trace(self, trace_id: TraceId) -> None:
        """Drop every frame of the trace."""
        for checkpoint_id in [i for i, f in self._frames.items() if f.trace_id == trace_id]:
            self.forget(checkpoint_id)

    def _dropped(self, frame: Frame) -> None:
        self._bytes -= frame.size
        if self._tips.get(frame.trace_id) == frame.checkpoint_id:
            del self._tips[frame.trace_id]


async def base_frame(
    store: BlobCheckpointStore,
    codec: DeltaCheckpointCodec[object],
    frames: FrameCache,
    blob: CheckpointBlob,
) -> Frame | None:
    """The frame of the base ``blob`` is a delta on, or ``None`` if ``blob`` is whole.

    Reads the chain below it in one range read where the frames kept do not
    reach. Raises :class:`CorruptCheckpoint` for a chain that is broken (a base
    missing, in another trace, or not below its delta) or damaged.
    """
    found = codec.base_of(blob)
    if found is None:
        return None
    wanted, chain_start = found
    frame = frames.get(wanted)
    if frame is not None:
        return frame
    # The range read is bounded whatever the header claims; a longer chain reads on
    # one checkpoint at a time below it.
    first = max(chain_start, blob.step - _MAX_RANGE_READ)
    nearby = {
        earlier.checkpoint_id: earlier
        for earlier in await store.load_steps(blob.trace_id, first, blob.step - 1)
    }
    chain: list[CheckpointBlob] = []
    above = blob
    while True:
        frame = frames.get(wanted)
        if frame is not None:
            break
        base = nearby.get(wanted) or await store.load(wanted)
        if base is None:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"it is stored as changes, and checkpoint {wanted} in its chain is missing",
            )
        if (
            base.checkpoint_id != wanted
            or base.trace_id != blob.trace_id
            or base.step >= above.step
        ):
            raise CorruptCheckpoint(
                above.checkpoint_id,
                f"its base {wanted} is stored as step {base.step} of trace "
                f"{base.trace_id!r:.80}, not below step {above.step} of {blob.trace_id!r:.80}",
            )
        chain.append(base)
        next_base = codec.base_of(base)
        if next_base is None:
            break
        wanted, above = next_base[0], base
    for base in reversed(chain):
        frame = codec.read_frame(base, frame)
        if frame is None:
            raise CorruptCheckpoint(
                base.checkpoint_id, "a delta is stored on it, but its state has no fields"
            )
    if frame is not None:
        frames.put(frame)
    return frame


async def read_history(store: BlobCheckpointStore, trace_id: TraceId) -> list[CheckpointInfo]:
    """Every header of the trace, newest first."""
    infos: list[CheckpointInfo] = []
    before: int | None = None
    while page := await store.history(trace_id, 500, before):
        infos.extend(page)
        before = page[-1].step
    return infos


async def make_whole(
    store: BlobCheckpointStore,
    codec: DeltaCheckpointCodec[object],
    frames: FrameCache,
    infos: Iterable[CheckpointInfo],
    doomed: set[CheckpointId],
) -> int:
    """Store whole every checkpoint of ``infos`` that is a delta on one of ``doomed``.

    Call it before deleting ``doomed``: their dependents then keep their states.
    Returns how many were rewritten. A delta names its base in its metadata,
    so the headers tell which checkpoints to read.
    """
    doomed_ids = {str(checkpoint_id) for checkpoint_id in doomed}
    rewritten = 0
    for info in sorted(infos, key=lambda info: info.step):
        if info.checkpoint_id in doomed or info.metadata.get(DELTA_BASE_KEY) not in doomed_ids:
            continue
        blob = await store.load(info.checkpoint_id)
        if blob is None or codec.base_of(blob) is None:
            continue  # deleted meanwhile, or already whole
        if not isinstance(store, RewritableBlobStore):
            raise TypeError(
                f"{type(store).__name__} cannot rewrite checkpoint {info.checkpoint_id}, "
                f"which is stored as changes to one being deleted"
            )
        frame = codec.read_frame(blob, await base_frame(store, codec, frames, blob))
        if frame is None:  # a delta always has fields
            raise CorruptCheckpoint(blob.checkpoint_id, "a delta without fields")
        rewritten += await store.rewrite(codec.rebase(blob, frame))
    return rewritten
