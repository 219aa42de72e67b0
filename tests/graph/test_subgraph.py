"""Subgraphs: a graph run as a node, durably, as a child trace of the parent's."""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest

from flowpoint import (
    END,
    START,
    BuiltGraph,
    Command,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    InvalidUpdate,
    Runner,
    Send,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
)
from flowpoint.blob import CheckpointBlob
from flowpoint.checkpoint import Checkpoint
from flowpoint.codec import CheckpointCodec
from flowpoint.errors import StorageError
from flowpoint.graph._runner import ERROR_CHANNEL, ERROR_INDEX
from flowpoint.graph._subgraph import child_trace
from flowpoint.ids import MAX_TRACE_ID_LENGTH, TraceId
from tests.graph.doubles import FailingBlobStore


class Work(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]
    rounds: int


@dataclasses.dataclass
class Search:
    query: str
    hits: list[str] = dataclasses.field(default_factory=list)


class Calls:
    """Nodes that log their name (``fail`` names those that raise, once each)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail = fail or set()

    def __call__(self, name: str) -> Any:
        def body(state: Work) -> dict[str, Any]:
            self.calls[name] += 1
            if name in self.fail:
                self.fail.discard(name)
                raise ConnectionError(f"{name} lost its connection")
            return {"log": [name]}

        return body


def research(calls: Calls, name: str = "research", version: int | None = None) -> Graph[Work]:
    g = Graph(name, state=Work).add_node("search", calls("search"))
    g.add_node("read", calls("read"), version=version)
    return g.add_edge(START, "search").add_edge("search", "read").add_edge("read", END)


def parent(calls: Calls, child: Graph[Any] | BuiltGraph[Any], **mapping: Any) -> Graph[Work]:
    g = Graph("report", state=Work).add_node("plan", calls("plan"))
    g.add_node("research", child, **mapping).add_node("write", calls("write"))
    g.add_edge(START, "plan").add_edge("plan", "research").add_edge("research", "write")
    return g.add_edge("write", END)


def initial() -> Work:
    return {"topic": "wal", "log": [], "rounds": 0}


# -- running ----------------------------------------------------------------------------


async def test_a_subgraph_of_the_same_state_runs_as_a_child_trace() -> None:
    calls = Calls()
    runner = Runner(parent(calls, research(calls)), InMemoryBlobStore())
    result = await runner.run("t", initial())
    assert result.status == "done"
    # The subgraph's reducer already combined what its nodes wrote: nothing counts twice.
    assert result.state["log"] == ["plan", "search", "read", "write"]
    assert result.nodes_run == 3  # the parent's own tasks
    assert sorted(await runner.store.store.traces()) == ["t", "t/research@1"]
    child = await runner.store.history("t/research@1")
    assert [info.metadata.get("node") for info in child] == ["read", "search", None]
    parent_steps = await runner.store.history("t")
    assert [info.metadata.get("node") for info in parent_steps][:2] == ["write", "research"]
    # A child trace is a trace like any other: deleting the parent leaves it.
    await runner.store.delete_trace("t")
    assert await runner.store.store.traces() == ["t/research@1"]


async def test_a_subgraph_of_another_state_maps_it_in_and_out() -> None:
    def search(state: Search) -> dict[str, Any]:
        return {"hits": [f"{state.query} paper"]}

    child = Graph("search", state=Search).add_node("search", search)
    child.add_edge(START, "search").add_edge("search", END)

    async def into(state: Work) -> Search:  # async mapping functions are awaited
        return Search(query=state["topic"])

    def out(state: Work, final: Search) -> dict[str, Any]:
        return {"log": final.hits}

    calls = Calls()
    runner = Runner(parent(calls, child.build(), input=into, output=out), InMemoryBlobStore())
    result = await runner.run("t", initial())
    assert result.state["log"] == ["plan", "wal paper", "write"]
    latest = await runner._subgraphs._runners["research"].store.load_latest(
        "t/research@1", child.build().hash_u64()
    )
    assert latest is not None
    assert latest.state == Search("wal", ["wal paper"])


async def test_the_child_store_has_the_parents_codec_settings() -> None:
    child = Graph("search", state=Search).add_node("search", lambda s: None)
    child.add_edge(START, "search").add_edge("search", END)
    codec: SerdeCheckpointCodec[Work] = SerdeCheckpointCodec(Work, compression=None, format="json")
    store = TypedCheckpointStore(InMemoryBlobStore(), codec)
    graph = parent(Calls(), child, input=lambda s: Search("q"), output=lambda s, f: None)
    child_codec = Runner(graph, store)._subgraphs._runners["research"].store.codec
    assert isinstance(child_codec, SerdeCheckpointCodec)
    assert (child_codec.state_type, child_codec.compression, child_codec.format) == (
        Search,
        None,
        "json",
    )


async def test_a_subgraph_run_again_in_a_loop_gets_a_trace_per_step() -> None:
    calls = Calls()
    g = Graph("loop", state=Work).add_node("research", research(calls))
    g.add_node("count", lambda s: {"rounds": s["rounds"] + 1})
    g.add_edge(START, "research").add_edge("research", "count")
    g.add_conditional_edges(
        "count", lambda s: "research" if s["rounds"] < 2 else END, ["research", END]
    )
    runner = Runner(g, InMemoryBlobStore())
    result = await runner.run("t", initial())
    assert result.state["log"] == ["search", "read", "search", "read"]
    assert sorted(await runner.store.store.traces()) == ["t", "t/research@0", "t/research@2"]


async def test_a_subgraph_output_may_route_with_a_command() -> None:
    calls = Calls()
    g = Graph("r", state=Work).add_node("plan", calls("plan"))
    g.add_node(
        "research",
        research(calls),
        goto=["write", END],
        input=lambda s: s,
        output=lambda s, final: Command(update={"log": ["routed"]}, goto=END),
    )
    g.add_node("write", calls("write")).add_edge(START, "plan").add_edge("plan", "research")
    g.add_edge("write", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", initial())
    assert result.state["log"] == ["plan", "routed"]


async def test_nested_subgraphs_nest_their_traces() -> None:
    calls = Calls()
    middle = Graph("middle", state=Work).add_node("inner", research(calls))
    middle.add_edge(START, "inner").add_edge("inner", END)
    runner = Runner(parent(calls, middle), InMemoryBlobStore())
    result = await runner.run("t", initial())
    assert result.state["log"] == ["plan", "search", "read", "write"]
    traces = sorted(await runner.store.store.traces())
    assert traces == ["t", "t/research@1", "t/research@1/inner@0"]


async def test_sends_to_a_subgraph_node_run_one_child_trace_each() -> None:
    child = Graph("job", state=Search).add_node("do", lambda job: {"hits": [f"{job.query}!"]})
    child.add_edge(START, "do").add_edge("do", END)
    g = Graph("map", state=Work).add_node("split", lambda s: None)
    g.add_node(
        "job",
        child,
        input=lambda arg: Search(arg["q"]),  # a Send's argument, as plain data
        output=lambda arg, final: {"log": final.hits},
    )
    fan = lambda s: [Send("job", {"q": q}) for q in ("a", "b", "c")]  # noqa: E731
    g.add_edge(START, "split").add_conditional_edges("split", fan, ["job"])
    g.add_edge("job", END)
    store = InMemoryBlobStore()
    result = await Runner(g, store).run("t", initial())
    assert result.state["log"] == ["a!", "b!", "c!"]
    assert sorted(await store.traces()) == ["t", "t/job#0@1", "t/job#1@1", "t/job#2@1"]


# -- failures ---------------------------------------------------------------------------


async def test_a_subgraph_that_raises_fails_its_node_and_resumes_inside_it() -> None:
    calls = Calls(fail={"read"})
    runner = Runner(parent(calls, research(calls)), InMemoryBlobStore())
    with pytest.raises(ConnectionError, match="read lost its connection"):
        await runner.run("t", initial())
    # Recorded as the parent node's failure, against the checkpoint it started from.
    latest = await runner.store.load_latest("t", runner.graph.hash_u64())
    assert latest is not None
    assert latest.current_node == "research"
    errors = [
        (w.task_id, w.value["type"])
        for w in await runner.store.load_writes(latest.checkpoint_id)
        if (w.index, w.channel) == (ERROR_INDEX, ERROR_CHANNEL)
    ]
    assert errors == [("research", "builtins.ConnectionError")]
    result = await runner.resume("t")
    assert result.state["log"] == ["plan", "search", "read", "write"]
    # search had finished inside the subgraph: the resume went on inside it.
    assert calls.calls == {"plan": 1, "search": 1, "read": 2, "write": 1}


async def test_a_subgraph_that_finished_gives_its_final_state_at_once() -> None:
    """The parent's checkpoint after the subgraph node was lost: the child is not run again."""
    calls = Calls()
    # Saves: the parent's first two, the child's three, then the parent's after research.
    blobs = FailingBlobStore(fail_saves={6})
    runner = Runner(parent(calls, research(calls)), blobs)
    with pytest.raises(StorageError):
        await runner.run("t", initial())
    assert calls.calls == {"plan": 1, "search": 1, "read": 1}
    result = await runner.resume("t")
    assert result.state["log"] == ["plan", "search", "read", "write"]
    assert calls.calls == {"plan": 1, "search": 1, "read": 1, "write": 1}


