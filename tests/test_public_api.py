"""The public surface: exactly the documented names, importable without drivers."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import flowpoint
import flowpoint.checkpoint
import flowpoint.graph._fingerprint
import flowpoint.graph._policies
import flowpoint.graph._retry
import flowpoint.ids
import flowpoint.stores._registry

PUBLIC_NAMES = {
    "END",
    "START",
    "BuiltGraph",
    "Command",
    "Graph",
    "GraphDefinitionError",
    "InvalidRoute",
    "InvalidUpdate",
    "KeyRing",
    "LeaseLost",
    "QueuedRun",
    "RunConflict",
    "RunQueue",
    "RunStatus",
    "Worker",
    "MigrationFailed",
    "NodeContext",
    "RecursionLimitReached",
    "RetentionPolicy",
    "RunResult",
    "Runner",
    "Send",
    "TraceNotFound",
    "TriggerPolicy",
    "WorkflowError",
    "CheckpointSaved",
    "Interrupted",
    "InterruptOutsideNode",
    "InvalidInterrupt",
    "NoPendingInterrupt",
    "NodeFinished",
    "NodeStarted",
    "Retry",
    "RunEvent",
    "RunFinished",
    "interrupt",
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
    "DEFAULT_STORE_URL",
    "GraphMismatch",
    "InMemoryBlobStore",
    "InvalidTraceId",
    "PruneRule",
    "SerdeCheckpointCodec",
    "State",
    "StorageError",
    "SyncCheckpointStore",
    "TaskWrite",
    "TraceId",
    "TypedCheckpointStore",
    "WorkflowState",
    "open_store",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(flowpoint.__all__) == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(flowpoint, name) is not None


def test_error_tree() -> None:
    for error in (
        flowpoint.GraphMismatch,
        flowpoint.CheckpointConflict,
        flowpoint.CorruptCheckpoint,
        flowpoint.CodecError,
        flowpoint.StorageError,
        flowpoint.InvalidTraceId,
        flowpoint.LeaseLost,
    ):
        assert issubclass(error, flowpoint.CheckpointStoreError)
    assert issubclass(flowpoint.InvalidTraceId, ValueError)
    for error in (
        flowpoint.GraphDefinitionError,
        flowpoint.InvalidRoute,
        flowpoint.InvalidUpdate,
        flowpoint.RecursionLimitReached,
        flowpoint.TraceNotFound,
        flowpoint.RunConflict,
        flowpoint.MigrationFailed,
        flowpoint.InterruptOutsideNode,
        flowpoint.InvalidInterrupt,
        flowpoint.NoPendingInterrupt,
    ):
        assert issubclass(error, flowpoint.WorkflowError)
    assert issubclass(flowpoint.GraphDefinitionError, ValueError)
    assert issubclass(flowpoint.TraceNotFound, LookupError)
    assert issubclass(flowpoint.InterruptOutsideNode, RuntimeError)
    assert issubclass(flowpoint.InvalidInterrupt, TypeError)
    assert issubclass(flowpoint.NoPendingInterrupt, ValueError)


def test_importing_flowpoint_imports_no_backend() -> None:
    code = (
        "import sys, flowpoint, flowpoint.stores; "
        "print(sorted(m for m in sys.modules if m.startswith('flowpoint.stores.') or m in "
        "('sqlite3', 'pydantic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "['flowpoint.stores._base', 'flowpoint.stores._fenced', "
        "'flowpoint.stores._registry', 'flowpoint.stores._thread', 'flowpoint.stores.memory']"
    )


@pytest.mark.parametrize(
    "module",
    [
        flowpoint.ids,
        flowpoint.checkpoint,
        flowpoint.stores._registry,
        flowpoint.graph._fingerprint,
        flowpoint.graph._policies,
        flowpoint.graph._retry,
    ],
)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert tried > 0
    assert failures == 0


def test_errors_carry_their_fields_through_copies() -> None:
    import copy

    mismatch = flowpoint.GraphMismatch(1, 2)
    conflict = flowpoint.CheckpointConflict("t", 3, "detail")
    assert copy.copy(mismatch).expected == 1
    assert copy.copy(flowpoint.LeaseLost("t", 4)).epoch == 4
    refused = flowpoint.RunConflict("t", "done", "why")
    assert (copy.copy(refused).status, str(copy.copy(refused))) == ("done", str(refused))
    listed = copy.copy(flowpoint.GraphMismatch(1, 2, "hint", migrations=(3, 4)))
    assert listed.migrations == (3, 4)
    assert listed.hint == "hint"
    assert "0x0000000000000003, 0x0000000000000004" in str(listed)
    failed = copy.copy(flowpoint.MigrationFailed("t", 5, "m.f", "reason"))
    assert (failed.trace_id, failed.from_hash, failed.migration, failed.reason) == (
        "t",
        5,
        "m.f",
        "reason",
    )
    assert str(copy.copy(conflict)) == str(conflict)
    asked = flowpoint.InvalidInterrupt("publish", "not plain data")
    assert (copy.copy(asked).task, copy.copy(asked).reason) == ("publish", "not plain data")
    assert copy.copy(flowpoint.NoPendingInterrupt("t-1")).trace_id == "t-1"
    assert str(copy.copy(flowpoint.InterruptOutsideNode())).startswith("interrupt() was called")
