"""The codec interface: typed checkpoints to self-describing bytes and back."""

from __future__ import annotations

import abc
from typing import Generic

from flowpoint.blob import CheckpointBlob
from flowpoint.checkpoint import Checkpoint, S
from flowpoint.ids import TraceId

__all__ = ["CheckpointCodec"]


class CheckpointCodec(abc.ABC, Generic[S]):
    """Turns a :class:`Checkpoint` of state type ``S`` into a :class:`CheckpointBlob` and back.

    A codec never touches a store, and a store never sees ``S``.
    """

    @abc.abstractmethod
    def serialize(
        self, checkpoint: Checkpoint[S], graph_hash: int, trace_id: TraceId
    ) -> CheckpointBlob:
        """Encode ``checkpoint`` for ``trace_id``, stamping the graph it was made by.

        Raises :class:`~flowpoint.errors.CodecError` if the state cannot be encoded.
        """

    @abc.abstractmethod
    def deserialize(self, blob: CheckpointBlob, expected_hash: int | None) -> Checkpoint[S]:
        """Check and decode ``blob``.

        Raises :class:`~flowpoint.errors.CorruptCheckpoint` for damaged bytes or bytes
        that belong to another checkpoint, then
        :class:`~flowpoint.errors.GraphMismatch` if the blob's graph hash is not
        ``expected_hash`` (before any state is decoded), then
        :class:`~flowpoint.errors.CodecError` if intact data does not fit ``S``.
        ``expected_hash=None`` skips the graph check, for tools that inspect the
        checkpoints of any graph. No other exception escapes, whatever the bytes.
        """
