"""Commands: a node's update and its route together, to targets the node declares."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import operator
from collections import Counter
from typing import Annotated, Any

import pytest

from flowpoint import (
    END,
    START,
    Command,
    CorruptCheckpoint,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    InvalidRoute,
    Runner,
    Send,
    TaskWrite,
)
from flowpoint.graph._command import GOTO_CHANNEL, GOTO_INDEX


@dataclasses.dataclass
class Ticket:
    log: Annotated[list[str], operator.add] = dataclasses.field(default_factory=list)
    kind: str = ""


class Nodes:
    """Nodes that log their name; ``routes[name]`` is what that node returns instead."""

    def __init__(self, routes: dict[str, Any] | None = None) -> None:
        self.routes = routes or {}
        self.calls: Counter[str] = Counter()

    def __call__(self, name: str) -> Any:
        def body(state: Ticket) -> Any:
            self.calls[name] += 1
            return self.routes.get(name, {"log": [name]})

        return body


def triage_graph(nodes: Nodes, *, goto: Any = ("refund", "escalate", END)) -> Graph[Ticket]:
    """triage (goto: refund, escalate, END; static edge: default) -> ... -> END."""
    g = Graph("support", state=Ticket)
    g.add_node("triage", nodes("triage"), goto=goto)
    for name in ("refund", "escalate", "default"):
        g.add_node(name, nodes(name)).add_edge(name, END)
    g.add_edge(START, "triage").add_edge("triage", "default")
    return g


async def run(graph: Graph[Ticket], store: InMemoryBlobStore | None = None) -> Any:
    return await Runner(graph, store or InMemoryBlobStore()).run("t", Ticket())


# -- routing ----------------------------------------------------------------------------


async def test_goto_replaces_the_nodes_edges_and_applies_the_update_with_reducers() -> None:
    nodes = Nodes({"triage": Command(update={"log": ["triage"], "kind": "refund"}, goto="refund")})
    result = await run(triage_graph(nodes))
    assert result.status == "done"
    assert result.state == Ticket(log=["triage", "refund"], kind="refund")
    assert nodes.calls["default"] == 0  # the static edge is not followed


async def test_goto_a_list_fans_out_and_goto_end_finishes() -> None:
    nodes = Nodes({"triage": Command(goto=["refund", "escalate"])})
    assert (await run(triage_graph(nodes))).state.log == ["escalate", "refund"]
    nodes = Nodes({"triage": Command(update={"kind": "spam"}, goto=END)})
    result = await run(triage_graph(nodes))
    assert result.state == Ticket(kind="spam")
    assert result.status == "done"
    nodes = Nodes({"triage": Command(goto=[])})  # an empty list ends the branch too
    assert (await run(triage_graph(nodes))).state == Ticket()


async def test_a_command_without_goto_follows_the_edges() -> None:
    nodes = Nodes({"triage": Command(update={"kind": "other"})})
    result = await run(triage_graph(nodes))
    assert result.state == Ticket(log=["default"], kind="other")


async def test_a_node_with_goto_and_no_edge_builds_and_runs() -> None:
    nodes = Nodes({"ask": Command(update={"log": ["ask"]}, goto="answer")})
    g = Graph("loop", state=Ticket).add_node("ask", nodes("ask"), goto=["answer", END])
    g.add_node("answer", nodes("answer")).add_edge(START, "ask").add_edge("answer", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", Ticket())
    assert result.state.log == ["ask", "answer"]


async def test_goto_sends_map_a_node_over_arguments() -> None:
    def split(state: Ticket) -> Command:
        return Command(goto=[Send("work", {"n": 1}), Send("work", {"n": 2})])

    def work(job: dict[str, int]) -> dict[str, Any]:
        return {"log": [f"work {job['n']}"]}

    g = Graph("map", state=Ticket).add_node("split", split, goto=["work"])
    g.add_node("work", work).add_edge(START, "split").add_edge("work", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", Ticket())
    assert result.state.log == ["work 1", "work 2"]
    assert result.nodes_run == 3


async def test_a_router_after_a_node_that_chose_a_goto_is_not_asked() -> None:
    asked: list[str] = []

    def route(state: Ticket) -> str:
        asked.append("route")
        return "default"

    g = Graph("r", state=Ticket)
    g.add_node("triage", lambda s: Command(goto="refund"), goto=["refund"])
    g.add_node("refund", lambda s: {"log": ["refund"]}).add_node("default", lambda s: None)
    g.add_edge(START, "triage").add_conditional_edges("triage", route, ["default"])
    g.add_edge("refund", END).add_edge("default", END)
    assert (await Runner(g, InMemoryBlobStore()).run("t", Ticket())).state.log == ["refund"]
    assert asked == []


async def test_a_join_counts_a_node_that_chose_a_goto() -> None:
    g = Graph("join", state=Ticket).add_node("plan", lambda s: None)
    g.add_node("a", lambda s: Command(update={"log": ["a"]}, goto=END), goto=[END])
    g.add_node("b", lambda s: {"log": ["b"]}).add_node("c", lambda s: {"log": ["c"]})
    g.add_edge(START, "plan").add_edge("plan", "a").add_edge("plan", "b")
    g.add_edge(["a", "b"], "c").add_edge("b", END).add_edge("c", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", Ticket())
    assert result.state.log == ["a", "b", "c"]


async def test_send_tasks_of_one_node_add_their_gotos_and_follow_edges_if_one_has_none() -> None:
    def split(state: Ticket) -> list[Send]:
        return [Send("work", {"n": n}) for n in range(3)]

    def work(job: dict[str, int]) -> Any:
        if job["n"] == 0:
            return {"log": ["work 0"]}  # no goto: work's edge to "after" is followed
        return Command(update={"log": [f"work {job['n']}"]}, goto="extra")

    g = Graph("sends", state=Ticket).add_node("split", lambda s: None)
    g.add_node("work", work, goto=["extra"]).add_node("after", lambda s: {"log": ["after"]})
    g.add_node("extra", lambda s: {"log": ["extra"]})
    g.add_edge(START, "split").add_conditional_edges("split", split, ["work"])
    g.add_edge("work", "after").add_edge("after", END).add_edge("extra", END)
    result = await Runner(g, InMemoryBlobStore()).run("t", Ticket())
    # "extra" runs once, however many tasks chose it, in the same superstep as "after".
    assert result.state.log == ["work 0", "work 1", "work 2", "after", "extra"]


# -- refused ----------------------------------------------------------------------------


async def test_a_command_to_an_undeclared_node_fails_the_node_and_saves_nothing_wrong() -> None:
    nodes = Nodes({"triage": Command(update={"kind": "x"}, goto="default")})
    store = InMemoryBlobStore()
    runner = Runner(triage_graph(nodes), store)
    with pytest.raises(InvalidRoute) as caught:
        await runner.run("t", Ticket())
    error = caught.value
    assert (error.node, error.route, error.kind) == ("triage", "default", "command")
    assert error.targets == ("refund", "escalate", END)
    assert "node 'triage' returned a Command to 'default'" in str(error)
    assert "declared goto targets" in str(error)
    latest = await runner.store.load_latest("t", runner.graph.hash_u64())
    assert latest is not None
    assert (latest.step, latest.current_node, latest.state) == (0, "triage", Ticket())
    assert nodes.calls["default"] == 0
    # The error crosses processes with its facts.
    assert copy.copy(error).kind == "command"
    assert str(copy.copy(error)) == str(error)


async def test_a_command_with_goto_from_a_node_that_declares_none_is_refused() -> None:
    g = Graph("g", state=Ticket).add_node("a", lambda s: Command(goto="b"))
    g.add_node("b", lambda s: None).add_edge(START, "a").add_edge("a", "b").add_edge("b", END)
    with pytest.raises(InvalidRoute, match=r"declares no goto targets.*goto=\[\.\.\.\]"):
        await Runner(g, InMemoryBlobStore()).run("t", Ticket())


async def test_a_send_to_end_or_of_an_argument_that_cannot_be_stored_is_refused() -> None:
    for goto in ([Send(END, 1)], [Send("refund", object())]):
        nodes = Nodes({"triage": Command(goto=goto)})
        with pytest.raises(InvalidRoute) as caught:
            await run(triage_graph(nodes))
        assert caught.value.kind == "command"
        assert nodes.calls["refund"] == 0


@pytest.mark.parametrize(
    ("goto", "message"),
    [
        (["ghost"], "declares goto target 'ghost', which is not a node"),
        ([START], "declares goto START"),
        ([], r"goto=\[\]"),
        ([3], "must be a node name or END"),
    ],
)
def test_bad_goto_declarations_are_refused(goto: Any, message: str) -> None:
    with pytest.raises(GraphDefinitionError, match=message):
        triage_graph(Nodes(), goto=goto).build()


def test_goto_targets_count_as_edges_when_the_graph_is_checked() -> None:
    # "refund" is reachable only through triage's goto, and only it leads to END.
    g = Graph("g", state=Ticket).add_node("triage", lambda s: None, goto=["refund"])
    g.add_node("refund", lambda s: None).add_edge(START, "triage").add_edge("refund", END)
    g.build()
    # Without the declaration, the same graph is refused.
    bare = Graph("g", state=Ticket).add_node("triage", lambda s: None)
    bare.add_node("refund", lambda s: None).add_edge(START, "triage").add_edge("refund", END)
    with pytest.raises(GraphDefinitionError, match="no outgoing edge"):
        bare.build()


@pytest.mark.parametrize("goto", [3, [1], {"a": 1}])
def test_a_command_of_a_bad_goto_is_a_type_error(goto: Any) -> None:
    with pytest.raises(TypeError, match="a Command goes to"):
        Command(goto=goto)
    with pytest.raises(TypeError, match="another Command"):
        Command(update=Command())


# -- durable ----------------------------------------------------------------------------


async def test_a_resumed_parallel_superstep_routes_a_restored_task_as_it_chose() -> None:
    """The goto of a task whose output was saved is saved with it, and used on resume."""
    calls: Counter[str] = Counter()

    async def fast(state: Ticket) -> Command:
        calls["fast"] += 1
        return Command(update={"log": ["fast"]}, goto="chosen")

    async def slow(state: Ticket) -> dict[str, Any]:
        calls["slow"] += 1
        await asyncio.sleep(0.05)
        if calls["slow"] == 1:
            raise RuntimeError("slow failed")
        return {"log": ["slow"]}

    g = Graph("par", state=Ticket).add_node("plan", lambda s: None)
    g.add_node("fast", fast, goto=["chosen", "other"]).add_node("slow", slow)
    g.add_node("chosen", lambda s: {"log": ["chosen"]}).add_node("other", lambda s: None)
    g.add_edge(START, "plan").add_edge("plan", "fast").add_edge("plan", "slow")
    g.add_edge("fast", "other").add_edge("slow", END)
    g.add_edge("chosen", END).add_edge("other", END)
    store = InMemoryBlobStore()
    runner = Runner(g, store)
    with pytest.raises(RuntimeError, match="slow failed"):
        await runner.run("t", Ticket())
    latest = await runner.store.load_latest("t", runner.graph.hash_u64())
    assert latest is not None
    saved = await runner.store.load_writes(latest.checkpoint_id)
    assert [(w.task_id, w.index, w.channel, w.value) for w in saved if w.index == GOTO_INDEX] == [
        ("fast", GOTO_INDEX, GOTO_CHANNEL, ["chosen"])
    ]
    result = await runner.resume("t")
    assert calls == {"fast": 1, "slow": 2}  # fast's output was restored, not rerun
    assert result.state.log == ["fast", "slow", "chosen"]


@pytest.mark.parametrize("saved", [["ghost"], "chosen", [{"arg": 1}], [END], [3]])
async def test_a_saved_goto_that_is_not_the_nodes_is_a_corrupt_checkpoint(saved: Any) -> None:
    async def fast(state: Ticket) -> Command:
        return Command(goto="chosen")

    async def slow(state: Ticket) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("slow failed")

    g = Graph("par", state=Ticket).add_node("plan", lambda s: None)
    g.add_node("fast", fast, goto=["chosen"]).add_node("slow", slow)
    g.add_node("chosen", lambda s: None).add_edge(START, "plan")
    g.add_edge("plan", "fast").add_edge("plan", "slow").add_edge("slow", END)
    g.add_edge("chosen", END)
    runner = Runner(g, InMemoryBlobStore())
    with pytest.raises(RuntimeError, match="slow failed"):
        await runner.run("t", Ticket())
    latest = await runner.store.load_latest("t", runner.graph.hash_u64())
    assert latest is not None
    forged = TaskWrite("fast", GOTO_INDEX, GOTO_CHANNEL, saved)
    await runner.store.save_writes("t", latest.checkpoint_id, [forged], overwrite=True)
    with pytest.raises(CorruptCheckpoint, match="the saved goto of task 'fast'"):
        await runner.resume("t")


def test_declared_goto_targets_are_part_of_the_fingerprint() -> None:
    def graph(goto: Any) -> Any:
        g = Graph("fp", state=Ticket).add_node("a", lambda s: None, goto=goto)
        g.add_node("b", lambda s: None).add_node("c", lambda s: None)
        g.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c").add_edge("c", END)
        return g.build()

    base = graph(["b", "c", END]).hash_u64()
    assert graph([END, "c", "b"]).hash_u64() == base  # a set: the order does not count
    assert graph(["b", "c"]).hash_u64() != base
    assert graph(["c", END]).hash_u64() != base
    assert graph(None).hash_u64() != base
    assert graph(None).description["nodes"]["a"] == {}  # without goto: described as before
    assert graph(["c", "b"]).description["nodes"]["a"] == {"goto": ["b", "c"]}
