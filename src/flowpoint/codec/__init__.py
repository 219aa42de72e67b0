"""Codecs: typed checkpoints to self-describing, verified bytes and back."""

from flowpoint.codec.base import CheckpointCodec
from flowpoint.codec.keys import KeyRing
from flowpoint.codec.serde import SerdeCheckpointCodec

__all__ = ["CheckpointCodec", "KeyRing", "SerdeCheckpointCodec"]
