"""The newest checkpoint of each trace the saver wrote or read lately, kept in memory.

A run's next ``put`` follows the checkpoint its previous ``put`` (or ``get_tuple``)
saw: keeping it saves reading the trace's newest step back, and lets the channels a
step did not change keep their stored bytes without being encoded again. A
``get_tuple`` of the newest checkpoint that finds the kept blob still the newest in
the store, byte for byte, takes its fields from here without reading it back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from flowpoint.blob import CheckpointBlob
from flowpoint.checkpoint import Checkpoint
from flowpoint.ids import CheckpointId, TraceId

__all__ = ["Tip", "Tips"]


@dataclass(frozen=True, slots=True)
class Tip:
    """A trace's newest checkpoint: ids and step, and what is known of it.

    ``fields`` are the layout's fields, ``versions`` its ``channel_versions`` when they
    are known without decoding them, and ``checkpoint`` and ``stored`` the checkpoint
    as stored and the blob the store holds for it, when both are known.
    """

    checkpoint_id: CheckpointId
    lg_id: str
    step: int
    fields: Mapping[str, bytes | msgspec.Raw] | None = None
    versions: Mapping[str, Any] | None = None
    checkpoint: Checkpoint[dict[str, msgspec.Raw]] | None = None
    stored: CheckpointBlob | None = None
    size: int = field(default=0, compare=False)


class Tips:
    """Tips by trace, least recently used out first, bounded in count and field bytes."""

    def __init__(self, max_bytes: int, max_traces: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.max_traces = max_traces
        self._tips: OrderedDict[TraceId, Tip] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, trace: TraceId) -> Tip | None:
        with self._lock:
            tip = self._tips.get(trace)
            if tip is not None:
                self._tips.move_to_end(trace)
            return tip

    def put(self, trace: TraceId, tip: Tip) -> None:
        """Keep ``tip`` as the trace's newest, unless a newer one is kept already."""
        fields = tip.fields
        size = 0 if fields is None else sum(map(len, fields.values()))
        if tip.stored is not None:
            size += len(tip.stored.data)
        if size > self.max_bytes:
            tip = Tip(tip.checkpoint_id, tip.lg_id, tip.step)
            size = 0
        elif tip.size != size:
            # Spelled out: dataclasses.replace costs as much as the rest of a put's caching.
            tip = Tip(
                tip.checkpoint_id,
                tip.lg_id,
                tip.step,
                tip.fields,
                tip.versions,
                tip.checkpoint,
                tip.stored,
                size,
            )
        with self._lock:
            known = self._tips.pop(trace, None)
            if known is not None:
                self._bytes -= known.size
                if known.step > tip.step:
                    tip = known
            self._tips[trace] = tip
            self._bytes += tip.size
            while self._bytes > self.max_bytes or len(self._tips) > self.max_traces:
                _, oldest = self._tips.popitem(last=False)
                self._bytes -= oldest.size

    def forget(self, trace: TraceId) -> None:
        with self._lock:
            known = self._tips.pop(trace, None)
            if known is not None:
                self._bytes -= known.size
