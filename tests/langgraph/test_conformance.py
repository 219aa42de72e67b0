"""LangGraph's own conformance suite for checkpointers, on every backend: FULL, every
capability (base and extended) detected and passed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from flowpoint.langgraph import FlowpointSaver
from tests.harnesses.base import StoreHarness


async def test_the_conformance_suite_reports_full(harness: StoreHarness) -> None:
    @checkpointer_test(name=f"FlowpointSaver over {harness.name}")
    async def saver() -> AsyncIterator[FlowpointSaver]:
        made = FlowpointSaver(await harness.open())
        try:
            yield made
        finally:
            await made.aclose()

    report = await validate(saver)
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.conformance_level() == "FULL", failures
    assert {name for name, result in report.results.items() if result.passed} == {
        capability.value for capability in ALL_CAPABILITIES
    }
