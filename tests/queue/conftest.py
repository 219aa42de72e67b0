from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowpoint import RunQueue
from tests.harnesses import HARNESSES
from tests.harnesses.base import StoreHarness


@pytest.fixture(params=["sqlite", "postgres"])
async def queue_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A new, empty database of each backend a run queue lives in, as a URL."""
    harness: StoreHarness = await HARNESSES[request.param]()
    try:
        yield harness.store_url()
    finally:
        await harness.cleanup()


@pytest.fixture
async def queue(queue_url: str) -> AsyncIterator[RunQueue]:
    async with RunQueue.open(queue_url) as opened:
        yield opened


@pytest.fixture
async def other_queue(queue_url: str) -> AsyncIterator[RunQueue]:
    """A second queue on the same database: another process's connection to it."""
    async with RunQueue.open(queue_url) as opened:
        yield opened
