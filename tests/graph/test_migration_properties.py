"""Random field additions and removals: a paused trace migrated and resumed keeps every value."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flowpoint import END, START, Graph, InMemoryBlobStore, Runner

TYPES: dict[str, Any] = {"int": int, "str": str, "list": list[int], "flag": bool | None}
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "str": st.text(max_size=20),
    "list": st.lists(st.integers(-5, 5), max_size=4),
    "flag": st.none() | st.booleans(),
}


@st.composite
def versions(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """Old fields with their kinds, new fields with theirs, and an old state's values."""
    names = [f"f{n}" for n in range(6)]
    old = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(list(TYPES)), min_size=1))
    kept = draw(st.lists(st.sampled_from(sorted(old)), unique=True))
    added = draw(st.dictionaries(st.sampled_from(["g0", "g1", "g2"]), st.sampled_from(list(TYPES))))
    new = {name: old[name] for name in kept} | added
    assume(new != old)
    values = {name: draw(VALUES[kind]) for name, kind in old.items()}
    return old, new, values


def state_type(name: str, fields: dict[str, str]) -> Any:
    return dataclasses.make_dataclass(name, [(one, TYPES[kind]) for one, kind in fields.items()])


def graph(state: Any) -> Graph[Any]:
    g: Graph[Any] = Graph("evolving", state=state)
    g.add_node("a", lambda s: None).add_node("b", lambda s: None)
    return g.add_edge(START, "a").add_edge("a", "b").add_edge("b", END)


DEFAULTS: dict[str, Any] = {"int": 7, "str": "new", "list": [1], "flag": None}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions())
def test_added_and_removed_fields_round_trip(
    drawn: tuple[dict[str, str], dict[str, str], dict[str, Any]],
) -> None:
    old_fields, new_fields, values = drawn
    Old, New = state_type("Old", old_fields), state_type("New", new_fields)
    seen: list[Any] = []

    def migrate(old: Any) -> Any:
        seen.append(old)
        return New(
            **{
                name: getattr(old, name) if name in old_fields else DEFAULTS[kind]
                for name, kind in new_fields.items()
            }
        )

    old_graph = graph(Old)
    new_graph = graph(New)
    new_graph.migration(from_hash=old_graph.hash_u64(), state=Old)(migrate)

    async def scenario() -> tuple[Any, Any]:
        store = InMemoryBlobStore()
        await Runner(old_graph, store, interrupt_before=["b"]).run("t", Old(**values))
        runner = Runner(new_graph, store)
        done = await runner.resume("t")
        stored = await runner.store.load_latest("t", new_graph.hash_u64())
        assert stored is not None
        return done.state, stored.state

    resumed, stored = asyncio.run(scenario())
    assert seen == [Old(**values)]
    expected = New(
        **{
            name: values[name] if name in old_fields else DEFAULTS[kind]
            for name, kind in new_fields.items()
        }
    )
    assert resumed == expected
    assert stored == expected
