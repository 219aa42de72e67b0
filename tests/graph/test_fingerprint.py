"""graph.hash_u64(): stable everywhere, sensitive to structure, blind to code."""

from __future__ import annotations

import dataclasses
import enum
import operator
import os
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import annotated_types
import attrs
import msgspec
import pydantic
import pytest

from flowpoint import END, START, Graph, GraphDefinitionError
from flowpoint.graph._fingerprint import FINGERPRINT_VERSION, describe_type
from tests.graph import reference_graph as ref

ROOT = Path(__file__).resolve().parents[2]

# The fingerprint of tests/graph/reference_graph.py. Every stored run is stamped with
# its graph's hash: if this value changes, every checkpoint ever written refuses to
# resume (GraphMismatch). Change it only with a new FINGERPRINT_VERSION, on purpose
# (version 1 gave 0xBD795A44B640B6F4).
GOLDEN = 0x0CF2A1FECAE3B5FD


def test_golden_value() -> None:
    assert ref.reference_graph().hash_u64() == GOLDEN


def test_hash_is_an_unsigned_64_bit_int() -> None:
    value = ref.reference_graph().hash_u64()
    assert type(value) is int
    assert 0 <= value < 2**64


def test_builder_and_built_graph_agree() -> None:
    g: Graph[Any] = Graph("g").add_node("a", ref.plan).add_edge(START, "a").add_edge("a", END)
    assert g.hash_u64() == g.build().hash_u64() == g.build().hash_u64()


