"""Random DAGs with fan-out, joins, routers, Sends and reducers against a reference interpreter.

The reference runs the documented semantics one task at a time, with no store,
no concurrency and none of the runner's code: a superstep runs every ready task
on the state the superstep started with; the updates are applied in canonical
order (node name, then Send index), reducer fields combined; then the nodes that
ran trigger their static targets, their routers' targets and Sends (routers see
the state after the whole superstep), and the joins whose sources have all run
since they last triggered. A node triggered several times in a superstep runs once.
"""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, NotRequired, TypedDict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpoint import END, START, Graph, InMemoryBlobStore, Runner, Send


@dataclass
class Spec:
    """A random graph: nodes n0..n{size-1}, edges only forward (so every run ends)."""

    size: int
    statics: dict[str, list[str]] = field(default_factory=dict)
    joins: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    routers: dict[str, tuple[list[str], int]] = field(default_factory=dict)  # targets, seed
    asynchronous: frozenset[str] = frozenset()
    yields: dict[str, int] = field(default_factory=dict)  # scramble completion order


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    size = draw(st.integers(2, 8))
    names = [f"n{i}" for i in range(size)]
    spec = Spec(size)
    for i in range(1, size):
        earlier = names[:i]
        how = draw(st.sampled_from(["static", "join", "router"] if i > 1 else ["static", "router"]))
        if how == "static":
            spec.statics.setdefault(draw(st.sampled_from(earlier)), []).append(names[i])
        elif how == "join":
            sources = draw(st.lists(st.sampled_from(earlier), min_size=2, max_size=3, unique=True))
            spec.joins.append((tuple(sources), names[i]))
        else:
            source = draw(st.sampled_from(earlier))
            spec.routers.setdefault(source, ([], draw(st.integers(0, 5))))[0].append(names[i])
    # More fan-out: extra forward edges.
    for _ in range(draw(st.integers(0, size))):
        i = draw(st.integers(0, size - 2))
        j = draw(st.integers(i + 1, size - 1))
        targets = spec.statics.setdefault(names[i], [])
        if names[j] not in targets:
            targets.append(names[j])
    for source, (targets, _) in spec.routers.items():
        if draw(st.booleans()) and END not in targets:
            targets.append(END)
        if source in spec.statics:  # a router's targets may not repeat a static edge's
            spec.statics[source] = [t for t in spec.statics[source] if t not in targets]
    spec.asynchronous = frozenset(draw(st.sets(st.sampled_from(names))))
    spec.yields = {name: draw(st.integers(0, 4)) for name in names}
    return spec


def outgoing(spec: Spec, name: str) -> bool:
    return (
        bool(spec.statics.get(name))
        or name in spec.routers
        or any(name in sources for sources, _ in spec.joins)
    )


# -- what a node and a router do (shared by both interpreters: they are the graph) ----------


