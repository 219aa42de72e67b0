"""Parallel branches: fan-out, joins, routers returning lists, Send maps, reducers, supersteps."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import threading
import time
from collections import Counter
from typing import Annotated, Any, NotRequired, TypedDict

import msgspec
import pydantic
import pytest

from flowpoint import (
    END,
    START,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    InvalidRoute,
    InvalidUpdate,
    NodeContext,
    RecursionLimitReached,
    Runner,
    Send,
)
from flowpoint.graph._builder import JoinEdge, StaticEdge
from tests.graph.doubles import FailingBlobStore

T = "trace-1"


def concat(old: list[str], new: list[str]) -> list[str]:
    return old + new


@dataclasses.dataclass
class Notes:
    log: Annotated[list[str], operator.add] = dataclasses.field(default_factory=list)
    count: int = 0
    text: str = ""


class Trail:
    """Nodes that append their name to ``log`` (a reducer field), optionally after a delay."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.started: list[str] = []

    def node(self, name: str, *, delay: float = 0.0, sync: bool = False) -> Any:
        if sync:

            def body(state: Notes) -> dict[str, Any]:
                self.calls[name] += 1
                self.started.append(name)
                time.sleep(delay)
                return {"log": [name]}

            return body

        async def abody(state: Notes) -> dict[str, Any]:
            self.calls[name] += 1
            self.started.append(name)
            await asyncio.sleep(delay)
            return {"log": [name]}

        return abody


def fan_graph(trail: Trail, delays: dict[str, float] | None = None) -> Graph[Notes]:
    """plan -> (web, docs, wiki) -> join -> write -> END."""
    delays = delays or {}
    g = Graph("fan", state=Notes)
    for name in ("plan", "web", "docs", "wiki", "write"):
        g.add_node(name, trail.node(name, delay=delays.get(name, 0.0)))
    g.add_edge(START, "plan")
    for branch in ("web", "docs", "wiki"):
        g.add_edge("plan", branch)
    g.add_edge(["web", "docs", "wiki"], "write").add_edge("write", END)
    return g


# -- building ---------------------------------------------------------------------------


def test_fan_out_and_join_build() -> None:
    built = fan_graph(Trail()).build()
    assert built.edges_after("plan") == (
        StaticEdge("plan", "web"),
        StaticEdge("plan", "docs"),
        StaticEdge("plan", "wiki"),
    )
    join = JoinEdge(("web", "docs", "wiki"), "write")
    assert built.joins_after("web") == built.joins_after("wiki") == (join,)
    assert built.edges_after("web") == ()


def test_a_join_of_one_source_is_a_static_edge() -> None:
    g = Graph("one").add_node("a", lambda s: None).add_node("b", lambda s: None)
    g.add_edge(START, "a").add_edge(["a"], "b").add_edge("b", END)
    assert g.build().edges_after("a") == (StaticEdge("a", "b"),)


def nodes(*names: str) -> Graph[Any]:
    g: Graph[Any] = Graph("g")
    for name in names:
        g.add_node(name, lambda s: None)
    return g


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda g: g.add_edge(START, "a").add_edge([START, "a"], "b"), "START"),
        (lambda g: g.add_edge(START, "a").add_edge(["a", "ghost"], "b"), "'ghost'"),
        (lambda g: g.add_edge(START, "a").add_edge(["a", END], "b"), "END"),
        (lambda g: g.add_edge(START, "a").add_edge(["a", "a"], "b"), "twice"),
        (lambda g: g.add_edge(START, "a").add_edge([], "b"), "no source"),
        (lambda g: g.add_edge(START, "a").add_edge("a", "b").add_edge("a", "b"), "twice"),
        (
            lambda g: g.add_edge(START, "a").add_edge(["a", "b"], "c").add_edge(["b", "a"], "c"),
            "twice",
        ),
        (lambda g: g.add_edge(START, "a").add_edge(["a", "b"], START), "START"),
        (lambda g: g.add_edge(START, "a").add_edge(["a", 3], "b"), "node name"),
        (lambda g: g.add_edge(START, "a").add_edge({"a", "b"}, "c"), "node name"),
    ],
)
def test_bad_joins_and_duplicate_edges_are_refused(declare: Any, message: str) -> None:
    def build() -> None:
        g = nodes("a", "b", "c")
        declare(g)
        g.add_edge("b", END).add_edge("c", END)
        g.build()

    with pytest.raises(GraphDefinitionError, match=message):
        build()