@pytest.mark.parametrize("seed", ["0", "12345", "random"])
def test_same_value_in_another_process(seed: str) -> None:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])  # this tree's flowpoint
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path}
    code = (
        "from tests.graph.reference_graph import reference_graph; "
        "print(reference_graph().hash_u64())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == GOLDEN


# -- what changes the hash --------------------------------------------------------------


@dataclasses.dataclass
class BaseState:
    count: int
    text: str


@dataclasses.dataclass
class StateFieldAdded:
    count: int
    text: str
    extra: bool


@dataclasses.dataclass
class StateFieldRemoved:
    count: int


@dataclasses.dataclass
class StateFieldRetyped:
    count: float
    text: str


@dataclasses.dataclass
class StateFieldRenamed:
    total: int
    text: str


def node_a(state: Any) -> None:
    return None


def node_b(state: Any) -> None:
    return None


def node_c(state: Any) -> None:
    return None


def router(state: Any) -> str:
    return END


BASE: dict[str, Any] = {
    "state": BaseState,
    "nodes": [("plan", 1), ("act", None), ("check", None)],
    "start": "plan",
    # (source, target) for static edges, (source, [targets]) or (source, {map}) for routers
    "edges": [("plan", "act"), ("act", "check"), ("check", ["plan", "act", END])],
}

VARIANTS: dict[str, dict[str, Any]] = {
    "node added": {
        "nodes": [("plan", 1), ("act", None), ("check", None), ("review", None)],
        "edges": [
            ("plan", "act"),
            ("act", "check"),
            ("check", ["plan", "act", "review", END]),
            ("review", END),
        ],
    },
    "node removed": {
        "nodes": [("plan", 1), ("check", None)],
        "edges": [("plan", "check"), ("check", ["plan", END])],
    },
    "node renamed": {
        "nodes": [("plan", 1), ("execute", None), ("check", None)],
        "edges": [("plan", "execute"), ("execute", "check"), ("check", ["plan", "execute", END])],
    },
    "version bumped": {"nodes": [("plan", 2), ("act", None), ("check", None)]},
    "version added": {"nodes": [("plan", 1), ("act", 1), ("check", None)]},
    "version removed": {"nodes": [("plan", None), ("act", None), ("check", None)]},
    "version int to str": {"nodes": [("plan", "1"), ("act", None), ("check", None)]},
    "static edge retargeted": {
        "edges": [("plan", "check"), ("act", "check"), ("check", ["plan", "act", END])]
    },
    "route added": {
        "edges": [("plan", "act"), ("act", "check"), ("check", ["plan", "act", "check", END])]
    },
    "route removed": {"edges": [("plan", "act"), ("act", "check"), ("check", ["act", END])]},
    "route retargeted": {
        "edges": [("plan", "act"), ("act", "check"), ("check", ["plan", "check", END])]
    },
    "conditional edge removed": {"edges": [("plan", "act"), ("act", "check"), ("check", END)]},
    "static edge made conditional": {
        "edges": [("plan", ["act"]), ("act", "check"), ("check", ["plan", "act", END])]
    },
    "routes as another path map": {
        "edges": [("plan", "act"), ("act", "check"), ("check", {"plan": "plan", "end": END})]
    },
    "routes as a path map": {
        "edges": [
            ("plan", "act"),
            ("act", "check"),
            ("check", {"plan": "plan", "act": "act", "end": END}),
        ]
    },
    "path map key changed": {
        "edges": [
            ("plan", "act"),
            ("act", "check"),
            ("check", {"plan": "plan", "act": "act", "stop": END}),
        ]
    },
    "start changed": {"start": "act"},
    "fan-out added": {
        "edges": [("plan", "act"), ("plan", "check"), ("act", "check"), ("check", ["plan", END])]
    },
    "fan-out as a router": {
        "edges": [("plan", "act"), ("plan", ["check"]), ("act", "check"), ("check", ["plan", END])]
    },
    "join added": {
        "edges": [("plan", "act"), (["plan", "act"], "check"), ("check", ["plan", "act", END])]
    },
    "join of other sources": {
        "edges": [
            ("plan", "act"),
            ("plan", "check"),
            (["plan", "check"], "act"),
            ("act", "check"),
            ("check", ["plan", "act", END]),
        ]
    },
    "join retargeted": {
        "edges": [("plan", "act"), (["plan", "act"], END), ("act", "check"), ("check", [END])]
    },
    "state field added": {"state": StateFieldAdded},
    "state field removed": {"state": StateFieldRemoved},
    "state field retyped": {"state": StateFieldRetyped},
    "state field renamed": {"state": StateFieldRenamed},
    "state is a plain dict": {"state": dict},
}


def make_graph(knobs: dict[str, Any], *, functions: Any = None, name: str = "g") -> Graph[Any]:
    """The base graph with ``knobs`` replacing some of its parts."""
    spec = {**BASE, **knobs}
    functions = functions or {}
    g: Graph[Any] = Graph(name, state=spec["state"])
    for node, version in spec["nodes"]:
        g.add_node(node, functions.get(node, node_a), version=version)
    g.add_edge(START, spec["start"])
    for source, target in spec["edges"]:
        if isinstance(target, str):
            g.add_edge(source, target)
        else:
            g.add_conditional_edges(source, functions.get("router", router), target)
    return g


def test_base_graph_builds() -> None:
    assert make_graph({}).build().start == "plan"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_change_changes_the_hash(variant: str) -> None:
    base = make_graph({}).hash_u64()
    changed = make_graph(VARIANTS[variant]).hash_u64()
    assert changed != base
    others = {name: make_graph(knobs).hash_u64() for name, knobs in VARIANTS.items()}
    clashes = [name for name, value in others.items() if value == changed and name != variant]
    assert clashes == []


def other_body(state: Any) -> dict[str, Any]:
    return {"count": state.count + 1}


async def async_body(state: Any) -> None:
    return None


def other_router(state: Any) -> str:
    return "plan" if state.count < 3 else END


@dataclasses.dataclass
class RenamedAndDocumented:
    """Same fields as BaseState, another name, defaults and a docstring."""

    count: int = 42
    text: str = "default"

    def helper(self) -> int:
        return self.count


SAME: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "node bodies": ({}, {"plan": other_body, "act": async_body, "check": lambda s: None}),
    "routes reordered": (
        {"edges": [("plan", "act"), ("act", "check"), ("check", ["act", END, "plan"])]},
        {},
    ),
    "router body": ({}, {"router": other_router}),
    "async router": ({}, {"router": async_body}),
    "state renamed, with defaults and docstring": ({"state": RenamedAndDocumented}, {}),
}

JOINED = [("plan", "act"), (["plan", "act"], "check"), ("check", ["plan", "act", END])]


