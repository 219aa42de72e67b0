"""The one error boundary: a backend's declared table of driver exceptions, applied by the base."""

from __future__ import annotations

from typing import Literal

import pytest

from flowpoint import CheckpointConflict, StorageError
from flowpoint.blob import CheckpointBlob
from flowpoint.ids import CheckpointId
from flowpoint.stores._base import DriverErrors
from flowpoint.stores.memory import InMemoryBlobStore
from tests.blobs import make_blob


class DriverError(Exception):
    """What a driver raises."""


class UniqueViolation(DriverError):
    def __init__(self, constraint: str) -> None:
        super().__init__(f"duplicate key violates {constraint}\nDETAIL: a second line")
        self.constraint = constraint


def refused(exc: BaseException) -> Literal["step", "id"] | None:
    if isinstance(exc, UniqueViolation):
        return "id" if exc.constraint == "pkey" else "step"
    return None


class FlakyStore(InMemoryBlobStore):
    """A store whose backend raises what it is told to."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def _driver_errors(self) -> DriverErrors:
        return DriverErrors(failures=(DriverError, OSError), conflict=refused)

    async def _save(self, blob: CheckpointBlob) -> None:
        raise self.error

    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        raise self.error


async def test_a_driver_failure_is_a_storage_error_with_its_cause() -> None:
    error = DriverError("connection reset\nmore detail")
    store = FlakyStore(error)
    blob = make_blob()
    with pytest.raises(StorageError, match=r"load failed: connection reset$") as caught:
        await store.load(blob.checkpoint_id)
    assert caught.value.__cause__ is error
    with pytest.raises(StorageError, match="save failed"):
        await FlakyStore(OSError("disk full")).save(blob)


@pytest.mark.parametrize(("constraint", "detail"), [("pkey", "checkpoint id"), ("trace_step", "")])
async def test_a_refusal_of_the_one_winner_rule_is_a_conflict_on_save(
    constraint: str, detail: str
) -> None:
    error = UniqueViolation(constraint)
    blob = make_blob("t", 4)
    with pytest.raises(CheckpointConflict) as caught:
        await FlakyStore(error).save(blob)
    assert (caught.value.trace_id, caught.value.step) == ("t", 4)
    assert detail in str(caught.value)
    assert caught.value.__cause__ is error
    # Elsewhere than in a save, the same exception is a failure of the backend.
    with pytest.raises(StorageError):
        await FlakyStore(error).load(blob.checkpoint_id)


@pytest.mark.parametrize("error", [TypeError("a bug"), ValueError("an argument"), KeyError("k")])
async def test_what_is_not_the_drivers_passes_unchanged(error: Exception) -> None:
    with pytest.raises(type(error)) as caught:
        await FlakyStore(error).load(make_blob().checkpoint_id)
    assert caught.value is error
