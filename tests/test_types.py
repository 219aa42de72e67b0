"""One home for what the codec and the graph ask of a state type (flowpoint._types)."""

from __future__ import annotations

import doctest
import typing
from typing import Any, TypedDict

import pytest

import flowpoint._types
import flowpoint.codec._schema
import flowpoint.codec._serde
import flowpoint.graph._runner
import flowpoint.graph._state
from flowpoint._types import origin, runtime_class, type_name


class Ticket(TypedDict):
    text: str


def test_the_codec_and_the_graph_use_the_one_copy() -> None:
    assert flowpoint.codec._schema.runtime_class is runtime_class
    assert flowpoint.codec._schema.type_name is type_name
    assert flowpoint.codec._serde.type_name is type_name
    assert flowpoint.graph._state.runtime_class is runtime_class
    assert flowpoint.graph._state.type_name is type_name
    assert flowpoint.graph._runner.origin is origin
    for module in (flowpoint.codec._schema, flowpoint.graph._state, flowpoint.graph._runner):
        for stale in ("_runtime_class", "_type_name", "_origin"):
            assert not hasattr(module, stale), (module.__name__, stale)


@pytest.mark.parametrize(
    ("state_type", "expected"),
    [
        (dict[str, Any], dict),
        (Ticket, dict),
        (list[int], list),
        (int, int),
        (Any, None),
        (object, None),
        (int | str, None),
        (typing.Optional[int], None),  # noqa: UP045 - the old spelling is a union too
    ],
)
def test_runtime_class(state_type: Any, expected: type | None) -> None:
    assert runtime_class(state_type) is expected


def test_names_and_origins() -> None:
    assert type_name(Ticket) == "Ticket"
    assert type_name(dict[str, int]) == "dict[str, int]"
    assert origin(dict[str, int]) is dict
    assert origin(Ticket) is Ticket


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(flowpoint._types, raise_on_error=False)
    assert tried > 0
    assert failures == 0


def test_a_union_state_type_takes_its_members() -> None:
    from flowpoint import Checkpoint, SerdeCheckpointCodec

    codec = SerdeCheckpointCodec(int | str)
    for state in (5, "five"):
        blob = codec.serialize(Checkpoint.first("a", state), 1, "t")
        assert codec.deserialize(blob, None).state == state