def test_a_join_is_a_set_of_sources() -> None:
    swapped = [("plan", "act"), (["act", "plan"], "check"), ("check", ["plan", "act", END])]
    assert make_graph({"edges": swapped}).hash_u64() == make_graph({"edges": JOINED}).hash_u64()


def test_a_graph_without_parallel_edges_keeps_its_hash() -> None:
    # Fan-out and joins add edges of their own kind: the base graph's description,
    # and so every stored run's fingerprint, is what it was.
    assert make_graph({}).hash_u64() == 0xF4ED7FD20800AAD8


@pytest.mark.parametrize("case", sorted(SAME))
def test_what_does_not_change_the_hash(case: str) -> None:
    knobs, functions = SAME[case]
    base = make_graph({}).hash_u64()
    assert make_graph(knobs, functions=functions).hash_u64() == base


def test_graph_name_is_part_of_the_hash() -> None:
    # docs/architecture.md: the fingerprint covers the graph's name; a run started by one
    # graph never resumes on another that happens to share its shape.
    assert make_graph({}, name="other").hash_u64() != make_graph({}).hash_u64()


def test_declaration_order_is_not_part_of_the_hash() -> None:
    # docs/architecture.md: nodes and edges are sets; the order of add_node and add_edge
    # calls cannot change how a run goes, so it does not change the hash.
    base = make_graph({}).hash_u64()
    nodes_swapped = make_graph({"nodes": [("act", None), ("check", None), ("plan", 1)]})
    edges_swapped = make_graph(
        {"edges": [("check", ["plan", "act", END]), ("act", "check"), ("plan", "act")]}
    )
    assert nodes_swapped.hash_u64() == base
    assert edges_swapped.hash_u64() == base
    start_last: Graph[Any] = Graph("g", state=BaseState)
    for node, version in BASE["nodes"]:
        start_last.add_node(node, node_a, version=version)
    start_last.add_edge("plan", "act").add_edge("act", "check")
    start_last.add_conditional_edges("check", router, ["plan", "act", END])
    start_last.add_edge(START, "plan")
    assert start_last.hash_u64() == base


def test_a_path_map_is_a_set_of_routes() -> None:
    def mapped(routes: dict[Any, str]) -> int:
        return make_graph(
            {"edges": [("plan", "act"), ("act", "check"), ("check", routes)]}
        ).hash_u64()

    assert mapped({"end": END, "again": "plan"}) == mapped({"again": "plan", "end": END})
    assert mapped({"end": END, "again": "plan"}) != mapped({"end": "plan", "again": END})
    assert mapped({True: END, False: "plan"}) != mapped({"yes": END, "no": "plan"})
    renamed = {ColorRenamedClass.RED: END, ColorRenamedClass.BLUE: "plan"}
    assert mapped({Color.RED: END, Color.BLUE: "plan"}) == mapped(renamed)
    assert mapped({Color.RED: END, Color.BLUE: "plan"}) != mapped({"red": END, "blue": "plan"})


def test_the_format_is_version_2() -> None:
    assert FINGERPRINT_VERSION == 2


# -- state schemas of each kind ---------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class ColorValueChanged(enum.Enum):
    RED = "rouge"
    BLUE = "blue"


class ColorMemberAdded(enum.Enum):
    RED = "red"
    BLUE = "blue"
    GREEN = "green"


class ColorRenamedClass(enum.Enum):
    """Same members, another class name."""

    RED = "red"
    BLUE = "blue"


class TD(TypedDict):
    count: int
    text: str


class TDAdded(TypedDict):
    count: int
    text: str
    extra: list[str]


class TDRemoved(TypedDict):
    count: int


class TDRetyped(TypedDict):
    count: int
    text: bytes


class TDOptionalKey(TypedDict):
    count: int
    text: NotRequired[str]


class TDRenamed(TypedDict):
    """Another name, same keys."""

    count: int
    text: str


class St(msgspec.Struct):
    count: int
    text: str


class StAdded(msgspec.Struct):
    count: int
    text: str
    extra: float = 0.0


class StRemoved(msgspec.Struct):
    text: str


class StRetyped(msgspec.Struct):
    count: int
    text: list[str]


class StEncodedName(msgspec.Struct, rename={"text": "body"}):
    count: int
    text: str


class StRenamed(msgspec.Struct):
    """Another name, same fields, defaults."""

    count: int = 1
    text: str = ""


