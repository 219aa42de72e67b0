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
    InterruptOutsideNode,
    InvalidInterrupt,
    InvalidRoute,
    InvalidTraceId,
    InvalidUpdate,
    LeaseLost,
    MigrationFailed,
    NoPendingInterrupt,
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
    CheckpointSaved,
    Command,
    Graph,
    Interrupted,
    NodeContext,
    NodeFinished,
    NodeStarted,
    RetentionPolicy,
    Retry,
    RunEvent,
    RunFinished,
    Runner,
    RunResult,
    Send,
    TriggerPolicy,
    interrupt,
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
    "CheckpointSaved",
    "CheckpointStoreError",
    "CodecError",
    "Command",
    "CorruptCheckpoint",
    "Graph",
    "GraphDefinitionError",
    "GraphMismatch",
    "InMemoryBlobStore",
    "InterruptOutsideNode",
    "Interrupted",
    "InvalidInterrupt",
    "InvalidRoute",
    "InvalidTraceId",
    "InvalidUpdate",
    "KeyRing",
    "LeaseLost",
    "MigrationFailed",
    "NoPendingInterrupt",
    "NodeContext",
    "NodeFinished",
    "NodeStarted",
    "PruneRule",
    "QueuedRun",
    "RecursionLimitReached",
    "RetentionPolicy",
    "Retry",
    "RunConflict",
    "RunEvent",
    "RunFinished",
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
    "interrupt",
    "open_store",
]
