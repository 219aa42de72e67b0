"""Retry: a node's transient failures tried again within the step, and its settings checked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flowpoint import (
    END,
    START,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    NodeContext,
    NodeStarted,
    Retry,
    Runner,
)
from flowpoint.graph import _retry
from flowpoint.graph._runner import ERROR_CHANNEL

T = "trace-1"


class Flaky:
    """A node that raises ``error`` on its first ``failures`` calls, recording each context."""

    def __init__(self, failures: int, error: type[Exception] = TimeoutError) -> None:
        self.failures = failures
        self.error = error
        self.contexts: list[NodeContext] = []

    def __call__(self, state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        self.contexts.append(ctx)
        if len(self.contexts) <= self.failures:
            raise self.error(f"try {ctx.attempt} timed out")
        return {"fetched": ctx.attempt}


def one_node(node: Any, retry: Retry | None) -> Graph[dict[str, Any]]:
    g: Graph[dict[str, Any]] = Graph("fetching").add_node("fetch", node, retry=retry)
    return g.add_edge(START, "fetch").add_edge("fetch", END)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the retry loop waits, recorded instead of slept."""
    waited: list[float] = []

    async def sleep(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(_retry.asyncio, "sleep", sleep)
    return waited


async def test_transient_failures_are_retried_with_the_attempt_in_the_context(
    sleeps: list[float],
) -> None:
    flaky = Flaky(failures=2)
    retry = Retry(max_attempts=3, backoff=0.5, on=(TimeoutError,))
    runner = Runner(one_node(flaky, retry), InMemoryBlobStore())
    started = [
        event.attempt async for event in runner.stream(T, {}) if isinstance(event, NodeStarted)
    ]
    assert started == [1, 2, 3]
    assert [ctx.attempt for ctx in flaky.contexts] == [1, 2, 3]
    assert len({ctx.idempotency_key for ctx in flaky.contexts}) == 1
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.state == {"fetched": 3}
    assert sleeps == [0.5, 1.0]


async def test_exhausted_retries_raise_the_last_error_and_record_it(sleeps: list[float]) -> None:
    flaky = Flaky(failures=5)
    g: Graph[dict[str, Any]] = Graph("fan").add_node("go", lambda state: None)
    g.add_node("fetch", flaky, retry=Retry(max_attempts=3, backoff=0, on=TimeoutError))
    g.add_node("other", lambda state: {"other": 1})
    g.add_edge(START, "go").add_edge("go", "fetch").add_edge("go", "other")
    g.add_edge("fetch", END).add_edge("other", END)
    runner = Runner(g, InMemoryBlobStore())
    with pytest.raises(TimeoutError, match="try 3 timed out") as caught:
        await runner.run(T, {})
    assert any("failed 3 times" in note for note in caught.value.__notes__)
    assert len(flaky.contexts) == 3
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    errors = [
        write.value
        for write in await runner.store.load_writes(latest.checkpoint_id)
        if write.channel == ERROR_CHANNEL
    ]
    assert errors == [{"type": "builtins.TimeoutError", "message": "try 3 timed out"}]
    assert sleeps == []  # backoff=0 waits not at all


async def test_an_error_not_listed_is_not_retried(sleeps: list[float]) -> None:
    flaky = Flaky(failures=1, error=KeyError)
    runner = Runner(one_node(flaky, Retry(on=(TimeoutError,))), InMemoryBlobStore())
    with pytest.raises(KeyError):
        await runner.run(T, {})
    assert len(flaky.contexts) == 1
    assert sleeps == []


async def test_without_a_policy_a_node_is_tried_once() -> None:
    flaky = Flaky(failures=1)
    with pytest.raises(TimeoutError) as caught:
        await Runner(one_node(flaky, None), InMemoryBlobStore()).run(T, {})
    assert not getattr(caught.value, "__notes__", [])
    assert len(flaky.contexts) == 1


def test_the_delays_grow_by_the_factor_up_to_the_cap() -> None:
    retry = Retry(max_attempts=10, backoff=timedelta(milliseconds=100), factor=3, max_backoff=1)
    assert [retry.delay(n) for n in range(1, 5)] == pytest.approx([0.1, 0.3, 0.9, 1.0])
    assert Retry(factor=10, max_backoff=5).delay(10_000) == 5.0  # no overflow
    assert retry.backoff == 0.1
    assert retry.on == (Exception,)


async def test_jitter_shortens_each_delay_by_at_most_its_fraction(sleeps: list[float]) -> None:
    flaky = Flaky(failures=4)
    retry = Retry(max_attempts=5, backoff=1, factor=1, jitter=0.5)
    await Runner(one_node(flaky, retry), InMemoryBlobStore()).run(T, {})
    assert len(sleeps) == 4
    assert all(0.5 <= delay <= 1.0 for delay in sleeps)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_attempts": 0}, "max_attempts is at least 1"),
        ({"max_attempts": 2.0}, "max_attempts is an int"),
        ({"max_attempts": True}, "max_attempts is an int"),
        ({"backoff": -1}, "backoff is not negative"),
        ({"backoff": timedelta(seconds=-1)}, "backoff is not negative"),
        ({"backoff": float("nan")}, "backoff is a finite number"),
        ({"backoff": "1s"}, "backoff is a finite number"),
        ({"max_backoff": float("inf")}, "max_backoff is a finite number"),
        ({"factor": 0.5}, "factor is at least 1"),
        ({"jitter": 2}, "jitter is from 0 to 1"),
        ({"on": ()}, "on takes exception classes"),
        ({"on": (KeyboardInterrupt,)}, "on takes exception classes"),
        ({"on": ("TimeoutError",)}, "on takes exception classes"),
    ],
)
def test_bad_settings_are_graph_definition_errors(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphDefinitionError, match=message):
        Retry(**arguments)


def test_add_node_takes_only_a_retry() -> None:
    with pytest.raises(GraphDefinitionError, match="retry must be a Retry"):
        Graph("g").add_node("fetch", lambda state: None, retry=3)  # type: ignore[arg-type]


def test_a_retry_policy_is_not_part_of_the_fingerprint() -> None:
    plain = one_node(lambda state: None, None).build()
    retried = one_node(lambda state: None, Retry(max_attempts=5)).build()
    assert plain.hash_u64() == retried.hash_u64()
