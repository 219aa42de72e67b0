"""Node context: a node or router that declares a second parameter learns where it runs."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter
from typing import Any

import pytest

from flowpoint import (
    END,
    START,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    NodeContext,
    Runner,
    TriggerPolicy,
)
from flowpoint.graph import NodeContext as GraphNodeContext
from tests.graph.doubles import FailingBlobStore

T = "trace-1"


class Seen:
    """Records the contexts nodes and routers receive."""

    def __init__(self) -> None:
        self.contexts: list[tuple[str, NodeContext]] = []

    def node(self, name: str, *, fail_first: bool = False) -> Any:
        def body(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
            self.contexts.append((name, ctx))
            if fail_first and sum(1 for n, _ in self.contexts if n == name) == 1:
                raise RuntimeError(f"{name} failed")
            return {"trail": [*state["trail"], name]}

        return body

    def of(self, name: str) -> list[NodeContext]:
        return [ctx for n, ctx in self.contexts if n == name]


def chain(*nodes: tuple[str, Any]) -> Graph[Any]:
    g: Graph[Any] = Graph("ctx")
    for name, function in nodes:
        g.add_node(name, function)
    g.add_edge(START, nodes[0][0])
    for (first, _), (second, _) in itertools.pairwise(nodes):
        g.add_edge(first, second)
    return g.add_edge(nodes[-1][0], END)


async def test_a_node_gets_where_it_runs() -> None:
    seen, store = Seen(), FailingBlobStore()
    runner = Runner(chain(("a", seen.node("a")), ("b", seen.node("b"))), store)
    await runner.run(T, {"trail": []})
    (a,), (b,) = seen.of("a"), seen.of("b")
    assert (a.trace_id, a.node, a.step, a.attempt) == (T, "a", 0, 1)
    assert (b.trace_id, b.node, b.step, b.attempt) == (T, "b", 1, 1)
    # The checkpoint each starts from: the one saved before it, holding its input.
    assert a.checkpoint_id == store.saved[0].checkpoint_id
    assert b.checkpoint_id == store.saved[1].checkpoint_id
    assert (store.saved[1].step, store.saved[1].current_node) == (1, "b")
    assert re.fullmatch(r"[0-9a-f]{32}", a.idempotency_key)
    assert a.idempotency_key != b.idempotency_key
    assert NodeContext is GraphNodeContext


async def test_the_key_is_the_same_when_a_node_runs_again() -> None:
    seen = Seen()
    runner = Runner(
        chain(("a", seen.node("a")), ("b", seen.node("b", fail_first=True))), FailingBlobStore()
    )
    with pytest.raises(RuntimeError, match="b failed"):
        await runner.run(T, {"trail": []})
    await runner.resume(T)
    first, rerun = seen.of("b")
    assert first == rerun  # every field: the same step, checkpoint and key


async def test_keys_differ_for_every_run_of_a_node_even_without_checkpoints() -> None:
    # A self-loop under ON_CHANGE: visits that change nothing share a checkpoint.
    keys: list[str] = []
    steps: list[int] = []

    def loop(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any] | None:
        keys.append(ctx.idempotency_key)
        steps.append(ctx.step)
        state["n"] += 1  # in place: ON_CHANGE sees no change
        return {"n": state["n"], "changed": state["n"]} if state["n"] % 3 == 0 else None

    def again(state: dict[str, Any], ctx: NodeContext) -> str:
        assert ctx.idempotency_key == keys[-1]  # the router gets its node's context
        return "loop" if state["n"] < 9 else END

    g: Graph[Any] = Graph("loop").add_node("loop", loop).add_edge(START, "loop")
    g.add_conditional_edges("loop", again, ["loop", END])
    for trigger in [TriggerPolicy.ON_CHANGE, TriggerPolicy.MANUAL, TriggerPolicy.EVERY_NODE]:
        keys.clear()
        steps.clear()
        await Runner(g, InMemoryBlobStore(), trigger=trigger).run(T, {"n": 0})
        assert len(keys) == 9
        assert len(set(keys)) == 9, trigger
    # Under the default trigger every visit has its own checkpoint, so its own step.
    assert steps == list(range(9))


async def test_an_update_or_a_fork_starts_new_keys() -> None:
    seen = Seen()
    runner = Runner(chain(("a", seen.node("a")), ("b", seen.node("b"))), InMemoryBlobStore())
    paused = await Runner(runner.graph, runner.store, interrupt_before=["b"]).run(T, {"trail": []})
    await runner.fork(paused.checkpoint.checkpoint_id, "forked")
    await runner.resume("forked")
    await runner.resume(T, update={"trail": ["human"]})
    forked, updated = seen.of("b")
    assert forked.trace_id == "forked"
    assert updated.trace_id == T
    assert forked.idempotency_key != updated.idempotency_key
    assert updated.step == paused.checkpoint.step + 1  # the update's checkpoint


# -- how a function declares it ---------------------------------------------------------


def state_only(state: dict[str, Any]) -> dict[str, Any]:
    return {"got": "state"}


def unannotated(state, ctx):  # type: ignore[no-untyped-def]
    return {"got": type(ctx).__name__}


def positional_only(state: dict[str, Any], ctx: NodeContext, /) -> dict[str, Any]:
    return {"got": ctx.node}


def with_option(state: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
    return {"got": verbose}


def with_context_and_option(
    state: dict[str, Any], ctx: NodeContext, *, verbose: bool = False
) -> dict[str, Any]:
    return {"got": ctx.node}


async def async_node(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    return {"got": ctx.node}


class Method:
    def __call__(self, state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        return {"got": ctx.node}


@pytest.mark.parametrize(
    ("function", "got"),
    [
        (state_only, "state"),
        (unannotated, "NodeContext"),
        (positional_only, "a"),
        (with_option, False),
        (with_context_and_option, "a"),
        (async_node, "a"),
        (Method(), "a"),
        (lambda state: {"got": "lambda"}, "lambda"),
    ],
)
async def test_how_a_node_declares_the_context(function: Any, got: Any) -> None:
    result = await Runner(chain(("a", function)), InMemoryBlobStore()).run(T, {})
    assert result.state == {"got": got}


def no_parameter() -> None:
    return None


def three(state: dict[str, Any], ctx: NodeContext, more: int) -> None:
    return None


def keyword_required(state: dict[str, Any], *, ctx: NodeContext) -> None:
    return None


def context_first(ctx: NodeContext, state: dict[str, Any]) -> None:
    return None


def config_second(state: dict[str, Any], config: dict[str, Any]) -> None:
    return None


def context_third(state: dict[str, Any], extra: int = 0, ctx: NodeContext | None = None) -> None:
    return None


@dataclasses.dataclass
class Case:
    function: Any
    match: str


@pytest.mark.parametrize(
    "case",
    [
        Case(no_parameter, "takes no parameter"),
        Case(three, "requires 3 parameters"),
        Case(keyword_required, "keyword-only"),
        Case(context_first, "'ctx' NodeContext"),
        Case(config_second, "'config' annotated dict"),
        Case(context_third, "second positional parameter only"),
    ],
    ids=lambda case: case.function.__name__,
)
def test_an_unusable_signature_is_refused_when_declared(case: Case) -> None:
    with pytest.raises(GraphDefinitionError, match=case.match) as caught:
        Graph("g").add_node("a", case.function)
    assert "node 'a'" in str(caught.value)
    g: Graph[Any] = Graph("g").add_node("a", state_only).add_edge(START, "a")
    with pytest.raises(GraphDefinitionError, match=case.match) as caught:
        g.add_conditional_edges("a", case.function, [END])
    assert "the router after 'a'" in str(caught.value)


async def test_a_router_alone_may_take_the_context() -> None:
    contexts: list[NodeContext] = []

    def route(state: dict[str, Any], ctx: NodeContext) -> str:
        contexts.append(ctx)
        return END

    g: Graph[Any] = Graph("g").add_node("a", state_only).add_edge(START, "a")
    await Runner(g.add_conditional_edges("a", route, [END]), InMemoryBlobStore()).run(T, {})
    assert [(ctx.node, ctx.step) for ctx in contexts] == [("a", 0)]


async def test_nodes_without_a_context_do_not_pay_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    made: Counter[str] = Counter()
    from flowpoint.graph import _runner as runner_module

    real = runner_module.node_context

    def counting(*args: Any) -> NodeContext:
        made[args[-1]] += 1
        return real(*args)

    monkeypatch.setattr(runner_module, "node_context", counting)
    await Runner(chain(("a", state_only), ("b", async_node)), InMemoryBlobStore()).run(T, {})
    assert made == Counter({"b": 1})
