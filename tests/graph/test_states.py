"""Whole states are checked against the graph's state type before anything is saved.

A state the codec could store but never load back (a field of the wrong type, a
key its TypedDict does not declare) would end the trace: every resume would fail.
The runner refuses it first, naming the node (or the run's input) and the field.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NotRequired, TypedDict
from uuid import UUID, uuid4

import pytest

from flowpoint import InvalidUpdate, Runner
from tests.graph.doubles import FailingBlobStore
from tests.graph.test_runner import PD, ST, one_node
from tests.states import samples

T = "trace-1"


@dataclasses.dataclass
class Ticket:
    text: str
    approved: bool = False


@dataclasses.dataclass
class Item:
    name: str
    count: int


@dataclasses.dataclass
class Order:
    items: list[Item]
    note: str = ""


class ItemTD(TypedDict):
    name: str
    count: int


class Basket(TypedDict):
    owner: str
    items: list[ItemTD]
    tag: NotRequired[str]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Rich:
    when: datetime
    span: timedelta
    run: UUID
    price: Decimal
    blob: bytes
    color: Color
    ratio: float
    tags: frozenset[str]
    pair: tuple[int, str]
    model: PD | None = None


@dataclasses.dataclass
class Child(Ticket):
    secret: str = "kept only by the subclass"


def rich() -> Rich:
    return Rich(
        when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        span=timedelta(hours=1),
        run=uuid4(),
        price=Decimal("1.25"),
        blob=bytes(range(256)),
        color=Color.BLUE,
        ratio=math.nan,
        tags=frozenset({"a", "b"}),
        pair=(1, "x"),
        model=PD(count=1, Label="x"),
    )


def keep(state: Any) -> None:
    return None


# -- the initial state of a run ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state_type", "initial", "names"),
    [
        (Ticket, Ticket(text=5), "$.text"),  # type: ignore[arg-type]
        (Ticket, Ticket("hi", approved="yes"), "$.approved"),  # type: ignore[arg-type]
        (Order, Order([Item("pen", 1), Item("ink", "two")]), "$.items[1].count"),  # type: ignore[arg-type]
        (Basket, {"owner": "ana", "items": [], "ghost": 1}, "$.ghost"),
        (Basket, {"owner": "ana", "items": [{"name": "x", "count": 1, "size": 3}]}, "size"),
        (Basket, {"owner": "ana"}, "items"),
        (Basket, {"owner": 7, "items": []}, "$.owner"),
        (ST, ST(count="many"), "$.count"),  # type: ignore[arg-type]
        (PD, PD.model_construct(count="many"), "count"),
        (Ticket, Child("hi"), "$.secret"),
        (Ticket, Item("pen", 1), "Item"),
        (dict, ["not", "a", "dict"], "list"),
        (dict[str, int], {"a": 1, "b": "two"}, "value of 'b'"),
        (Rich, dataclasses.replace(rich(), when="today"), "$.when"),
        (Rich, dataclasses.replace(rich(), run=str(uuid4())), "$.run"),
        (Rich, dataclasses.replace(rich(), model=PD.model_construct(count=[])), "$.model"),
    ],
)
async def test_a_mistyped_initial_state_is_refused_and_nothing_is_saved(
    state_type: Any, initial: Any, names: str
) -> None:
    store = FailingBlobStore()
    runner = Runner(one_node(state_type, keep), store)
    with pytest.raises(InvalidUpdate, match="initial state") as caught:
        await runner.run(T, initial)
    assert names in str(caught.value)
    assert isinstance(caught.value, TypeError)
    assert store.attempts == 0


@pytest.mark.parametrize(
    ("state_type", "initial"),
    [
        (Ticket, Ticket("hi")),
        (Order, Order([Item("pen", 1)])),
        (Basket, {"owner": "ana", "items": [{"name": "x", "count": 1}], "tag": "t"}),
        (ST, ST(1)),
        (PD, PD(count=1, Label="x")),
        (Rich, rich()),
        (dict, {"anything": [1, "two", None]}),
        (dict[str, int], {"a": 1}),
        *samples().values(),
    ],
)
async def test_a_well_typed_initial_state_runs(state_type: Any, initial: Any) -> None:
    runner = Runner(one_node(state_type, keep), FailingBlobStore())
    result = await runner.run(T, initial)
    assert result.status == "done"
    latest = await runner.store.load_latest(T, runner.graph.hash_u64())
    assert latest is not None
    assert type(latest.state) is type(initial)


async def test_an_int_in_a_float_field_is_not_a_misfit() -> None:
    @dataclasses.dataclass
    class Reading:
        value: float

    result = await Runner(one_node(Reading, keep), FailingBlobStore()).run(T, Reading(3))
    assert result.status == "done"


# -- what nodes and humans return -------------------------------------------------------


@pytest.mark.parametrize(
    ("state_type", "initial", "returned", "names"),
    [
        (Ticket, Ticket("hi"), Ticket(text=5), "$.text"),  # type: ignore[arg-type]
        (Order, Order([]), Order([Item("pen", "one")]), "$.items[0].count"),  # type: ignore[arg-type]
        (Order, Order([]), {"items": [Item("pen", "one")]}, "$[0].count"),  # type: ignore[arg-type]
        (Ticket, Ticket("hi"), Child("hi"), "$.secret"),
        (ST, ST(1), ST(count=None), "$.count"),  # type: ignore[arg-type]
        (PD, PD(count=1), PD.model_construct(count="x"), "count"),
        (Basket, {"owner": "a", "items": []}, {"items": [{"name": "x", "count": 1, "z": 0}]}, "z"),
    ],
)
async def test_a_node_returning_a_mistyped_state_is_refused(
    state_type: Any, initial: Any, returned: Any, names: str
) -> None:
    store = FailingBlobStore()
    runner = Runner(one_node(state_type, lambda state: returned), store)
    with pytest.raises(InvalidUpdate, match="node 'a'") as caught:
        await runner.run(T, initial)
    assert names in str(caught.value)
    assert store.saves == 1  # only the run's input


async def test_a_resume_with_a_mistyped_state_is_refused_and_nothing_is_saved() -> None:
    store = FailingBlobStore()
    runner = Runner(one_node(Ticket, keep), store, interrupt_before=["a"])
    await runner.run(T, Ticket("hi"))
    with pytest.raises(InvalidUpdate, match=r"the update .*\$\.approved"):
        await runner.resume(T, update=Ticket("hi", approved="yes"))  # type: ignore[arg-type]
    assert store.saves == 1
    done = await runner.resume(T, update=Ticket("hi", approved=True))
    assert done.state == Ticket("hi", approved=True)
