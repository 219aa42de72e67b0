"""Real compiled graphs run on FlowpointSaver over every backend give what they give on
LangGraph's InMemorySaver: the same states, histories, interrupts and forks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from flowpoint.langgraph import FlowpointSaver
from tests.harnesses.base import StoreHarness
from tests.langgraph.graphs import APPLICATION_TYPES, chat_graph, delta_graph, normalized, scenarios

pytestmark = pytest.mark.filterwarnings("ignore")  # LangGraph warns of unregistered types


def _on_memory(name: str) -> Any:
    return normalized(scenarios()[name](InMemorySaver(), "t-"))


@pytest.mark.parametrize("name", sorted(scenarios()))
async def test_graphs_run_as_on_langgraphs_own_saver(harness: StoreHarness, name: str) -> None:
    expected = _on_memory(name)
    saver = FlowpointSaver(await harness.open(), allowed_types=APPLICATION_TYPES)
    try:
        # The blocking graph API, from a worker thread: the store's loop is this one.
        got = await asyncio.to_thread(scenarios()[name], saver, "t-")
    finally:
        await saver.aclose()
    assert normalized(got) == expected


async def test_async_graphs_run_as_on_langgraphs_own_saver(harness: StoreHarness) -> None:
    async def run(saver: Any) -> Any:
        graph = chat_graph(saver)
        config = {"configurable": {"thread_id": "async"}}
        seen = []
        for turn in range(3):
            message = HumanMessage(f"turn {turn}", id=f"human-{turn}")
            seen.append(await graph.ainvoke({"messages": [message], "notes": []}, config))
        seen.append(await graph.aget_state(config))
        seen.append([s async for s in graph.aget_state_history(config)])
        return normalized(seen)

    expected = await run(InMemorySaver())
    saver = FlowpointSaver(await harness.open(), allowed_types=APPLICATION_TYPES)
    try:
        assert await run(saver) == expected
    finally:
        await saver.aclose()


async def test_prune_keeps_what_a_delta_channel_is_rebuilt_from(harness: StoreHarness) -> None:
    saver = FlowpointSaver(await harness.open())
    config = {"configurable": {"thread_id": "journal"}}

    def run_and_prune() -> tuple[Any, Any, int, int]:
        graph = delta_graph(saver)
        for turn in range(8):
            graph.invoke({"entries": [f"start {turn}"]}, config)
        before = graph.get_state(config).values
        count = len(list(graph.get_state_history(config)))
        saver.prune(["journal"], strategy="keep_latest")
        return before, graph.get_state(config).values, count, len(list(saver.list(config)))

    try:
        before, after, count, kept = await asyncio.to_thread(run_and_prune)
    finally:
        await saver.aclose()
    assert len(before["entries"]) == 16
    assert after == before
    assert 1 < kept < count