class OpaqueCodec(CheckpointCodec[Any]):
    """A codec of the application's own, that the runner cannot copy for another state type."""

    def serialize(self, checkpoint: Checkpoint[Any], graph_hash: int, trace_id: Any) -> Any:
        raise NotImplementedError

    def deserialize(self, blob: CheckpointBlob, expected_hash: int | None) -> Any:
        raise NotImplementedError


def test_a_codec_of_its_own_cannot_store_a_subgraph_of_another_state() -> None:
    child = Graph("search", state=Search).add_node("search", lambda s: None)
    child.add_edge(START, "search").add_edge("search", END)
    graph = parent(Calls(), child, input=lambda s: Search("q"), output=lambda s, f: None)
    store = TypedCheckpointStore(InMemoryBlobStore(), OpaqueCodec())
    with pytest.raises(TypeError, match=r"subgraph node 'research' runs on .*SerdeCheckpointCodec"):
        Runner(graph, store)
    # A subgraph of the parent's state type uses the parent's store as it is.
    runner = Runner(parent(Calls(), research(Calls())), store)
    assert runner._subgraphs._runners["research"].store is runner.store


async def test_a_shared_state_subgraph_in_a_parallel_superstep_needs_output() -> None:
    calls = Calls()
    g = Graph("par", state=Work).add_node("plan", calls("plan"))
    g.add_node("research", research(calls)).add_node("other", calls("other"))
    g.add_edge(START, "plan").add_edge("plan", "research").add_edge("plan", "other")
    g.add_edge("research", END).add_edge("other", END)
    with pytest.raises(InvalidUpdate, match=r"several tasks.*output="):
        await Runner(g, InMemoryBlobStore()).run("t", initial())
    assert calls.calls["search"] == 0  # refused before the subgraph ran

    mapped = Graph("par", state=Work).add_node("plan", calls("plan"))
    mapped.add_node(
        "research",
        research(calls),
        input=lambda s: s,
        output=lambda s, final: {"log": final["log"][len(s["log"]) :]},
    )
    mapped.add_node("other", calls("other")).add_edge(START, "plan")
    mapped.add_edge("plan", "research").add_edge("plan", "other")
    mapped.add_edge("research", END).add_edge("other", END)
    result = await Runner(mapped, InMemoryBlobStore()).run("t", initial())
    assert result.state["log"] == ["plan", "other", "search", "read"]


