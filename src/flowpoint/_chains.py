"""Delta chains, for the typed facade: the frames it keeps, and how it reads and cuts a chain.

A checkpoint stored as a delta names its base; reading it means reading the
chain of bases down to a whole checkpoint (or to a frame kept in memory), then
applying the deltas forward. This module is where chains are walked: which
checkpoints are read, in what order, and how far; the codec applies them.

What is checked where, reading a checkpoint stored as changes:

- **Each link's bytes**, when the codec opens it: the checksum, the header against
  the store's own copy and, if encrypted, authentication. Every link, whatever
  else happens, before anything of it is used.
- **Each link's place**, here while walking down: the base a delta names (in its
  authenticated header) is the checkpoint read next, in the same trace at an
  earlier step; a chain holds at most :data:`MAX_DELTA_CHAIN` deltas (no writer
  makes more, so a longer one is damage, and refused before any delta is applied).
  The walk reads at most one range of steps per link, then looks the base up by
  id, whatever a header claims about where its chain starts.
- **Each link's fit**, by the codec as it applies the deltas oldest first: what a
  delta names exists and fits (fields, arrays, element indices), and the state it
  leaves has the size the delta records (kept per field, so this costs what the
  delta holds, not the state).
- **The state read**, once: the state the last delta leaves is checked against
  the size and XXH3-64 hash that delta records, before anything is decoded. A
  wrong base or a damaged link either shows there, or was overwritten by a later
  delta (then the state is exactly the one that was saved). That state's frame
  is kept, and the whole checkpoint's the chain started from; a load by id also
  builds and keeps the state of every :data:`_WAYPOINT`-th delta on the way,
  each checked against the hash its own delta records first. Later reads of the
  chain start from the nearest kept frame; other states in between are never built.

Each link's own hash used to be checked too, which named the link where a wrong
base crept in, at the cost of hashing the whole state per link. What it guarded
is kept: a wrong base almost always shows as a size that differs at that very
link, and otherwise at the end; either way before any state is decoded, and no
frame that was not checked is ever kept or used as the base of a save.

Deleting a base first makes its dependents whole, so that no delete or prune
ever leaves a delta without its base. A reader that meets a missing base anyway
(the base was deleted after it read the delta, by a prune that had made the
delta whole first) gets :class:`MissingBase`, which the facade answers by reading
the checkpoint again.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.codec._base import DeltaCheckpointCodec
from flowpoint.codec._delta import Frame
from flowpoint.codec._serde import DELTA_BASE_KEY, MAX_DELTA_CHAIN
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import BlobCheckpointStore, RewritableBlobStore

__all__ = [
    "DEFAULT_FRAME_CACHE_BYTES",
    "MAX_DELTA_CHAIN",
    "FrameCache",
    "MissingBase",
    "delta_frame",
    "make_whole",
    "read_history",
]

DEFAULT_FRAME_CACHE_BYTES = 64 * 1024 * 1024
"""Bytes of memory the frames a facade keeps may hold, by default."""
# Steps read at once while walking down a chain.
_RANGE_READ = 256
# Reading a chain keeps the frame of every this many deltas on the way, so that a
# later read near them (a load by id) applies at most this many deltas.
_WAYPOINT = 8


class MissingBase(CorruptCheckpoint):
    """A checkpoint of the chain below ``checkpoint_id`` is not in the store.

    ``missing`` is the checkpoint that is not there (``None``: the checkpoint read
    is gone itself), ``named_by`` the delta that names it as its base. Damage,
    unless the chain was rewritten while it was read: the facade reads the
    checkpoint again before it reports it.
    """

    def __init__(
        self, checkpoint_id: UUID | None, missing: UUID | None, named_by: UUID | None = None
    ) -> None:
        self.missing = missing
        self.named_by = named_by
        reason = (
            "it was deleted while it was read"
            if missing is None
            else f"it is stored as changes, and checkpoint {missing} in its chain is missing"
        )
        super().__init__(checkpoint_id, reason)

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[MissingBase], tuple[UUID | None, UUID | None, UUID | None]]:
        return (type(self), (self.checkpoint_id, self.missing, self.named_by))


class FrameCache:
    """Frames of checkpoints saved or loaded lately, by id, least recently used out first.

    Each trace's *tip* is the frame of the highest step seen in it: the base the
    next save in that trace is stored against; other frames stay for loads near
    them. Frames are what the codec made or checked itself, so one kept here is
    as good as one read back. ``max_bytes`` bounds the memory the frames hold
    (:attr:`Frame.held <flowpoint.codec._delta.Frame.held>`: their fields, and the
    array elements split out of them). A frame handed out may split an array
    (when a delta is made against it): what it holds then is counted again at the
    next call, and the least recently used frames go until the total fits.
    """

    def __init__(self, max_bytes: int = DEFAULT_FRAME_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"the frame cache size must be an int >= 0, not {max_bytes!r}")
        self.max_bytes = max_bytes
        # Each frame with what it held when last counted, by its id as an int (a UUID
        # hashes in Python; an int does not, and every save and load looks frames up).
        self._frames: OrderedDict[int, _Kept] = OrderedDict()
        self._tips: dict[TraceId, int] = {}
        # Each trace's kept frames as (step, id), sorted: where a chain read may start.
        self._steps: dict[TraceId, list[tuple[int, int]]] = {}
        self._lent: list[_Kept] = []
        self._bytes = 0

    @property
    def held(self) -> int:
        """Bytes the kept frames hold, as last counted."""
        return self._bytes

    def get(self, checkpoint_id: CheckpointId) -> Frame | None:
        """The frame of this checkpoint, if it is kept."""
        return self._get(checkpoint_id.int)

    def tip(self, trace_id: TraceId) -> Frame | None:
        """The frame of the highest step kept for the trace."""
        key = self._tips.get(trace_id)
        return None if key is None else self._get(key)

    def put(self, frame: Frame) -> None:
        """Keep ``frame``; it becomes its trace's tip unless the tip has a higher step.

        A tip that is superseded goes: a run's next save needs only the newest.
        """
        key = frame.checkpoint_id.int
        self._forget(key)
        if frame.held > self.max_bytes:
            return
        tip_key = self._tips.get(frame.trace_id)
        tip = None if tip_key is None else self._frames.get(tip_key)
        if tip is None or tip.frame.step <= frame.step:
            if tip_key is not None:
                self._forget(tip_key)
            self._tips[frame.trace_id] = key
        self._add(key, frame)

    def keep(self, frame: Frame) -> None:
        """Keep ``frame`` for later reads, leaving the trace's tip alone.

        For the frames a chain read passes through (its keyframe): the next read
        of that chain starts from them instead of the store's whole checkpoint.
        A frame kept already stays as it is.
        """
        key = frame.checkpoint_id.int
        if key in self._frames or frame.held > self.max_bytes:
            return
        self._add(key, frame)

    def below(self, trace_id: TraceId, step: int, lowest: int) -> Frame | None:
        """The kept frame of the trace with the highest step from ``lowest`` to below ``step``."""
        steps = self._steps.get(trace_id)
        if not steps:
            return None
        index = bisect.bisect_left(steps, (step, -1)) - 1  # ids are ints >= 0
        if index < 0 or steps[index][0] < lowest:
            return None
        return self._get(steps[index][1])

    def forget(self, checkpoint_id: CheckpointId) -> None:
        """Drop this checkpoint's frame (it is being deleted)."""
        self._forget(checkpoint_id.int)

    def forget_tip(self, trace_id: TraceId) -> None:
        """Store the trace's next checkpoint whole (its saves may have conflicted)."""
        self._tips.pop(trace_id, None)

    def forget_trace(self, trace_id: TraceId) -> None:
        """Drop every frame of the trace."""
        for _, key in list(self._steps.get(trace_id, ())):
            self._forget(key)

    def _get(self, key: int) -> Frame | None:
        self._recount()
        kept = self._frames.get(key)
        if kept is None:
            return None
        self._frames.move_to_end(key)
        self._lent.append(kept)
        return kept.frame

    def _forget(self, key: int) -> None:
        self._recount()
        kept = self._frames.pop(key, None)
        if kept is not None:
            self._dropped(key, kept)

    def _recount(self) -> None:
        """Count again what the frames handed out since the last call hold now."""
        if not self._lent:
            return
        lent, self._lent = self._lent, []
        for kept in lent:
            if kept.counted >= 0 and kept.counted != kept.frame.held:
                self._bytes += kept.frame.held - kept.counted
                kept.counted = kept.frame.held
        self._evict()

    def _add(self, key: int, frame: Frame) -> None:
        self._frames[key] = _Kept(frame, frame.held)
        bisect.insort(self._steps.setdefault(frame.trace_id, []), (frame.step, key))
        self._bytes += frame.held
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            key, oldest = self._frames.popitem(last=False)
            self._dropped(key, oldest)

    def _dropped(self, key: int, kept: _Kept) -> None:
        self._bytes -= kept.counted
        kept.counted = -1  # no longer kept: a frame lent before it went is not counted again
        trace = kept.frame.trace_id
        if self._tips.get(trace) == key:
            del self._tips[trace]
        steps = self._steps[trace]
        del steps[bisect.bisect_left(steps, (kept.frame.step, key))]
        if not steps:
            del self._steps[trace]


