"""Real LangGraph graphs and what is done with them, for running them on any saver.

Each scenario runs compiled ``StateGraph`` s on the saver it is given and returns what
a user sees: states, histories, pending interrupts. Node outputs carry fixed message
ids, so that runs on two savers can be compared; what differs by nature between two
runs (checkpoint ids, task and interrupt ids, timestamps, run ids) is replaced by its
place (see :func:`normalized`).
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pydantic
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, Send, interrupt


class Mood(enum.Enum):
    CALM = "calm"
    BUSY = "busy"


class Note(pydantic.BaseModel):
    text: str
    mood: Mood = Mood.CALM


APPLICATION_TYPES = [Mood, Note]
"""The application's classes these graphs keep in their states: savers must allow them."""


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: list[Note]


def _agent(state: Chat) -> dict[str, Any]:
    heard = state["messages"][-1].content
    count = len(state["messages"])
    mood = Mood.BUSY if count > 4 else Mood.CALM
    return {
        "messages": [AIMessage(f"you said: {heard}", id=f"ai-{count}")],
        "notes": [*state.get("notes", []), Note(text=f"turn {count}", mood=mood)],
    }


def chat_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Chat).add_node("agent", _agent).add_edge(START, "agent")
    return builder.add_edge("agent", END).compile(checkpointer=saver)


class FanOut(TypedDict):
    topic: str
    results: Annotated[list[str], operator.add]
    summary: str


def _plan(state: FanOut) -> dict[str, Any]:
    return {"results": [f"plan {state['topic']}"]}


def _sends(state: FanOut) -> list[Send]:
    return [Send("work", {"topic": state["topic"], "part": part}) for part in range(3)]


def _work(arg: dict[str, Any]) -> dict[str, Any]:
    return {"results": [f"{arg['topic']} part {arg['part']}"]}


def _summarize(state: FanOut) -> dict[str, Any]:
    return {"summary": " | ".join(sorted(state["results"]))}


def fan_out_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(FanOut)
    builder.add_node("plan", _plan).add_node("work", _work).add_node("summarize", _summarize)
    builder.add_edge(START, "plan").add_conditional_edges("plan", _sends, ["work"])
    builder.add_edge("work", "summarize").add_edge("summarize", END)
    return builder.compile(checkpointer=saver)


class Approval(TypedDict):
    request: str
    answer: str
    done: bool


def _ask(state: Approval) -> dict[str, Any]:
    answer = interrupt({"question": f"approve {state['request']}?"})
    return {"answer": str(answer)}


def _finish(state: Approval) -> dict[str, Any]:
    return {"done": state["answer"] == "yes"}


def approval_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Approval).add_node("ask", _ask).add_node("finish", _finish)
    builder.add_edge(START, "ask").add_edge("ask", "finish").add_edge("finish", END)
    return builder.compile(checkpointer=saver)


class Outer(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    rounds: int


def _inner_step(state: Outer) -> dict[str, Any]:
    return {"messages": [AIMessage(f"inner {len(state['messages'])}", id="inner")]}


def _inner_review(state: Outer) -> dict[str, Any]:
    answer = interrupt("review the inner step")
    return {"messages": [HumanMessage(f"reviewed: {answer}", id="review")]}


def _count(state: Outer) -> dict[str, Any]:
    return {"rounds": state.get("rounds", 0) + 1}


def subgraph_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    inner = StateGraph(Outer).add_node("step", _inner_step).add_node("review", _inner_review)
    inner.add_edge(START, "step").add_edge("step", "review").add_edge("review", END)
    outer = StateGraph(Outer).add_node("inner", inner.compile()).add_node("count", _count)
    outer.add_edge(START, "inner").add_edge("inner", "count").add_edge("count", END)
    return outer.compile(checkpointer=saver)


def _extend(state: list[str] | None, writes: list[list[str]]) -> list[str]:
    return [*(state or []), *(item for write in writes for item in write)]


class Journal(TypedDict):
    # Stored as its writes, with a snapshot every third update: loads rebuild it from
    # the checkpoints before (get_delta_channel_history).
    entries: Annotated[list[str], DeltaChannel(_extend, snapshot_frequency=3)]
    count: int


def _record(state: Journal) -> dict[str, Any]:
    count = state.get("count", 0) + 1
    return {"entries": [f"entry {count}"], "count": count}


def delta_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(Journal).add_node("record", _record).add_edge(START, "record")
    return builder.add_edge("record", END).compile(checkpointer=saver)


def _config(thread: str, **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, **extra}}