class Pd(pydantic.BaseModel):
    count: int
    text: str


class PdAdded(pydantic.BaseModel):
    count: int
    text: str
    extra: dict[str, int] = {}


class PdRemoved(pydantic.BaseModel):
    count: int


class PdRetyped(pydantic.BaseModel):
    count: str
    text: str


class PdAlias(pydantic.BaseModel):
    count: int
    text: str = pydantic.Field(alias="Text")


class PdRenamed(pydantic.BaseModel):
    """Another name, same fields."""

    count: int = 3
    text: str = pydantic.Field(default="x", description="ignored by the fingerprint")


@dataclasses.dataclass
class Inner:
    value: int
    color: Color


@dataclasses.dataclass
class InnerRetyped:
    value: str
    color: Color


@dataclasses.dataclass
class InnerAdded:
    value: int
    color: Color
    weight: float


@dataclasses.dataclass
class InnerRenamedClass:
    value: int
    color: Color


@dataclasses.dataclass
class Nested:
    inner: Inner
    items: list[Inner]


@dataclasses.dataclass
class NestedInnerRetyped:
    inner: InnerRetyped
    items: list[Inner]


@dataclasses.dataclass
class NestedInnerAdded:
    inner: Inner
    items: list[InnerAdded]


@dataclasses.dataclass
class NestedInnerRenamed:
    inner: InnerRenamedClass
    items: list[InnerRenamedClass]


@dataclasses.dataclass
class NestedColorChanged:
    inner: Inner
    items: list[Inner]
    color: ColorValueChanged


@dataclasses.dataclass
class NestedColor:
    inner: Inner
    items: list[Inner]
    color: Color


@dataclasses.dataclass
class NestedColorAdded:
    inner: Inner
    items: list[Inner]
    color: ColorMemberAdded


@dataclasses.dataclass
class NestedColorRenamedClass:
    inner: Inner
    items: list[Inner]
    color: ColorRenamedClass


@dataclasses.dataclass
class Opt:
    value: int | None
    label: Optional[str]  # noqa: UP045 - the old spelling must hash as the new one


@dataclasses.dataclass
class OptSpelledNew:
    value: Optional[int]  # noqa: UP045
    label: str | None


@dataclasses.dataclass
class OptMadeRequired:
    value: int
    label: str | None


@dataclasses.dataclass
class OptWidened:
    value: int | float | None
    label: str | None


@dataclasses.dataclass
class Lit:
    mode: Literal["a", "b"]


@dataclasses.dataclass
class LitChanged:
    mode: Literal["a", "c"]


@dataclasses.dataclass
class Recursive:
    name: str
    children: list[Recursive]


@dataclasses.dataclass
class RecursiveRetyped:
    name: bytes
    children: list[RecursiveRetyped]


class Tup(typing.NamedTuple):
    a: int
    b: str


class TupRetyped(typing.NamedTuple):
    a: int
    b: int


class ColorMemberRenamed(enum.Enum):
    """A member renamed, its (stored) value kept."""

    CRIMSON = "red"
    BLUE = "blue"


@dataclasses.dataclass
class NestedColorMemberRenamed:
    inner: Inner
    items: list[Inner]
    color: ColorMemberRenamed


@dataclasses.dataclass
class LitReordered:
    mode: Literal["b", "a"]


@attrs.define
class At:
    count: int
    text: str


@attrs.define
class AtAdded:
    count: int
    text: str
    extra: bool


@attrs.define
class AtRetyped:
    count: int
    text: bytes


@attrs.define
class AtFieldRenamed:
    total: int
    text: str


@attrs.define
class AtRenamedClass:
    """Another name, same fields, defaults."""

    count: int = 0
    text: str = ""


Person = typing.NewType("Person", BaseState)
PersonWithMore = typing.NewType("PersonWithMore", StateFieldAdded)
Count = typing.NewType("Count", int)


@dataclasses.dataclass
class WithNewType:
    who: Person
    count: int


@dataclasses.dataclass
class WithNewTypeOfMore:
    who: PersonWithMore
    count: int


@dataclasses.dataclass
class WithNewTypeOfInt:
    who: Person
    count: Count


