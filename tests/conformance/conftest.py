from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowpoint import BlobCheckpointStore, TypedCheckpointStore
from tests.harnesses import HARNESSES
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
