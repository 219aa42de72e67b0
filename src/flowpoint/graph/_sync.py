"""The runner's blocking calls: a coroutine or an event stream, run to its end from sync code.

Without an event loop in the calling thread (a script), the work runs on a new
loop in that thread. With one running (a notebook's cell, a sync function called
from async code), blocking it would deadlock, so the work runs on a private loop
in a worker thread, the one :class:`~flowpoint.SyncCheckpointStore` uses, and the
caller waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, Protocol, TypeVar

from flowpoint.sync import _LoopThread

__all__ = ["iterate_blocking", "run_blocking"]

T = TypeVar("T")


class _Loop(Protocol):
    def run(self, coroutine: Coroutine[Any, Any, T]) -> T: ...


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end and return its result, from any thread."""
    if not _loop_running():
        return asyncio.run(coroutine)
    thread = _LoopThread()
    try:
        return thread.run(coroutine)
    finally:
        thread.stop()


def iterate_blocking(items: AsyncIterator[T]) -> Generator[T, None, None]:
    """Iterate ``items`` from sync code; stopping early closes them (a stream: cancels its run)."""
    if _loop_running():
        thread = _LoopThread()
        try:
            yield from _drain(items, thread)
        finally:
            thread.stop()
    else:
        with asyncio.Runner() as runner:
            yield from _drain(items, runner)


def _drain(items: AsyncIterator[T], loop: _Loop) -> Generator[T, None, None]:
    try:
        while True:
            more, item = loop.run(_next(items))
            if not more:
                return
            yield item  # type: ignore[misc]
    finally:
        closing = getattr(items, "aclose", None)
        if closing is not None:
            loop.run(closing())


async def _next(items: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await anext(items)
    except StopAsyncIteration:
        return False, None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
