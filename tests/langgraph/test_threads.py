"""Threads and namespaces as trace ids: readable, reversible, and refused when too long."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowpoint.errors import InvalidTraceId
from flowpoint.langgraph._threads import thread_key, thread_of, trace_for

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@pytest.mark.parametrize(
    ("thread", "ns", "trace"),
    [
        ("user-42/session-7", "", "user-42/session-7"),
        ("t1", "tools:4f1c|inner:9a2e", "t1#tools:4f1c|inner:9a2e"),
        ("a#b", "", "a%23b"),
        ("50%", "x#y", "50%25#x%23y"),
        ("line\nbreak", "", "line%0Abreak"),
        ("naïve café", "", "naïve café"),
        ("zero\u200bwidth", "", "zero%E2%80%8Bwidth"),
    ],
)
def test_traces_read_as_the_thread_and_namespace(thread: str, ns: str, trace: str) -> None:
    assert trace_for(thread, ns) == trace
    assert thread_of(trace) == (thread, ns)


@given(thread=_text.filter(bool), ns=_text)
def test_every_thread_and_namespace_that_fit_come_back(thread: str, ns: str) -> None:
    try:
        trace = trace_for(thread, ns)
    except InvalidTraceId:
        return
    assert trace.isprintable()
    assert len(trace) <= 256
    assert thread_of(trace) == (thread, ns)


def test_what_does_not_fit_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidTraceId, match="use a shorter thread id") as caught:
        trace_for("t" * 40, "sub:" + "x" * 250)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidTraceId, match="surrogate"):
        trace_for("a\ud800", "")
    with pytest.raises(InvalidTraceId, match="must be a str"):
        trace_for("t", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("trace", ["a%zz", "a%41", "#ns", "a%2", "a%FF", "t#"])
def test_traces_no_thread_makes_are_not_threads(trace: str) -> None:
    assert thread_of(trace) is None


def test_thread_ids_are_text_as_langgraphs_sql_savers_keep_them() -> None:
    assert thread_key(42) == "42"
    with pytest.raises(InvalidTraceId):
        thread_key(None)
    with pytest.raises(InvalidTraceId):
        thread_key("")