class StArrayLike(msgspec.Struct, array_like=True):
    count: int
    text: str


class StTagged(msgspec.Struct, tag=True):
    count: int
    text: str


class StTaggedOtherValue(msgspec.Struct, tag="st"):
    count: int
    text: str


class StTagField(msgspec.Struct, tag=True, tag_field="kind"):
    count: int
    text: str


class StOmitDefaults(msgspec.Struct, omit_defaults=True):
    count: int
    text: str


class StForbidUnknown(msgspec.Struct, forbid_unknown_fields=True):
    count: int
    text: str


class StFrozen(msgspec.Struct, frozen=True, eq=False, repr_omit_defaults=True):
    """Options that change neither what is stored nor what loads."""

    count: int
    text: str


@dataclasses.dataclass
class Bounded:
    count: Annotated[int, msgspec.Meta(gt=0)]
    text: str


@dataclasses.dataclass
class BoundedOtherwise:
    count: Annotated[int, msgspec.Meta(gt=1)]
    text: str


@dataclasses.dataclass
class BoundedTwice:
    count: Annotated[int, msgspec.Meta(gt=0)]
    text: Annotated[str, msgspec.Meta(max_length=10)]


@dataclasses.dataclass
class BoundedDocumented:
    count: Annotated[int, msgspec.Meta(gt=0, description="how many", title="Count")]
    text: str


@dataclasses.dataclass
class Chat:
    messages: Annotated[list[str], operator.add]


@dataclasses.dataclass
class ChatOtherReducer:
    messages: Annotated[list[str], operator.iadd]


@dataclasses.dataclass
class ChatNoReducer:
    messages: list[str]


class PdGt(pydantic.BaseModel):
    count: int = pydantic.Field(gt=0)
    text: str


class PdGtAnnotated(pydantic.BaseModel):
    """The same constraint, spelled with annotated-types."""

    count: Annotated[int, annotated_types.Gt(0)]
    text: str


class PdGt1(pydantic.BaseModel):
    count: int = pydantic.Field(gt=1)
    text: str


class PdMaxLength(pydantic.BaseModel):
    count: int = pydantic.Field(gt=0)
    text: str = pydantic.Field(max_length=3)


class PdPattern(pydantic.BaseModel):
    count: int = pydantic.Field(gt=0)
    text: Annotated[str, pydantic.StringConstraints(pattern="^a")]


class PdValidationAlias(pydantic.BaseModel):
    count: int
    text: str = pydantic.Field(validation_alias="Text")


class PdSerializationAlias(pydantic.BaseModel):
    count: int
    text: str = pydantic.Field(serialization_alias="Text")


