"""W5 LangGraph adapter: ``FlowpointSaver`` against LangGraph's savers, through the saver API.

The timed part is W1's procedure (:mod:`benchmarks.w1`) on savers only: ``put`` (or
``aput``) then ``get_tuple`` of the latest at each step, ``get_tuple`` by id of random
steps, ``list(limit=20)`` and ``list()``. Its subjects are LangGraph's ``SqliteSaver``,
``AsyncSqliteSaver`` and ``AsyncPostgresSaver`` and ``FlowpointSaver`` over the same
backends (``lgfp.*``), all driven by the same code (:class:`benchmarks.subjects.LangGraphSync`
and :class:`~benchmarks.subjects.LangGraphAsync`).

After the timed repeats comes an untimed pass: a real ``add_messages`` agent (a compiled
``StateGraph`` of ``MessagesState``, one human message and one model reply per turn) run
on ``SqliteSaver`` and on ``FlowpointSaver`` over SQLite, with the bytes at rest after each
of ``w5_agent_turns`` turns (pending writes included, as each saver keeps them).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.config import Sizes
from benchmarks.places import sqlite_bytes
from benchmarks.text import text

SUBJECTS = frozenset(
    {
        "lg.SqliteSaver",
        "lg.AsyncSqliteSaver",
        "lg.AsyncPostgresSaver",
        "lgfp.sqlite.sync",
        "lgfp.sqlite",
        "lgfp.postgres",
    }
)
"""W5's subjects: LangGraph's savers, and ``FlowpointSaver`` over the same backends."""
AGENT_SUBJECTS = ("lg.SqliteSaver", "lgfp.sqlite.sync")
"""The subjects the agent's bytes are measured on (SQLite, blocking)."""


def open_flowpoint_saver(url: str) -> Callable[[list[Callable[[], None]], dict[str, Any]], Any]:
    """A blocking opener of ``FlowpointSaver.from_url(url)`` for :class:`LangGraphSync`."""

    def opener(closers: list[Callable[[], None]], settings: dict[str, Any]) -> Any:
        from flowpoint.langgraph import FlowpointSaver

        saver = FlowpointSaver.from_url(url)
        closers.append(saver.close)
        settings["store"] = type(saver.store.store).__name__
        return saver

    return opener


def open_flowpoint_saver_async(url: str) -> Callable[[AsyncExitStack, dict[str, Any]], Any]:
    """An async opener of ``FlowpointSaver.from_url(url)`` for :class:`LangGraphAsync`."""

    async def opener(stack: AsyncExitStack, settings: dict[str, Any]) -> Any:
        from flowpoint.langgraph import FlowpointSaver

        saver = FlowpointSaver.from_url(url)
        stack.push_async_callback(saver.aclose)
        settings["store"] = type(saver.store.store).__name__
        return saver

    return opener


@contextmanager
def _saver(name: str, directory: Path) -> Iterator[tuple[Any, Path]]:
    path = directory / f"{name}.db"
    if name == "lg.SqliteSaver":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with closing(sqlite3.connect(path, check_same_thread=False)) as conn:
            yield SqliteSaver(conn), path
    else:
        from flowpoint.langgraph import FlowpointSaver

        with FlowpointSaver.from_url(f"sqlite:///{path}") as saver:
            yield saver, path


def agent_bytes(sizes: Sizes, directory: Path, name: str) -> dict[str, Any]:
    """Bytes at rest of the agent's thread after each of ``sizes.w5_agent_turns`` turns.

    ``agent_bytes_<turns>`` for each, and ``agent_bytes_first`` for the first.
    """
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph

    rng = random.Random(sizes.seed + 5)

    def model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(text(rng, sizes.w1_message_chars))]}

    builder = StateGraph(MessagesState).add_node("model", model).add_edge(START, "model")
    found: dict[str, int] = {}
    with _saver(name, directory) as (saver, path):
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "agent"}}
        marks = set(sizes.w5_agent_turns)
        for turn in range(1, max(marks) + 1):
            question = HumanMessage(text(rng, sizes.w1_message_chars))
            graph.invoke({"messages": [question]}, config)
            if turn in marks:
                found[f"agent_bytes_{turn}"] = sqlite_bytes(path)["bytes"]
    # The first mark under one name whatever the sizes, for the target (60 turns in full).
    found["agent_bytes_first"] = found[f"agent_bytes_{min(marks)}"]
    return found