def test_a_join_whose_source_no_run_reaches_leaves_its_target_unreachable() -> None:
    g = nodes("a", "b", "c", "d")
    # "b" is only reached through the join it is a source of.
    g.add_edge(START, "a").add_edge(["a", "b"], "c").add_edge("c", "b").add_edge("c", END)
    g.add_edge("d", END).add_edge("a", "d")
    with pytest.raises(GraphDefinitionError, match=r"reach node\(s\) \['b', 'c'\]"):
        g.build()


def test_a_branch_that_only_joins_reaches_end_through_the_join() -> None:
    g = nodes("a", "b", "c", "d")
    g.add_edge(START, "a").add_edge("a", "b").add_edge("a", "c")
    g.add_edge(["b", "c"], "d").add_edge("d", END)
    assert set(g.build().nodes) == {"a", "b", "c", "d"}


def test_start_enters_at_one_node() -> None:
    g = nodes("a", "b").add_edge(START, "a").add_edge(START, "b")
    g.add_edge("a", END).add_edge("b", END)
    with pytest.raises(GraphDefinitionError, match="fan out from that node"):
        g.build()


def test_send_targets_must_keep_their_task_ids_apart() -> None:
    long = "s" * 241
    g = nodes("a", long).add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: END, [long, END]).add_edge(long, END)
    with pytest.raises(GraphDefinitionError, match="at most 240"):
        g.build()
    g = nodes("a", "s", "s#1").add_edge(START, "a").add_edge("a", "s#1")
    g.add_conditional_edges("a", lambda s: END, ["s", END]).add_edge("s", END)
    g.add_edge("s#1", END)
    with pytest.raises(GraphDefinitionError, match="'s#1'"):
        g.build()
    # Without a router that may send to "s", the name is free.
    g = nodes("a", "s", "s#1").add_edge(START, "a").add_edge("a", "s#1").add_edge("a", "s")
    g.add_edge("s", END).add_edge("s#1", END)
    g.build()


def test_node_names_are_bounded_when_added() -> None:
    with pytest.raises(GraphDefinitionError, match="at most 256"):
        Graph("g").add_node("n" * 257, lambda s: None)


def test_send_checks_its_node() -> None:
    assert Send("a", 1) == Send("a", 1)
    assert Send("a", [1]) != Send("a", [2])
    with pytest.raises(TypeError, match="names a node"):
        Send(3, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="names a node"):
        Send("", "x")


@dataclasses.dataclass
class TwoReducers:
    log: Annotated[list[str], operator.add, concat]


@dataclasses.dataclass
class UnaryReducer:
    log: Annotated[list[str], len]


class FreeDict(TypedDict):
    pass


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (TwoReducers, "at most one reducer"),
        (UnaryReducer, r"reducer\(old, value\)"),
        (dict[str, Annotated[list[int], operator.add]], "declared field"),
    ],
)
def test_unusable_reducers_are_refused_at_build(state: Any, message: str) -> None:
    g: Graph[Any] = Graph("g", state=state).add_node("a", lambda s: None)
    g.add_edge(START, "a").add_edge("a", END)
    with pytest.raises(GraphDefinitionError, match=message):
        g.build()


# -- supersteps ---------------------------------------------------------------------------


async def test_fan_out_runs_the_branches_in_one_superstep_and_the_join_once() -> None:
    trail, store = Trail(), FailingBlobStore()
    result = await Runner(fan_graph(trail), store).run(T, Notes())
    assert result.status == "done"
    # Canonical order within a superstep: by node name.
    assert result.state.log == ["plan", "docs", "web", "wiki", "write"]
    assert trail.calls == Counter(["plan", "web", "docs", "wiki", "write"])
    assert result.nodes_run == 5
    # One checkpoint per superstep: input, plan, the three branches, write.
    assert [blob.step for blob in store.saved] == [0, 1, 2, 3]
    assert [blob.metadata.get("node") for blob in store.saved] == [
        None,
        "plan",
        "docs, web, wiki",
        "write",
    ]
    assert [blob.current_node for blob in store.saved] == [
        "plan",
        "docs, web, wiki",
        "write",
        None,
    ]


