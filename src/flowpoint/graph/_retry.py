"""Retrying a node's transient failures within its step."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flowpoint.errors import GraphDefinitionError

__all__ = ["Retry", "retrying"]


@dataclass(frozen=True, slots=True)
class Retry:
    """How often, and how patiently, a node is tried when it raises one of ``on``.

    ``g.add_node("fetch", fetch, retry=Retry(max_attempts=3, on=(TimeoutError,)))``
    tries ``fetch`` up to 3 times in all within its step; a node's
    ``NodeContext.attempt`` says which try it is (1, 2, ...), under the same
    idempotency key. The delay before try ``n + 1`` is ``backoff * factor ** (n -
    1)`` seconds (``backoff`` may be a ``timedelta``), at most ``max_backoff``,
    then shortened by a random fraction of up to ``jitter`` (0 to 1) so that
    runs failing together do not retry together. An exception not in ``on``, an
    ``interrupt()`` and a cancellation are never retried. When the last try
    fails, its error is recorded and raised, as a node's error always is.

    Bad settings raise :class:`~flowpoint.errors.GraphDefinitionError`, here and
    so at ``add_node``. A retry policy is not part of the graph's fingerprint: it
    changes how a node is tried, never what a checkpoint stores.

    >>> Retry(max_attempts=4, backoff=0.5).delay(3)
    2.0
    """

    max_attempts: int = 3
    backoff: float | timedelta = 0.5
    factor: float = 2.0
    max_backoff: float | timedelta = 60.0
    jitter: float = 0.0
    on: type[Exception] | tuple[type[Exception], ...] = Exception

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise GraphDefinitionError(f"Retry: max_attempts is an int, not {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise GraphDefinitionError(
                f"Retry: max_attempts is at least 1, not {self.max_attempts}"
            )
        object.__setattr__(self, "backoff", _seconds(self.backoff, "backoff"))
        object.__setattr__(self, "max_backoff", _seconds(self.max_backoff, "max_backoff"))
        if _number(self.factor, "factor") < 1:
            raise GraphDefinitionError(f"Retry: factor is at least 1, not {self.factor}")
        if not 0 <= _number(self.jitter, "jitter") <= 1:
            raise GraphDefinitionError(f"Retry: jitter is from 0 to 1, not {self.jitter}")
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(kind, type) and issubclass(kind, Exception) for kind in on):
            raise GraphDefinitionError(
                f"Retry: on takes exception classes (subclasses of Exception), not {self.on!r:.80}"
            )
        object.__setattr__(self, "on", on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after try ``attempt`` failed, before the next (jitter left out)."""
        backoff, cap = float(self.backoff), float(self.max_backoff)  # type: ignore[arg-type]
        try:
            return min(backoff * self.factor ** (attempt - 1), cap)
        except OverflowError:  # many tries with a large factor: long past the cap
            return cap


async def retrying(policy: Retry | None, attempt: Callable[[int], Awaitable[Any]]) -> Any:
    """``await attempt(n)`` for n = 1, 2, ... until it returns, as ``policy`` allows."""
    if policy is None:
        return await attempt(1)
    n = 1
    while True:
        try:
            return await attempt(n)
        except policy.on as error:
            if n >= policy.max_attempts:
                if n > 1:
                    error.add_note(f"flowpoint: failed {n} times; the last error is raised")
                raise
        delay = policy.delay(n) * (1 - policy.jitter * random.random())
        if delay > 0:
            await asyncio.sleep(delay)
        n += 1


def _seconds(value: float | timedelta, name: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = _number(value, name)
    if seconds < 0:
        raise GraphDefinitionError(f"Retry: {name} is not negative, not {value}")
    return seconds


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GraphDefinitionError(f"Retry: {name} is a finite number, not {value!r:.40}")
    return float(value)
