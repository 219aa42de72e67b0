"""A thread of one's own for blocking work that async callers wait on, a call at a time.

What ``loop.run_in_executor`` with a one-thread pool does, at about half its cost:
a call is queued for the thread, which hands its outcome straight back to the
caller's event loop. The pool's way adds a ``concurrent.futures.Future`` (with its
condition variable) and the chaining of that future to the loop's, about 25 µs a
call on the VM we measured, which is a good part of a small load's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WorkThread"]

_T = TypeVar("_T")


class WorkThread:
    """Runs blocking calls in one thread, in the order they are handed in.

    The thread starts with the first call and ends after :meth:`close` (or once
    this object is dropped), when the calls handed in before are done. It is a
    daemon thread: an application that exits without closing the store is not
    kept waiting on it (an unfinished SQLite transaction is rolled back when the
    file is next opened).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` run in the thread, awaited; what it raises is raised here.

        A call whose caller was cancelled before the thread came to it is skipped.
        Raises ``RuntimeError`` after :meth:`close`.
        """
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[_T] = loop.create_future()

        def call() -> None:
            if outcome.cancelled():
                return
            settle: Callable[[], None]
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, as an executor does
                settle = functools.partial(_fail, outcome, exc)
            else:
                settle = functools.partial(_succeed, outcome, result)
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: no one waits
                loop.call_soon_threadsafe(settle)

        self.post(call)
        return await outcome

    def post(self, fn: Callable[[], None]) -> None:
        """Hand ``fn`` to the thread without waiting: it must report its own outcome.

        Raises ``RuntimeError`` after :meth:`close`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._thread is None:
                # The thread holds the queue, not this object: when this object is
                # dropped unclosed (with its store), the thread is told to end.
                self._thread = threading.Thread(
                    target=_serve, args=(self._calls,), name=self.name, daemon=True
                )
                self._thread.start()
                weakref.finalize(self, self._calls.put, None)
            self._calls.put(fn)

    def close(self) -> None:
        """Take no more calls; the thread ends after those handed in already."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is not None:
                self._calls.put(None)


def _serve(calls: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    """The thread's loop: each call in turn, until ``None``."""
    while True:
        call = calls.get()
        if call is None:
            return
        try:
            call()
        except Exception:  # a posted call's own failure: shown, and the thread goes on
            traceback.print_exc()
        call = None  # what the call holds is not kept alive while the thread waits


def _succeed(outcome: asyncio.Future[_T], result: _T) -> None:
    if not outcome.cancelled():
        outcome.set_result(result)


def _fail(outcome: asyncio.Future[_T], exc: BaseException) -> None:
    if outcome.cancelled():
        return
    if isinstance(exc, StopIteration):  # a future cannot hold one
        failure = RuntimeError(f"the call raised StopIteration: {exc}")
        failure.__cause__ = exc
        exc = failure
    outcome.set_exception(exc)