def node_update(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # triggered by an edge: it gets the state
        return {
            "log": [f"{name}:{len(value['log'])}"],
            "total": len(value["log"]),
            f"seen_{name}": value["total"] % 97,
        }
    return {"log": [f"{name}<{value}>"], "total": value}  # a Send: it gets its argument


def route(targets: list[str], seed: int, state: dict[str, Any]) -> list[Any]:
    chosen: list[Any] = [
        target for k, target in enumerate(targets) if (len(state["log"]) + k + seed) % 3 != 0
    ]
    if seed % 2 and targets[0] != END:
        chosen += [Send(targets[0], i * 10 + seed) for i in range((state["total"] + seed) % 3)]
    return chosen


def state_type(spec: Spec) -> Any:
    fields: dict[str, Any] = {
        "log": Annotated[list[str], operator.add],
        "total": Annotated[int, operator.add],
    }
    fields.update({f"seen_n{i}": NotRequired[int] for i in range(spec.size)})
    return TypedDict("ModelState", fields)  # type: ignore[operator]


# -- the runner's graph -------------------------------------------------------------------


class Calls:
    """Counts each node's calls; the first call of a node in ``failing`` raises."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.counts: Counter[str] = Counter()
        self.failing = failing

    def __call__(self, name: str, value: Any) -> dict[str, Any]:
        self.counts[name] += 1
        if name in self.failing and self.counts[name] == 1:
            raise RuntimeError(f"{name} failed")
        return node_update(name, value)


def build(spec: Spec, calls: Calls | None = None) -> Graph[Any]:
    run = calls or Calls()
    g: Graph[Any] = Graph("model", state=state_type(spec))
    for i in range(spec.size):
        name = f"n{i}"
        yields = spec.yields[name]
        if name in spec.asynchronous:

            async def anode(value: Any, name: str = name, yields: int = yields) -> Any:
                for _ in range(yields):
                    await asyncio.sleep(0)
                return run(name, value)

            g.add_node(name, anode)
        else:
            g.add_node(name, lambda value, name=name: run(name, value))
    g.add_edge(START, "n0")
    for source, targets in spec.statics.items():
        for target in targets:
            g.add_edge(source, target)
    for sources, target in spec.joins:
        g.add_edge(list(sources), target)
    for source, (targets, seed) in spec.routers.items():
        g.add_conditional_edges(
            source, lambda state, t=targets, s=seed: route(t, s, state), list(targets)
        )
    for i in range(spec.size):
        if not outgoing(spec, f"n{i}"):
            g.add_edge(f"n{i}", END)
    return g


# -- the reference interpreter ------------------------------------------------------------


def reference(spec: Spec) -> tuple[dict[str, Any], int, Counter[str]]:
    """The final state, how many supersteps ran, and how often each node ran."""
    state: dict[str, Any] = {"log": [], "total": 0}
    tasks: list[tuple[str, int, Any]] = [("n0", -1, None)]  # node, Send index (-1: edge), arg
    progress: dict[int, set[str]] = {}
    supersteps = 0
    runs: Counter[str] = Counter()
    while tasks:
        supersteps += 1
        runs.update(node for node, _, _ in tasks)
        tasks.sort(key=lambda task: (task[0], task[1]))
        updates = [node_update(node, state if index < 0 else arg) for node, index, arg in tasks]
        for update in updates:
            for key, value in update.items():
                if key in ("log", "total"):
                    state = {**state, key: state[key] + value}
                else:
                    state = {**state, key: value}
        ran = sorted({node for node, _, _ in tasks})
        triggered: set[str] = set()
        sends: list[tuple[str, Any]] = []
        for node in ran:
            triggered.update(t for t in spec.statics.get(node, []) if t != END)
            if node in spec.routers:
                targets, seed = spec.routers[node]
                for chosen in route(targets, seed, state):
                    if isinstance(chosen, Send):
                        sends.append((chosen.node, chosen.arg))
                    elif chosen != END:
                        triggered.add(chosen)
        for number, (sources, target) in enumerate(spec.joins):
            progress.setdefault(number, set()).update(n for n in ran if n in sources)
            if progress[number] == set(sources):
                progress[number] = set()
                triggered.add(target)
        counters: dict[str, int] = {}
        tasks = [(node, -1, None) for node in triggered]
        for node, arg in sends:
            counters[node] = counters.get(node, -1) + 1
            tasks.append((node, counters[node], arg))
    return state, supersteps, runs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_parallel_graphs_match_the_reference(spec: Spec) -> None:
    expected, supersteps, _ = reference(spec)
    graph = build(spec).build()

    async def run() -> Any:
        store = InMemoryBlobStore()
        result = await Runner(graph, store).run("model", {"log": [], "total": 0})
        return result, len(await store.history("model", limit=1000))

    result, checkpoints = asyncio.run(run())
    assert result.status == "done"
    assert result.state == expected
    assert checkpoints == supersteps + 1  # one checkpoint per superstep, and the input's


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.data())
def test_failed_tasks_rerun_alone_and_the_run_ends_as_the_reference(
    spec: Spec, data: st.DataObject
) -> None:
    """Each node in ``failing`` raises at its first call; resumes finish the run.

    A resume runs only the tasks of the superstep whose outputs are not saved: each
    node runs as often as in the reference, plus once for its failure.
    """
    names = [f"n{i}" for i in range(spec.size)]
    failing = frozenset(data.draw(st.sets(st.sampled_from(names), max_size=3)))
    expected, _, runs = reference(spec)
    calls = Calls(failing)
    graph = build(spec, calls).build()

    async def run() -> Any:
        runner = Runner(graph, InMemoryBlobStore())
        try:
            return await runner.run("model", {"log": [], "total": 0})
        except RuntimeError:
            pass
        for _ in range(len(failing)):
            try:
                return await runner.resume("model")
            except RuntimeError:
                continue
        raise AssertionError("the run did not finish")

    result = asyncio.run(run())
    assert result.state == expected
    assert calls.counts == runs + Counter(name for name in failing if runs[name])
