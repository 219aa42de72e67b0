"""Real compiled graphs run on FlowpointSaver over every backend give what they give on
LangGraph's InMemorySaver: the same states, histories, interrupts and forks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from flowpoint.langgraph import FlowpointSaver
from tests.harnesses.base import StoreHarness
from tests.langgraph.graphs import APPLICATION_TYPES, chat_graph, delta_graph, normalized, scenarios

pytestmark = pytest.mark.filterwarnings("ignore")  # LangGraph warns of unregistered types
ROOT = Path(__file__).resolve().parents[2]


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


def test_langgraphs_strict_mode_lets_a_graph_store_its_state_types(tmp_path: Any) -> None:
    code = """
from flowpoint.langgraph import FlowpointSaver
from tests.langgraph.graphs import Note, chat_graph
from langchain_core.messages import HumanMessage

with FlowpointSaver.from_url("sqlite:///strict.db") as saver:
    graph = chat_graph(saver)  # compile asks the saver to allow the state's types
    config = {"configurable": {"thread_id": "strict"}}
    graph.invoke({"messages": [HumanMessage("hi", id="h")], "notes": []}, config)
    notes = graph.get_state(config).values["notes"]
    assert notes == [Note(text="turn 1")], notes
    print("ok")
"""
    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