async def test_updates_apply_in_canonical_order_not_completion_order() -> None:
    # "docs" finishes last, "wiki" first; the log is still by name.
    trail = Trail()
    delays = {"docs": 0.15, "web": 0.05, "wiki": 0.0}
    result = await Runner(fan_graph(trail, delays), InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["plan", "docs", "web", "wiki", "write"]


async def test_four_async_branches_run_concurrently() -> None:
    trail = Trail()
    g = Graph("wide", state=Notes).add_node("plan", trail.node("plan"))
    g.add_edge(START, "plan")
    for name in ("b1", "b2", "b3", "b4"):
        g.add_node(name, trail.node(name, delay=0.2)).add_edge("plan", name)
        g.add_edge(name, END)
    began = time.monotonic()
    result = await Runner(g, InMemoryBlobStore()).run(T, Notes())
    elapsed = time.monotonic() - began
    assert result.state.log == ["plan", "b1", "b2", "b3", "b4"]
    assert elapsed < 0.6, f"four 0.2 s branches took {elapsed:.2f} s"


async def test_sync_branches_run_in_worker_threads_at_once() -> None:
    threads: set[int] = set()
    barrier = threading.Barrier(3, timeout=5)

    def branch(name: str) -> Any:
        def body(state: Notes) -> dict[str, Any]:
            threads.add(threading.get_ident())
            barrier.wait()  # all three are running at the same time, or this times out
            return {"log": [name]}

        return body

    g = Graph("threads", state=Notes).add_node("plan", lambda s: None).add_edge(START, "plan")
    for name in ("x", "y", "z"):
        g.add_node(name, branch(name)).add_edge("plan", name).add_edge(name, END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["x", "y", "z"]
    assert threading.get_ident() not in threads
    assert len(threads) == 3


async def test_a_join_waits_for_sources_finishing_in_different_supersteps() -> None:
    trail = Trail()
    g = Graph("wait", state=Notes)
    for name in ("plan", "fast", "slow1", "slow2", "write"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "plan").add_edge("plan", "fast").add_edge("plan", "slow1")
    g.add_edge("slow1", "slow2").add_edge(["fast", "slow2"], "write").add_edge("write", END)
    store = FailingBlobStore()
    result = await Runner(g, store).run(T, Notes())
    assert result.state.log == ["plan", "fast", "slow1", "slow2", "write"]
    assert trail.calls["write"] == 1
    assert [blob.metadata.get("node") for blob in store.saved] == [
        None,
        "plan",
        "fast, slow1",
        "slow2",
        "write",
    ]
    assert store.saved[2].current_node == "slow2"


async def test_a_node_triggered_by_several_edges_in_one_superstep_runs_once() -> None:
    trail = Trail()
    g = Graph("diamond", state=Notes)
    for name in ("a", "b", "c", "d"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("a", "c")
    g.add_edge("b", "d").add_edge("c", "d").add_edge("d", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["a", "b", "c", "d"]
    assert trail.calls["d"] == 1


async def test_a_node_triggered_in_two_supersteps_runs_twice() -> None:
    # a -> b -> d and a -> d: d runs after a, and again after b (no join).
    trail = Trail()
    g = Graph("twice", state=Notes)
    for name in ("a", "b", "d"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("a", "d").add_edge("b", "d")
    g.add_edge("d", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["a", "b", "d", "d"]


async def test_a_branch_to_end_stops_while_the_others_go_on() -> None:
    trail = Trail()
    g = Graph("end", state=Notes)
    for name in ("a", "b", "c"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "a").add_edge("a", END).add_edge("a", "b").add_edge("b", "c")
    g.add_edge("c", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["a", "b", "c"]


# -- routers ------------------------------------------------------------------------------


def routed(router: Any, targets: Any, trail: Trail) -> Graph[Notes]:
    g = Graph("routed", state=Notes)
    for name in ("a", "b", "c"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "a").add_conditional_edges("a", router, targets)
    g.add_edge("b", END).add_edge("c", END)
    return g


@pytest.mark.parametrize(
    ("route", "log"),
    [
        (["b", "c"], ["a", "b", "c"]),
        (["c", "b", "c"], ["a", "b", "c"]),
        ([], ["a"]),
        (["b", END], ["a", "b"]),
        ("c", ["a", "c"]),
    ],
)
async def test_a_router_may_return_a_list_of_targets(route: Any, log: list[str]) -> None:
    trail = Trail()
    graph = routed(lambda s: route, ["b", "c", END], trail)
    result = await Runner(graph, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == log


async def test_a_path_map_router_may_return_a_list_of_keys() -> None:
    trail = Trail()
    graph = routed(lambda s: ["left", "right"], {"left": "b", "right": "c", "stop": END}, trail)
    result = await Runner(graph, InMemoryBlobStore()).run(T, Notes())
    assert result.state.log == ["a", "b", "c"]


@pytest.mark.parametrize(
    "route",
    [["b", "ghost"], [Send("ghost", 1)], Send(END, 1), [("b",)], [["b"]]],
)
async def test_a_router_returning_what_it_did_not_declare(route: Any) -> None:
    store = FailingBlobStore()
    with pytest.raises(InvalidRoute) as caught:
        await Runner(routed(lambda s: route, ["b", "c", END], Trail()), store).run(T, Notes())
    assert caught.value.route == route
    assert store.saves == 1


async def test_routers_see_the_state_after_the_whole_superstep() -> None:
    seen: list[list[str]] = []

    def router(state: Notes) -> str:
        seen.append(list(state.log))
        return END

    trail = Trail()
    g = Graph("see", state=Notes)
    for name in ("a", "b", "c"):
        g.add_node(name, trail.node(name))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("a", "c")
    g.add_conditional_edges("b", router, [END]).add_conditional_edges("c", router, [END])
    await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert seen == [["a", "b", "c"], ["a", "b", "c"]]


# -- Send ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Doc:
    title: str
    words: int


@dataclasses.dataclass
class Docs:
    docs: list[Doc]
    summaries: Annotated[list[str], operator.add] = dataclasses.field(default_factory=list)
    done: bool = False


def map_graph(summarise: Any, *, reduce: bool = True) -> Graph[Docs]:
    def split(state: Docs) -> list[Send]:
        return [Send("summarise", doc) for doc in state.docs]

    g = Graph("map", state=Docs).add_node("plan", lambda s: None)
    g.add_node("summarise", summarise).add_node("reduce", lambda s: {"done": True})
    g.add_edge(START, "plan").add_conditional_edges("plan", split, ["summarise"])
    g.add_edge("summarise", "reduce" if reduce else END).add_edge("reduce", END)
    return g


async def test_send_maps_a_node_over_items_in_one_superstep() -> None:
    got: list[Any] = []
    keys: list[str] = []

    async def summarise(doc: Doc, ctx: NodeContext) -> dict[str, Any]:
        got.append(doc)
        keys.append(ctx.idempotency_key)
        await asyncio.sleep(0.05 * (3 - doc.words))  # the first item finishes last
        return {"summaries": [f"{doc.title}:{doc.words}"]}

    store = FailingBlobStore()
    docs = [Doc("a", 1), Doc("b", 2), Doc("c", 0)]
    result = await Runner(map_graph(summarise), store).run(T, Docs(docs))
    assert result.state.summaries == ["a:1", "b:2", "c:0"]  # by Send index
    assert result.state.done
    assert sorted(got, key=lambda d: d.title) == docs  # each a Doc again, not a dict
    assert len(set(keys)) == 3
    assert result.nodes_run == 5
    assert [blob.current_node for blob in store.saved] == ["plan", "summarise x3", "reduce", None]


async def test_a_send_argument_is_plain_data_for_an_unannotated_node() -> None:
    got: list[Any] = []

    def summarise(item):  # type: ignore[no-untyped-def]
        got.append(item)
        return {"summaries": [str(item)]}

    def split(state: Docs) -> list[Send]:
        return [Send("summarise", ("tuple", 1)), Send("summarise", Doc("d", 2))]

    g = Graph("plain", state=Docs).add_node("plan", lambda s: None)
    g.add_node("summarise", summarise)
    g.add_edge(START, "plan").add_conditional_edges("plan", split, ["summarise"])
    g.add_edge("summarise", END)
    await Runner(g, InMemoryBlobStore()).run(T, Docs([]))
    assert got == [["tuple", 1], {"title": "d", "words": 2}]


@pytest.mark.parametrize(
    ("argument", "reason"),
    [(object(), "cannot be stored"), ({"title": "x"}, "cannot take its argument")],
)
async def test_a_send_whose_argument_cannot_run_is_refused_before_anything_runs(
    argument: Any, reason: str
) -> None:
    calls: list[Any] = []

    def summarise(doc: Doc) -> None:
        calls.append(doc)

    def split(state: Docs) -> list[Send]:
        return [Send("summarise", argument)]

    g = Graph("bad", state=Docs).add_node("plan", lambda s: None)
    g.add_node("summarise", summarise)
    g.add_edge(START, "plan").add_conditional_edges("plan", split, ["summarise"])
    g.add_edge("summarise", END)
    store = FailingBlobStore()
    with pytest.raises(InvalidRoute, match=reason) as caught:
        await Runner(g, store).run(T, Docs([]))
    assert caught.value.node == "plan"
    assert caught.value.reason is not None
    assert calls == []
    assert store.saves == 1


async def test_a_node_may_run_by_edge_and_by_send_in_one_superstep() -> None:
    got: list[Any] = []

    def work(value: Any) -> dict[str, Any]:
        got.append(value)
        return {"summaries": ["state" if isinstance(value, Docs) else str(value)]}

    def split(state: Docs) -> list[Any]:
        return ["work", Send("work", 7)]

    g = Graph("both", state=Docs).add_node("plan", lambda s: None).add_node("work", work)
    g.add_edge(START, "plan").add_conditional_edges("plan", split, ["work"])
    g.add_edge("work", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Docs([]))
    assert result.state.summaries == ["state", "7"]


# -- reducers and conflicts -------------------------------------------------------------


async def test_two_branches_writing_a_field_without_a_reducer_conflict() -> None:
    g = Graph("clash", state=Notes).add_node("plan", lambda s: None)
    g.add_node("web", lambda s: {"text": "w", "log": ["web"]})
    g.add_node("docs", lambda s: {"text": "d", "log": ["docs"]})
    g.add_edge(START, "plan").add_edge("plan", "web").add_edge("plan", "docs")
    g.add_edge("web", END).add_edge("docs", END)
    store = FailingBlobStore()
    with pytest.raises(InvalidUpdate, match="'docs' and 'web' both wrote 'text'") as caught:
        await Runner(g, store).run(T, Notes())
    assert caught.value.field == "text"
    assert caught.value.tasks == ("docs", "web")
    assert store.saves == 2  # the superstep's checkpoint was not written


async def test_two_sends_writing_a_field_without_a_reducer_conflict() -> None:
    def summarise(doc: Doc) -> dict[str, Any]:
        return {"done": True}

    with pytest.raises(InvalidUpdate) as caught:
        await Runner(map_graph(summarise), InMemoryBlobStore()).run(
            T, Docs([Doc("a", 1), Doc("b", 1)])
        )
    assert caught.value.tasks == ("summarise#0", "summarise#1")


async def test_a_whole_state_from_a_parallel_branch_is_refused() -> None:
    g = Graph("whole", state=Notes).add_node("plan", lambda s: None)
    g.add_node("web", lambda s: Notes(["web"])).add_node("docs", lambda s: None)
    g.add_edge(START, "plan").add_edge("plan", "web").add_edge("plan", "docs")
    g.add_edge("web", END).add_edge("docs", END)
    with pytest.raises(InvalidUpdate, match="'web' returned a Notes") as caught:
        await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert caught.value.tasks == ("web",)


async def test_a_lone_node_still_returns_a_whole_state_and_a_reducer_field_accumulates() -> None:
    g = Graph("lone", state=Notes).add_node("a", lambda s: {"log": ["a"], "count": 1})
    g.add_node("b", lambda s: {"log": ["b"]}).add_node("c", lambda s: Notes(["reset"], 9))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c").add_edge("c", END)
    runner = Runner(g, InMemoryBlobStore(), interrupt_before=["c"])
    paused = await runner.run(T, Notes(["input"]))
    assert paused.state.log == ["input", "a", "b"]
    # A human's update goes through the reducer too.
    done = await runner.resume(T, update={"log": ["human"]})
    assert done.state == Notes(["reset"], 9)  # a whole state replaces, reducers or not
    latest = await runner.store.load_latest(T, None)
    assert latest is not None


def bad(old: list[str], new: list[str]) -> Any:
    if new == ["boom"]:
        raise ValueError("boom")
    return 3


@dataclasses.dataclass
class Bad:
    log: Annotated[list[str], bad]


async def test_a_reducer_that_raises_or_returns_the_wrong_type() -> None:
    for value, message in ((["boom"], r"raised ValueError: boom"), (["x"], "does not fit")):
        g = Graph("bad", state=Bad).add_node("a", lambda s, v=value: {"log": v})
        g.add_edge(START, "a").add_edge("a", END)
        with pytest.raises(InvalidUpdate, match=message) as caught:
            await Runner(g, InMemoryBlobStore()).run(T, Bad([]))
        assert caught.value.field == "log"


async def test_a_reducer_value_must_fit_the_field() -> None:
    g = Graph("fit", state=Notes).add_node("a", lambda s: {"log": "not a list"})
    g.add_edge(START, "a").add_edge("a", END)
    with pytest.raises(InvalidUpdate, match="'log'"):
        await Runner(g, InMemoryBlobStore()).run(T, Notes())


class TDNotes(TypedDict):
    log: Annotated[list[str], operator.add]
    extra: NotRequired[Annotated[list[int], operator.add]]


class StNotes(msgspec.Struct):
    log: Annotated[list[str], operator.add] = []


class PdNotes(pydantic.BaseModel):
    log: Annotated[list[str], operator.add] = []
    total: Annotated[int, operator.add] = pydantic.Field(default=0, alias="Total")


@pytest.mark.parametrize(
    ("state_type", "initial", "read"),
    [
        (TDNotes, {"log": []}, lambda s: s["log"]),
        (StNotes, StNotes(), lambda s: s.log),
        (PdNotes, PdNotes(), lambda s: s.log),
    ],
)
async def test_reducers_on_every_state_kind(state_type: Any, initial: Any, read: Any) -> None:
    g: Graph[Any] = Graph("kinds", state=state_type).add_node("plan", lambda s: None)
    for name in ("x", "y"):
        g.add_node(name, lambda s, n=name: {"log": [n]}).add_edge("plan", name)
        g.add_edge(name, END)
    g.add_edge(START, "plan")
    result = await Runner(g, InMemoryBlobStore()).run(T, initial)
    assert read(result.state) == ["x", "y"]


async def test_a_pydantic_reducer_field_written_by_alias() -> None:
    g: Graph[Any] = Graph("alias", state=PdNotes).add_node("plan", lambda s: None)
    g.add_node("x", lambda s: {"Total": 2}).add_node("y", lambda s: {"total": 3})
    g.add_edge(START, "plan").add_edge("plan", "x").add_edge("plan", "y")
    g.add_edge("x", END).add_edge("y", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, PdNotes(Total=1))
    assert result.state.total == 6


async def test_a_typeddict_reducer_field_not_yet_present_takes_the_first_value() -> None:
    g: Graph[Any] = Graph("first", state=TDNotes).add_node("plan", lambda s: None)
    g.add_node("x", lambda s: {"extra": [1]}).add_node("y", lambda s: {"extra": [2]})
    g.add_edge(START, "plan").add_edge("plan", "x").add_edge("plan", "y")
    g.add_edge("x", END).add_edge("y", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, {"log": []})
    assert result.state == {"log": [], "extra": [1, 2]}


async def test_parallel_updates_are_typed_as_their_fields() -> None:
    @dataclasses.dataclass
    class Found:
        docs: Annotated[list[Doc], operator.add] = dataclasses.field(default_factory=list)
        best: Doc | None = None
        tags: Annotated[tuple[str, ...], operator.add] = ()

    g = Graph("typed", state=Found).add_node("plan", lambda s: None)
    g.add_node("x", lambda s: {"docs": [Doc("x", 1)], "tags": ("a",)})
    g.add_node("y", lambda s: {"best": Doc("y", 2), "tags": ["b"]})
    g.add_edge(START, "plan").add_edge("plan", "x").add_edge("plan", "y")
    g.add_edge("x", END).add_edge("y", END)
    result = await Runner(g, InMemoryBlobStore()).run(T, Found())
    assert result.state == Found([Doc("x", 1)], Doc("y", 2), ("a", "b"))


async def test_a_parallel_update_flowpoint_cannot_store() -> None:
    g = Graph("store", state=dict).add_node("plan", lambda s: None)
    g.add_node("x", lambda s: {"a": object()}).add_node("y", lambda s: {"b": 1})
    g.add_edge(START, "plan").add_edge("plan", "x").add_edge("plan", "y")
    g.add_edge("x", END).add_edge("y", END)
    with pytest.raises(InvalidUpdate, match="'x' returned an update flowpoint cannot store"):
        await Runner(g, InMemoryBlobStore()).run(T, {})


# -- failures, interrupts, limits --------------------------------------------------------


async def test_a_failing_branch_lets_the_others_finish_and_raises_the_first() -> None:
    finished: list[str] = []

    def failing(name: str, delay: float) -> Any:
        async def body(state: Notes) -> dict[str, Any]:
            await asyncio.sleep(delay)
            finished.append(name)
            if name != "ok":
                raise RuntimeError(f"{name} failed")
            return {"log": [name]}

        return body

    g = Graph("fail", state=Notes).add_node("plan", lambda s: None).add_edge(START, "plan")
    for name, delay in (("ok", 0.1), ("zed", 0.0), ("bad", 0.05)):
        g.add_node(name, failing(name, delay)).add_edge("plan", name).add_edge(name, END)
    with pytest.raises(RuntimeError, match="bad failed") as caught:
        await Runner(g, InMemoryBlobStore()).run(T, Notes())
    assert sorted(finished) == ["bad", "ok", "zed"]
    assert any("'zed'" in note for note in caught.value.__notes__)


async def test_interrupt_before_a_parallel_node_pauses_before_the_whole_superstep() -> None:
    trail = Trail()
    runner = Runner(fan_graph(trail), InMemoryBlobStore(), interrupt_before=["docs"])
    paused = await runner.run(T, Notes())
    assert (paused.status, paused.next_node) == ("interrupted", "docs, web, wiki")
    assert paused.next_nodes == ("docs", "web", "wiki")
    assert trail.calls == Counter(["plan"])


async def test_interrupt_after_a_parallel_node_pauses_after_its_superstep() -> None:
    trail = Trail()
    runner = Runner(fan_graph(trail), InMemoryBlobStore(), interrupt_after=["wiki"])
    paused = await runner.run(T, Notes())
    assert (paused.status, paused.next_node, paused.nodes_run) == ("interrupted", "write", 4)
    assert trail.calls == Counter(["plan", "web", "docs", "wiki"])


async def test_the_recursion_limit_counts_supersteps() -> None:
    trail = Trail()
    runner = Runner(fan_graph(trail), InMemoryBlobStore(), recursion_limit=2)
    with pytest.raises(RecursionLimitReached) as caught:
        await runner.run(T, Notes())
    assert caught.value.node == "write"
    assert trail.calls == Counter(["plan", "web", "docs", "wiki"])
    assert "2 steps" in str(caught.value)


async def test_each_task_gets_its_own_context() -> None:
    contexts: list[NodeContext] = []

    def branch(state: Any, ctx: NodeContext) -> None:
        contexts.append(ctx)

    router_contexts: list[NodeContext] = []

    def split(state: Notes, ctx: NodeContext) -> list[Send]:
        router_contexts.append(ctx)
        return [Send("each", i) for i in range(3)]

    g = Graph("ctx", state=Notes).add_node("plan", lambda s: None)
    g.add_node("web", branch).add_node("docs", branch).add_node("each", branch)
    g.add_edge(START, "plan").add_edge("plan", "web").add_edge("plan", "docs")
    g.add_conditional_edges("web", split, ["each"]).add_edge("docs", END)
    g.add_edge("each", END)
    store = FailingBlobStore()
    await Runner(g, store).run(T, Notes())
    assert sorted(ctx.node for ctx in contexts) == ["docs", "each", "each", "each", "web"]
    assert len({ctx.idempotency_key for ctx in contexts}) == 5
    web = next(ctx for ctx in contexts if ctx.node == "web")
    assert router_contexts == [web]  # a router gets the context of the node it follows
    assert {ctx.step for ctx in contexts if ctx.node == "each"} == {2}
    assert {ctx.checkpoint_id for ctx in contexts if ctx.node == "each"} == {
        store.saved[2].checkpoint_id
    }


def test_the_new_error_facts_survive_copies() -> None:
    import copy

    conflict = InvalidUpdate("both wrote", field="text", tasks=("docs", "web"))
    again = copy.deepcopy(conflict)
    assert (str(again), again.field, again.tasks) == ("both wrote", "text", ("docs", "web"))
    assert isinstance(again, TypeError)
    route = InvalidRoute("plan", [Send("s", 1)], (), reason="cannot be stored")
    again_route = copy.deepcopy(route)
    assert (again_route.node, again_route.reason) == ("plan", "cannot be stored")
    assert str(again_route) == str(route)
