"""flowpoint: durable graph workflows with typed, verified checkpoints.

Everything a user needs is importable from here. Store classes of optional
backends live in their modules (``flowpoint.stores.<backend>``) and import their
driver only when used.
"""

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.checkpoint import Checkpoint, State, WorkflowState
from flowpoint.codec import CheckpointCodec, SerdeCheckpointCodec
from flowpoint.errors import (
    CheckpointConflict,
    CheckpointStoreError,
    CodecError,
    CorruptCheckpoint,
    GraphMismatch,
    InvalidTraceId,
    StorageError,
)
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores import BlobCheckpointStore, InMemoryBlobStore, PruneRule
from flowpoint.stores.registry import DEFAULT_STORE_URL, open_store
from flowpoint.sync import SyncCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STORE_URL",
    "BlobCheckpointStore",
    "Checkpoint",
    "CheckpointBlob",
    "CheckpointCodec",
    "CheckpointConflict",
    "CheckpointId",
    "CheckpointInfo",
    "CheckpointStoreError",
    "CodecError",
    "CorruptCheckpoint",
    "GraphMismatch",
    "InMemoryBlobStore",
    "InvalidTraceId",
    "PruneRule",
    "SerdeCheckpointCodec",
    "State",
    "StorageError",
    "SyncCheckpointStore",
    "TraceId",
    "TypedCheckpointStore",
    "WorkflowState",
    "open_store",
]
