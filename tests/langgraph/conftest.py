from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowpoint.langgraph import FlowpointSaver
from flowpoint.stores.memory import InMemoryBlobStore
from tests.conformance.conftest import harness
from tests.harnesses.base import StoreHarness

__all__ = ["harness"]


@pytest.fixture
async def saver(harness: StoreHarness) -> AsyncIterator[FlowpointSaver]:
    """A saver over the backend under test (every backend, by the ``harness`` fixture)."""
    made = FlowpointSaver(await harness.open())
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def memory_saver() -> AsyncIterator[FlowpointSaver]:
    """A saver over memory, for what does not depend on the backend."""
    made = FlowpointSaver(InMemoryBlobStore())
    try:
        yield made
    finally:
        await made.aclose()