class PdForbidExtra(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    count: int
    text: str


# (base, [types that must hash differently from base], [types that must hash the same])
SCHEMAS: dict[str, tuple[Any, list[Any], list[Any]]] = {
    "dataclass": (
        BaseState,
        [StateFieldAdded, StateFieldRemoved, StateFieldRetyped, StateFieldRenamed],
        [RenamedAndDocumented],
    ),
    "typeddict": (TD, [TDAdded, TDRemoved, TDRetyped, TDOptionalKey], [TDRenamed]),
    "struct": (
        St,
        [
            StAdded,
            StRemoved,
            StRetyped,
            StEncodedName,
            StArrayLike,
            StTagged,
            StTaggedOtherValue,
            StTagField,
            StOmitDefaults,
            StForbidUnknown,
        ],
        [StRenamed, StFrozen],
    ),
    "attrs": (At, [AtAdded, AtRetyped, AtFieldRenamed], [AtRenamedClass]),
    "newtype": (WithNewType, [WithNewTypeOfMore], [WithNewTypeOfInt]),
    "constraints": (Bounded, [BoundedOtherwise, BoundedTwice, BaseState], [BoundedDocumented]),
    "reducer": (Chat, [ChatOtherReducer, ChatNoReducer], []),
    "pydantic": (
        Pd,
        [PdAdded, PdRemoved, PdRetyped, PdAlias, PdValidationAlias, PdSerializationAlias],
        [PdRenamed],
    ),
    "pydantic settings": (Pd, [PdForbidExtra], []),
    "pydantic constraints": (PdGt, [Pd, PdGt1, PdMaxLength, PdPattern], [PdGtAnnotated]),
    "nested": (Nested, [NestedInnerRetyped, NestedInnerAdded], [NestedInnerRenamed]),
    "enum": (
        NestedColor,
        [NestedColorChanged, NestedColorAdded, Nested],
        [NestedColorRenamedClass, NestedColorMemberRenamed],
    ),
    "optional": (Opt, [OptMadeRequired, OptWidened], [OptSpelledNew]),
    "literal": (Lit, [LitChanged], [LitReordered]),
    "recursive": (Recursive, [RecursiveRetyped], []),
    "namedtuple": (Tup, [TupRetyped], []),
    "dict": (dict[str, int], [dict[str, str], dict[int, int], list[int], dict], []),
}


def graph_on(state: Any) -> int:
    return make_graph({"state": state}).hash_u64()


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_state_schema_changes(kind: str) -> None:
    base, different, same = SCHEMAS[kind]
    base_hash = graph_on(base)
    changed = [graph_on(tp) for tp in different]
    for tp, value in zip(different, changed, strict=True):
        assert value != base_hash, f"{tp.__qualname__} hashes like {base}"
    assert len(set(changed)) == len(changed)
    for tp in same:
        assert graph_on(tp) == base_hash, f"{tp.__qualname__} does not hash like {base}"


def test_same_fields_in_different_kinds_differ() -> None:
    hashes = {graph_on(tp) for tp in (BaseState, TD, St, Pd)}
    assert len(hashes) == 4


def test_old_generic_spellings_hash_as_the_new() -> None:
    assert describe_type(typing.List[int]) == describe_type(list[int])  # noqa: UP006
    assert describe_type(typing.Dict[str, Any]) == describe_type(dict[str, Any])  # noqa: UP006
    assert describe_type(Optional[int]) == describe_type(int | None)  # noqa: UP045
    assert describe_type(int | str) == describe_type(str | int)


def test_unresolvable_annotations_are_a_definition_error() -> None:
    @dataclasses.dataclass
    class Broken:
        value: DoesNotExist  # type: ignore[name-defined]  # noqa: F821

    class BrokenStruct(msgspec.Struct):
        value: DoesNotExist  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(GraphDefinitionError, match="Broken"):
        graph_on(Broken)
    with pytest.raises(GraphDefinitionError, match="BrokenStruct"):
        graph_on(BrokenStruct)


class NotStorable:
    def __init__(self, value: int) -> None:
        self.value = value


@dataclasses.dataclass
class HoldsAClass:
    thing: NotStorable


@dataclasses.dataclass
class HoldsACallable:
    callback: Callable[[int], str]


@dataclasses.dataclass
class HoldsAListLiteral:
    values: [int]  # type: ignore[valid-type]


class PdHoldsAnUnknownClass(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    thing: NotStorable


@pytest.mark.parametrize(
    ("state", "names"),
    [
        (HoldsAClass, "HoldsAClass.thing"),
        (HoldsACallable, "HoldsACallable.callback"),
        (HoldsAListLiteral, "HoldsAListLiteral.values"),
        (list[HoldsAClass], "HoldsAClass.thing"),
        (dict[str, Callable[[], None]], "the state type[]"),
        (NotStorable, "the state type"),
        (typing.ClassVar[int], "the state type"),
        (42, "the state type"),
    ],
)
def test_unsupported_annotations_are_a_definition_error(state: Any, names: str) -> None:
    with pytest.raises(GraphDefinitionError, match="cannot store") as caught:
        graph_on(state)
    assert names in str(caught.value)
    assert not isinstance(caught.value, TypeError)


def test_inside_a_pydantic_model_pydantic_judges_the_types() -> None:
    assert graph_on(PdHoldsAnUnknownClass) != graph_on(Pd)


@pytest.mark.parametrize("state", [Any, object, typing.TypeVar("X")])
def test_a_state_of_any_type_is_refused_at_build(state: Any) -> None:
    g: Graph[Any] = Graph("g", state=state).add_node("a", node_a)
    g.add_edge(START, "a").add_edge("a", END)
    with pytest.raises(GraphDefinitionError, match="state=dict"):
        g.build()