class _Kept:
    """A frame the cache keeps, with what it held when the cache last counted it (-1: gone)."""

    __slots__ = ("counted", "frame")

    def __init__(self, frame: Frame, counted: int) -> None:
        self.frame = frame
        self.counted = counted


async def delta_frame(
    store: BlobCheckpointStore,
    codec: DeltaCheckpointCodec[object],
    frames: FrameCache,
    blob: CheckpointBlob,
    *,
    waypoints: bool = False,
) -> Frame:
    """The frame of ``blob``, a delta: its state rebuilt through the chain below it, checked.

    Reads the chain down to the nearest frame kept in ``frames`` or to a whole
    checkpoint, a range of steps at a time, starting the first range just above
    the highest frame of the chain that is kept; keeps the frame it returns, and
    the whole checkpoint's if it read one. With ``waypoints`` (random access into
    history) it also keeps the frame of every :data:`_WAYPOINT`-th delta on the
    way, so that a later read near them applies fewer deltas. Raises
    :class:`MissingBase` if a checkpoint of the chain is not in the store, and
    :class:`CorruptCheckpoint` for a chain that is otherwise broken (a base in
    another trace or not below its delta, more than :data:`MAX_DELTA_CHAIN`
    deltas) or damaged.
    """
    found = codec.base_of(blob)
    if found is None:
        raise ValueError(f"checkpoint {blob.checkpoint_id} is stored whole")
    wanted, chain_start = found
    deltas = [blob]  # newest first
    nearby: dict[CheckpointId, CheckpointBlob] = {}
    low = blob.step  # the steps from here up have been read (or cannot hold the chain)
    looked = False  # whether a range was read for the base wanted now
    above = blob
    # A frame kept from an earlier read of this chain: the first range read stops above it.
    kept = frames.below(blob.trace_id, blob.step, chain_start)
    bottom = chain_start if kept is None else kept.step + 1
    while (start := frames.get(wanted)) is None:
        base = nearby.get(wanted)
        if base is None and not looked and low > bottom:
            first = max(bottom, low - _RANGE_READ)
            read = await store.load_steps(blob.trace_id, first, low - 1)
            nearby = {earlier.checkpoint_id: earlier for earlier in read}
            low, looked, bottom = first, True, chain_start
            continue
        if base is None:
            # Not where the chain says it is: by id, one call, whatever the header claims.
            base = await store.load(wanted)
            if base is not None:
                low = min(low, base.step)
        if base is None:
            raise MissingBase(blob.checkpoint_id, wanted, above.checkpoint_id)
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
        below = codec.base_of(base)
        if below is None:
            start = codec.read_frame(base, None)
            if start is None:
                raise CorruptCheckpoint(
                    base.checkpoint_id, "a delta is stored on it, but its state has no fields"
                )
            frames.keep(start)  # the next read of this chain starts here, not at the store
            break
        deltas.append(base)
        looked = False
        if len(deltas) > MAX_DELTA_CHAIN:
            raise CorruptCheckpoint(
                blob.checkpoint_id,
                f"its chain holds more than {MAX_DELTA_CHAIN} deltas, more than any writer makes",
            )
        wanted, above = below[0], base
    passed: list[Frame] = []
    frame = codec.follow(start, deltas[::-1], every=_WAYPOINT if waypoints else 0, passed=passed)
    for waypoint in passed:
        frames.keep(waypoint)
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
        frame = await delta_frame(store, codec, frames, blob)
        rewritten += await store.rewrite(codec.rebase(blob, frame))
    return rewritten
