"""Codecs: typed checkpoints to self-describing, verified bytes and back."""

from flowpoint.codec._base import CheckpointCodec
from flowpoint.codec._keys import KeyRing
from flowpoint.codec._serde import SerdeCheckpointCodec

__all__ = ["CheckpointCodec", "KeyRing", "SerdeCheckpointCodec"]
