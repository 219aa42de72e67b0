"""The runner's blocking calls: a coroutine or an event stream, run to its end from sync code.

Each runner's blocking calls run on one event loop of its own, in a daemon
thread (the kind :class:`~flowpoint.SyncCheckpointStore` uses), and the caller
waits. One loop for every call, not a new one per call: a store whose driver
belongs to the loop it was first used in (PostgreSQL's connection pool, Redis,
S3) serves a ``run_sync`` and the ``resume_sync`` after it alike. And a thread
of its own, not the caller's: with a loop running in the caller's thread (a
notebook's cell, a sync function called from async code), blocking that loop
would deadlock.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, TypeVar

from flowpoint.sync import _LoopThread

__all__ = ["BlockingLoop"]

T = TypeVar("T")


class BlockingLoop:
    """The event loop one runner's blocking calls run on, made at the first call.

    Its thread ends when the runner is collected, or with the process (a daemon).
    """

    def __init__(self) -> None:
        self._thread: _LoopThread | None = None
        self._lock = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` to its end and return its result, from any thread."""
        return self._loop().run(coroutine)

    def iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        """Iterate ``items`` from sync code; stopping early closes them (a stream: its run)."""
        return _drain(items, self._loop())

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._thread is None:
                self._thread = _LoopThread()
                # At exit the daemon thread just ends: stopping its loop then would
                # cut off what a store still has running on it.
                weakref.finalize(self, self._thread.stop).atexit = False
            return self._thread


def _drain(items: AsyncIterator[T], loop: _LoopThread) -> Generator[T, None, None]:
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