def _seen(graph: Any, config: dict[str, Any], *, subgraphs: bool = False) -> dict[str, Any]:
    state = graph.get_state(config, subgraphs=subgraphs)
    return {"state": state, "history": list(graph.get_state_history(config))}


def scenarios() -> dict[str, Callable[[BaseCheckpointSaver[Any], str], list[Any]]]:
    """Each scenario: ``run(saver, thread prefix) -> what a user sees``, in order."""
    return {
        "chat": _chat,
        "fan-out": _fan_out,
        "interrupt": _interrupt,
        "subgraph": _subgraph,
        "delta-channel": _delta_channel,
    }


def _chat(saver: BaseCheckpointSaver[Any], prefix: str) -> list[Any]:
    graph = chat_graph(saver)
    config = _config(f"{prefix}chat")
    seen: list[Any] = []
    for turn in range(4):
        message = HumanMessage(f"turn {turn}", id=f"human-{turn}")
        seen.append(graph.invoke({"messages": [message], "notes": []}, config))
    seen.append(_seen(graph, config))
    # Time travel: run again from the checkpoint after the second turn (a fork).
    old = next(s for s in graph.get_state_history(config) if s.metadata["step"] == 4)
    again = HumanMessage("from the past", id="human-past")
    seen.append(graph.invoke({"messages": [again]}, old.config))
    # A human's edit, as the agent.
    graph.update_state(config, {"messages": [AIMessage("edited", id="ai-edit")]}, as_node="agent")
    seen.append(_seen(graph, config))
    return seen


def _fan_out(saver: BaseCheckpointSaver[Any], prefix: str) -> list[Any]:
    graph = fan_out_graph(saver)
    config = _config(f"{prefix}fan-out")
    return [graph.invoke({"topic": "tides", "results": []}, config), _seen(graph, config)]


def _interrupt(saver: BaseCheckpointSaver[Any], prefix: str) -> list[Any]:
    graph = approval_graph(saver)
    config = _config(f"{prefix}approval")
    seen = [graph.invoke({"request": "refund", "answer": "", "done": False}, config)]
    seen.append(_seen(graph, config))
    seen.append(graph.invoke(Command(resume="yes"), config))
    seen.append(_seen(graph, config))
    return seen


def _subgraph(saver: BaseCheckpointSaver[Any], prefix: str) -> list[Any]:
    graph = subgraph_graph(saver)
    config = _config(f"{prefix}nested")
    seen = [graph.invoke({"messages": [HumanMessage("go", id="go")], "rounds": 0}, config)]
    seen.append(_seen(graph, config, subgraphs=True))
    seen.append(graph.invoke(Command(resume="fine"), config))
    seen.append(_seen(graph, config, subgraphs=True))
    return seen


def _delta_channel(saver: BaseCheckpointSaver[Any], prefix: str) -> list[Any]:
    graph = delta_graph(saver)
    config = _config(f"{prefix}journal")
    seen = [graph.invoke({"entries": [f"start {turn}"]}, config) for turn in range(7)]
    seen.append(_seen(graph, config))
    old = next(s for s in graph.get_state_history(config) if s.metadata["step"] == 4)
    seen.append(graph.invoke({"entries": ["forked"]}, old.config))
    seen.append(_seen(graph, config))
    return seen


def normalized(seen: Any) -> Any:
    """``seen`` with what differs between two runs by nature replaced by its place.

    Checkpoint ids become their order of appearance; task and interrupt ids, times
    and run ids are dropped. Everything else, states and metadata above all, stays.
    """
    ids: dict[str, int] = {}

    def walk(value: Any) -> Any:
        if hasattr(value, "_asdict") and type(value).__name__ == "StateSnapshot":
            snapshot = value._asdict()
            snapshot["created_at"] = None
            return {"snapshot": walk(snapshot)}
        if type(value).__name__ == "PregelTask":
            task = value._asdict()
            task["id"] = None
            task["result"] = walk(task.get("result"))
            return {"task": walk(task)}
        if type(value).__name__ == "Interrupt":
            return {"interrupt": walk(value.value)}
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in ("run_id", "thread_ts", "checkpoint_map", "ts"):
                    continue
                if key in ("checkpoint_id", "parents") and isinstance(item, str):
                    out[key] = ids.setdefault(item, len(ids))
                elif key == "parents" and isinstance(item, dict):
                    out[key] = {k: ids.setdefault(v, len(ids)) for k, v in item.items()}
                elif key == "checkpoint_ns" and isinstance(item, str):
                    out[key] = item.split(":")[0]
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list | tuple):
            return [walk(item) for item in value]
        return value

    return walk(seen)