def test_a_subgraph_of_another_state_without_mapping_is_refused_at_build() -> None:
    child = Graph("search", state=Search).add_node("search", lambda s: None)
    child.add_edge(START, "search").add_edge("search", END)
    for mapping in ({}, {"input": lambda s: Search("q")}, {"output": lambda s, f: None}):
        with pytest.raises(GraphDefinitionError, match=r"map the states with input=.*output="):
            parent(Calls(), child, **mapping).build()


def test_bad_subgraph_declarations_are_refused() -> None:
    child = research(Calls())
    g = Graph("g", state=Work)
    with pytest.raises(GraphDefinitionError, match="input= and output="):
        g.add_node("x", lambda s: None, input=lambda s: s)
    with pytest.raises(GraphDefinitionError, match="input must be callable"):
        g.add_node("x", child, input=3)
    g.add_node("x", g).add_edge(START, "x").add_edge("x", END)
    with pytest.raises(GraphDefinitionError, match="is a subgraph of itself"):
        g.build()


def test_a_broken_subgraph_is_refused_naming_its_node() -> None:
    child = Graph("broken", state=Work).add_node("lonely", lambda s: None)
    child.add_edge(START, "lonely")
    with pytest.raises(GraphDefinitionError, match="subgraph node 'research': node 'lonely'"):
        parent(Calls(), child).build()


def test_graphs_that_contain_each_other_are_refused() -> None:
    a = Graph("a", state=Work)
    b = Graph("b", state=Work).add_node("a", a).add_edge(START, "a").add_edge("a", END)
    a.add_node("b", b).add_edge(START, "b").add_edge("b", END)
    with pytest.raises(GraphDefinitionError, match="subgraph of itself"):
        a.build()


# -- names and fingerprints -------------------------------------------------------------


def test_child_trace_names_are_valid_trace_ids_and_deterministic() -> None:
    assert child_trace(TraceId("t"), "research#2", 5) == "t/research#2@5"
    long = child_trace(TraceId("x" * 250), "research", 7)
    assert len(long) == MAX_TRACE_ID_LENGTH
    assert long == child_trace(TraceId("x" * 250), "research", 7)
    assert long != child_trace(TraceId("x" * 250), "research", 8)
    odd = child_trace(TraceId("t"), "new\nline", 1)
    assert odd.isprintable()
    assert odd != child_trace(TraceId("t"), "new?line", 1)


def test_the_subgraphs_fingerprint_is_part_of_the_parents() -> None:
    def with_child(child: Graph[Work]) -> int:
        return parent(Calls(), child).build().hash_u64()

    base = with_child(research(Calls()))
    assert with_child(research(Calls())) == base  # the same subgraph: the same hash
    assert with_child(research(Calls(), version=2)) != base
    assert with_child(research(Calls(), name="other")) != base
    # The child's document nests in the parent's, as the node's "subgraph" attribute.
    built = parent(Calls(), research(Calls())).build()
    assert built.description["nodes"]["research"] == {
        "subgraph": research(Calls()).build().description
    }
    assert built.description["nodes"]["plan"] == {}
