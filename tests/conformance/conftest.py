from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowpoint import BlobCheckpointStore, TypedCheckpointStore
from tests.harnesses import HARNESSES, SHARED_BETWEEN_PROCESSES
from tests.harnesses.base import StoreHarness


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    made = await HARNESSES[request.param]()
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def blob_store(harness: StoreHarness) -> AsyncIterator[BlobCheckpointStore]:
    store = await harness.open()
    async with store:
        yield store


@pytest.fixture
def store(blob_store: BlobCheckpointStore) -> TypedCheckpointStore:
    """A typed facade of plain dict states over the backend under test."""
    return TypedCheckpointStore(blob_store)


@pytest.fixture(params=sorted(SHARED_BETWEEN_PROCESSES))
async def shared_harness(request: pytest.FixtureRequest) -> AsyncIterator[StoreHarness]:
    """A backend whose storage several processes can open at once (all but memory)."""
    made = await HARNESSES[request.param]()
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def shared_store(shared_harness: StoreHarness) -> AsyncIterator[BlobCheckpointStore]:
    store = await shared_harness.open()
    async with store:
        yield store
