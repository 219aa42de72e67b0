"""flowpoint: durable graph workflows with typed, verified checkpoints.

Everything a user needs is importable from here. Store classes of optional
backends live in their modules (``flowpoint.stores.<backend>``) and import their
driver only when used.
"""

from flowpoint.blob import CheckpointBlob, CheckpointInfo
from flowpoint.checkpoint import Checkpoint, State, TaskWrite, WorkflowState
from flowpoint.codec import CheckpointCodec, KeyRing, SerdeCheckpointCodec
from flowpoint.errors import (
    CheckpointConflict,
    CheckpointStoreError,
    CodecError,
    CorruptCheckpoint,
    GraphDefinitionError,
    GraphMismatch,
    InvalidRoute,
    InvalidTraceId,
    InvalidUpdate,
    LeaseLost,
    RecursionLimitReached,
    RunConflict,
    StorageError,
    TraceNotFound,
    WorkflowError,
)
from flowpoint.graph import (
    END,
    START,
    BuiltGraph,
    Graph,
    NodeContext,
    RetentionPolicy,
    Runner,
    RunResult,
    Send,
    TriggerPolicy,
)
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.queue import QueuedRun, RunQueue, RunStatus, Worker
from flowpoint.stores import BlobCheckpointStore, InMemoryBlobStore, PruneRule
from flowpoint.stores._registry import DEFAULT_STORE_URL, open_store
from flowpoint.sync import SyncCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STORE_URL",
    "END",
    "START",
    "BlobCheckpointStore",
    "BuiltGraph",
    "Checkpoint",
    "CheckpointBlob",
    "CheckpointCodec",
    "CheckpointConflict",
    "CheckpointId",
    "CheckpointInfo",
    "CheckpointStoreError",
    "CodecError",
    "CorruptCheckpoint",
    "Graph",
    "GraphDefinitionError",
    "GraphMismatch",
    "InMemoryBlobStore",
    "InvalidRoute",
    "InvalidTraceId",
    "InvalidUpdate",
    "KeyRing",
    "LeaseLost",
    "NodeContext",
    "PruneRule",
    "QueuedRun",
    "RecursionLimitReached",
    "RetentionPolicy",
    "RunConflict",
    "RunQueue",
    "RunResult",
    "RunStatus",
    "Runner",
    "Send",
    "SerdeCheckpointCodec",
    "State",
    "StorageError",
    "SyncCheckpointStore",
    "TaskWrite",
    "TraceId",
    "TraceNotFound",
    "TriggerPolicy",
    "TypedCheckpointStore",
    "Worker",
    "WorkflowError",
    "WorkflowState",
    "open_store",
]
