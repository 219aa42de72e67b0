"""The codec interface: typed checkpoints to self-describing bytes and back."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Generic

from flowpoint.blob import CheckpointBlob, PendingWrite
from flowpoint.checkpoint import Checkpoint, S, TaskWrite
from flowpoint.codec._delta import Frame
from flowpoint.ids import CheckpointId, TraceId

__all__ = ["CheckpointCodec", "DeltaCheckpointCodec", "WriteCodec"]


class CheckpointCodec(abc.ABC, Generic[S]):
    """Turns a :class:`Checkpoint` of state type ``S`` into a :class:`CheckpointBlob` and back.

    A codec never touches a store, and a store never sees ``S``. It stores a
    checkpoint's ``cursor`` (the runner's plain data) with its state, and reads it
    back as it was; a checkpoint whose cursor it does not keep cannot resume a
    run of parallel branches.
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


class DeltaCheckpointCodec(CheckpointCodec[S], Generic[S]):
    """A codec that can store a checkpoint as its changes to an earlier one of its trace.

    :class:`~flowpoint.TypedCheckpointStore` keeps the :class:`Frame` of the last
    checkpoint it saved or loaded in each trace, and passes it as ``base``; the
    codec decides whether a delta is worth it. Reading a delta needs the frame
    of its base, which the facade gets by following :meth:`base_of` down the chain.
    """

    @abc.abstractmethod
    def encode(
        self,
        checkpoint: Checkpoint[S],
        graph_hash: int,
        trace_id: TraceId,
        base: Frame | None,
    ) -> tuple[CheckpointBlob, Frame | None]:
        """Encode ``checkpoint``, as its changes to ``base`` where that pays.

        Returns the blob and the new checkpoint's frame: ``None`` for a state
        that no delta will be made on (one that cannot be split into fields, or
        too small for a delta to pay).
        """

    @abc.abstractmethod
    def base_of(self, blob: CheckpointBlob) -> tuple[CheckpointId, int] | None:
        """The base a delta changes and the step its chain starts at; ``None`` for a whole state.

        Reads the header only, for walking a chain: the checksum and the rest are
        checked when the frame is read. Raises
        :class:`~flowpoint.errors.CorruptCheckpoint` for data without a readable header.
        """

    @abc.abstractmethod
    def read_frame(self, blob: CheckpointBlob, base: Frame | None) -> Frame | None:
        """The frame of ``blob`` (given its base's, for a delta), without decoding the state.

        ``None`` for a whole state that cannot be split into fields.
        """

    @abc.abstractmethod
    def follow(
        self,
        base: Frame,
        deltas: Sequence[CheckpointBlob],
        *,
        every: int = 0,
        passed: list[Frame] | None = None,
    ) -> Frame:
        """The frame of the last of ``deltas``, a chain on ``base`` listed oldest first.

        Each delta must name the checkpoint before it (the first, ``base``), in the
        same trace at an earlier step. Each is checked as it is applied; the state the
        last leaves is checked against the size and hash it records, before it is
        returned. Raises :class:`~flowpoint.errors.CorruptCheckpoint` for any link
        that does not fit. The cost is what the deltas hold, plus one pass over the
        state the last one leaves.

        With ``every`` > 0 and a list ``passed``, the frames of every ``every``-th
        delta on the way (the last excepted) are appended to ``passed``, each
        checked as the last one is: one more pass over the state each.
        """

    @abc.abstractmethod
    def decode(
        self,
        blob: CheckpointBlob,
        expected_hash: int | None,
        base: Frame | None,
        *,
        known: Frame | None = None,
    ) -> tuple[Checkpoint[S], Frame | None]:
        """:meth:`deserialize` for a whole state or a delta; also returns the frame.

        ``known`` is this checkpoint's own frame, kept from when it was saved or
        loaded: the state is then decoded from it, with no base needed and nothing
        rebuilt (the bytes are still checked and, if encrypted, authenticated).
        """

    @abc.abstractmethod
    def rebase(self, blob: CheckpointBlob, frame: Frame) -> CheckpointBlob:
        """``blob`` with its data made whole from its frame: same header, no base."""


class WriteCodec(abc.ABC):
    """A codec that can also store the pending writes of a superstep's tasks.

    A write's data is self-describing like a checkpoint's: it repeats the trace,
    the checkpoint, the task id and the index it is stored under, so that data
    stored under another key is caught, and it is compressed, encrypted and
    checked as the codec does a checkpoint's state.
    """

    @abc.abstractmethod
    def encode_write(
        self, trace_id: TraceId, checkpoint_id: CheckpointId, write: TaskWrite
    ) -> PendingWrite:
        """Encode ``write`` of a task that ran from ``checkpoint_id`` in ``trace_id``.

        Raises :class:`~flowpoint.errors.CodecError` if its value cannot be encoded.
        """

    @abc.abstractmethod
    def decode_write(self, write: PendingWrite) -> TaskWrite:
        """Check and decode a stored write; its value comes back as plain data.

        Raises :class:`~flowpoint.errors.CorruptCheckpoint` (naming the checkpoint)
        for damaged data or data stored under another key, and
        :class:`~flowpoint.errors.CodecError` for a key the codec does not hold.
        No other exception escapes, whatever the bytes.
        """
