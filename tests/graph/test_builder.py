"""Graph.build() refuses every malformed graph with a message naming the culprit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from flowpoint import END, START, BuiltGraph, Graph, GraphDefinitionError, WorkflowError
from flowpoint.graph._builder import ConditionalEdge, StaticEdge


def step(state: dict[str, Any]) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


async def astep(state: dict[str, Any]) -> None:
    return None


def route(state: dict[str, Any]) -> str:
    return END


def graph_of(*nodes: str) -> Graph[Any]:
    g: Graph[Any] = Graph("g")
    for name in nodes:
        g.add_node(name, step)
    return g


def _unknown_target(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", "ghost")


def _unknown_source(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", END).add_edge("ghost", "a")


def _unknown_router_target(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_conditional_edges("a", route, ["b", "ghost"])
    g.add_edge("b", END)


def _edge_to_start(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", START)


def _router_to_start(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_conditional_edges("a", route, [END, START])


def _edge_from_end(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", END).add_edge(END, "b")


def _two_start_edges(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge(START, "b").add_edge("a", END).add_edge("b", END)


def _no_outgoing(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", "b")


def _no_start(g: Graph[Any]) -> None:
    g.add_edge("a", "b").add_edge("b", END)


def _start_to_end(g: Graph[Any]) -> None:
    g.add_edge(START, END).add_edge("a", END).add_edge("b", END)


def _conditional_start(g: Graph[Any]) -> None:
    g.add_conditional_edges(START, route, ["a", "b"]).add_edge("a", END).add_edge("b", END)


def _unreachable(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", END).add_edge("b", END)


def _unreachable_island(g: Graph[Any]) -> None:
    # "b" and "c" reach END but nothing reaches them.
    g.add_node("c", step)
    g.add_edge(START, "a").add_edge("a", END).add_edge("b", "c").add_edge("c", END)


def _no_path_to_end(g: Graph[Any]) -> None:
    g.add_edge(START, "a").add_edge("a", "b").add_edge("b", "a")


def _loop_without_exit(g: Graph[Any]) -> None:
    # "a" may end, but once in "b" a run loops on "b" for ever.
    g.add_edge(START, "a").add_conditional_edges("a", route, ["b", END])
    g.add_conditional_edges("b", route, ["b"])


REJECTIONS: dict[str, tuple[Callable[[Graph[Any]], None], tuple[str, ...]]] = {
    "unknown target": (_unknown_target, ("'a'", "'ghost'", "not a node")),
    "unknown source": (_unknown_source, ("'ghost'", "not a node")),
    "unknown router target": (_unknown_router_target, ("'ghost'", "not a node")),
    "edge to START": (_edge_to_start, ("'a'", "START")),
    "router to START": (_router_to_start, ("'a'", "START")),
    "edge from END": (_edge_from_end, ("END",)),
    "two START edges": (_two_start_edges, (repr(START), "two outgoing edges")),
    "node without outgoing edge": (_no_outgoing, ("'b'", "no outgoing edge")),
    "no START edge": (_no_start, ("START",)),
    "START to END": (_start_to_end, ("START", "first node")),
    "conditional START": (_conditional_start, ("START", "static edge")),
    "unreachable node": (_unreachable, ("'b'", "reach")),
    "unreachable island": (_unreachable_island, ("'b'", "'c'", "reach")),
    "no path to END": (_no_path_to_end, ("'a'", "'b'", "END")),
    "loop without exit": (_loop_without_exit, ("'b'", "END")),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_build_rejects(case: str) -> None:
    declare, culprits = REJECTIONS[case]
    g = graph_of("a", "b")
    declare(g)
    with pytest.raises(GraphDefinitionError) as caught:
        g.build()
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, WorkflowError)
    for culprit in culprits:
        assert culprit in str(caught.value)
    # hash_u64 on the builder checks the graph too.
    with pytest.raises(GraphDefinitionError):
        g.hash_u64()


def test_no_path_to_end_names_only_the_stuck_nodes() -> None:
    g = graph_of("a", "b", "c")
    g.add_edge(START, "a").add_conditional_edges("a", route, ["b", "c"])
    g.add_edge("b", END).add_edge("c", "c")
    with pytest.raises(GraphDefinitionError, match="'c'") as caught:
        g.build()
    assert "'a'" not in str(caught.value)
    assert "'b'" not in str(caught.value)


def test_empty_graph_has_no_start() -> None:
    with pytest.raises(GraphDefinitionError, match="START"):
        Graph("empty").build()


@pytest.mark.parametrize("name", [START, END])
def test_reserved_node_names(name: str) -> None:
    with pytest.raises(GraphDefinitionError, match="reserved") as caught:
        Graph("g").add_node(name, step)
    assert repr(name) in str(caught.value)


def test_duplicate_node() -> None:
    g = graph_of("a")
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        g.add_node("a", astep)
    assert "already" in str(caught.value)
    # The first declaration stands.
    assert g._nodes["a"].function is step


@pytest.mark.parametrize("name", ["", None, 3, b"a"])
def test_bad_node_names(name: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="name"):
        Graph("g").add_node(name, step)


@pytest.mark.parametrize("name", ["", None, 7])
def test_bad_graph_names(name: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="graph's name"):
        Graph(name)


@pytest.mark.parametrize("version", [True, False, 1.5, [1], (1,), b"v1", {"v": 1}])
def test_bad_versions(version: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="version") as caught:
        Graph("g").add_node("a", step, version=version)
    assert "'a'" in str(caught.value)


@pytest.mark.parametrize("version", [None, 0, 7, -1, "v2", "2024-01-01"])
def test_good_versions(version: Any) -> None:
    g = Graph("g").add_node("a", step, version=version).add_edge(START, "a").add_edge("a", END)
    assert g.build().nodes["a"].version == version


@pytest.mark.parametrize("function", [None, 3, "step", [step]])
def test_node_needs_a_callable(function: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        Graph("g").add_node("a", function)
    assert "callable" in str(caught.value)


@pytest.mark.parametrize("router", [None, "route", 0])
def test_router_needs_a_callable(router: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        graph_of("a").add_conditional_edges("a", router, [END])
    assert "callable" in str(caught.value)


@pytest.mark.parametrize("targets", [[], (), {}, iter([])])
def test_router_without_targets(targets: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        graph_of("a").add_conditional_edges("a", route, targets)
    assert "no targets" in str(caught.value)


def test_router_with_duplicate_targets() -> None:
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        graph_of("a", "b").add_conditional_edges("a", route, ["b", END, "b"])
    assert "twice" in str(caught.value)


def test_router_targets_as_a_str() -> None:
    with pytest.raises(GraphDefinitionError, match="'a'") as caught:
        graph_of("a").add_conditional_edges("a", route, "next")
    assert "'next'" in str(caught.value)


@pytest.mark.parametrize("bad", [None, "", 3])
def test_edge_ends_must_be_names(bad: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="source"):
        graph_of("a").add_edge(bad, "a")
    with pytest.raises(GraphDefinitionError, match="target"):
        graph_of("a").add_edge("a", bad)
    with pytest.raises(GraphDefinitionError, match="target"):
        graph_of("a").add_conditional_edges("a", route, ["a", bad])
    with pytest.raises(GraphDefinitionError, match="target"):
        graph_of("a").add_conditional_edges("a", route, {"x": bad})


# -- graphs that build ------------------------------------------------------------------


def test_linear_graph_builds() -> None:
    g = graph_of("a", "b", "c")
    assert g.add_edge(START, "a") is g  # chaining
    g.add_edge("a", "b").add_edge("b", "c").add_edge("c", END)
    built = g.build()
    assert isinstance(built, BuiltGraph)
    assert built.start == "a"
    assert list(built.nodes) == ["a", "b", "c"]
    assert built.edges_after("a") == (StaticEdge("a", "b"),)
    assert built.joins_after("a") == ()
    assert built.name == "g"
    assert "'g'" in repr(built)
    assert "3 nodes" in repr(built)


def test_single_node_graph_builds() -> None:
    built = graph_of("only").add_edge(START, "only").add_edge("only", END).build()
    assert built.start == "only"


def test_self_loop_with_exit_builds() -> None:
    g = graph_of("a")
    g.add_edge(START, "a").add_conditional_edges("a", route, ["a", END])
    (edge,) = g.build().edges_after("a")
    assert isinstance(edge, ConditionalEdge)
    assert edge.targets == ("a", END)


def test_cycle_through_several_nodes_builds() -> None:
    g = graph_of("plan", "act", "check")
    g.add_edge(START, "plan").add_edge("plan", "act").add_edge("act", "check")
    g.add_conditional_edges("check", route, ["plan", END])
    assert set(g.build().nodes) == {"plan", "act", "check"}


def test_path_map_router_builds() -> None:
    g = graph_of("a", "b", "c")
    g.add_edge(START, "a")
    # Two keys may map to the same place: only the map's keys must be distinct.
    g.add_conditional_edges("a", route, {"left": "b", "right": "c", "stop": END, None: END})
    g.add_edge("b", END).add_edge("c", END)
    (edge,) = g.build().edges_after("a")
    assert isinstance(edge, ConditionalEdge)
    assert edge.targets == ("b", "c", END, END)
    assert edge.path_map == {"left": "b", "right": "c", "stop": END, None: END}


def test_router_targets_from_a_generator() -> None:
    g = graph_of("a", "b")
    g.add_edge(START, "a").add_conditional_edges("a", route, (t for t in ["b", END]))
    g.add_edge("b", END)
    (edge,) = g.build().edges_after("a")
    assert isinstance(edge, ConditionalEdge)
    assert edge.targets == ("b", END)


def test_sync_and_async_nodes_and_routers_build() -> None:
    async def aroute(state: Any) -> str:
        return END

    class CallableNode:
        def __call__(self, state: Any) -> None:
            return None

    g: Graph[Any] = Graph("mixed")
    g.add_node("sync", step).add_node("async", astep).add_node("obj", CallableNode())
    g.add_node("lam", lambda state: None)
    g.add_edge(START, "sync").add_edge("sync", "async").add_edge("async", "obj")
    g.add_conditional_edges("obj", aroute, ["lam", END]).add_edge("lam", END)
    assert list(g.build().nodes) == ["sync", "async", "obj", "lam"]


def test_diamond_builds() -> None:
    g = graph_of("a", "b", "c", "d")
    g.add_edge(START, "a").add_conditional_edges("a", route, ["b", "c"])
    g.add_edge("b", "d").add_edge("c", "d").add_edge("d", END)
    assert g.build().start == "a"


def test_build_does_not_freeze_the_builder() -> None:
    g = graph_of("a").add_edge(START, "a").add_edge("a", END)
    first = g.build()
    g.add_node("b", step)
    with pytest.raises(GraphDefinitionError, match="'b'"):
        g.build()
    assert list(first.nodes) == ["a"]
    with pytest.raises(TypeError):
        first.nodes["b"] = first.nodes["a"]  # type: ignore[index]
