"""Where the saver's work runs, for its blocking and its async methods alike.

LangGraph calls a saver from anywhere: ``put`` from worker threads of a sync
graph, ``aput`` from whatever event loop runs an async one, ``get_state`` from
plain code. The saver's work is one coroutine per call, run so that no store or
cache is ever used from two places at once:

- over a store of blocking calls (memory, file, SQLite), the coroutine runs to its
  end in one thread, under one lock: the caller's thread for a blocking method, the
  saver's work thread for an async one (so the event loop never waits on I/O);
- over a store with an async driver (PostgreSQL, Redis, S3) that the saver opened
  itself (``from_url``), every coroutine runs on the saver's own event loop, in a
  thread of its own, so that the driver's connections belong to one loop whichever
  loop or thread calls;
- over such a store the application gave, whose connections may belong to the
  application's loop already, an async method runs on the caller's loop, and a
  blocking one on the loop of the last async call (or the loop the saver was made
  on) when that loop runs in another thread, as LangGraph's own async savers do,
  else on the saver's own loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from flowpoint.stores._base import BlobCheckpointStore, BlockingBlobStore, run_in_caller_thread
from flowpoint.stores._thread import WorkThread

__all__ = ["Runner"]

_T = TypeVar("_T")


class Runner:
    """Runs the saver's coroutines: :meth:`run` blocks, :meth:`arun` awaits."""

    def __init__(self, store: BlobCheckpointStore, *, owned: bool) -> None:
        self.blocking = isinstance(store, BlockingBlobStore)
        self.owned = owned
        # A store given by code running on a loop belongs to it, until an async call says.
        self._home: asyncio.AbstractEventLoop | None = None if owned else _running_loop()
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Where an async method's work runs over a store of blocking calls.
        self._work_thread = WorkThread("flowpoint-langgraph-work")
        self.closed = False

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` to its end and return its result, blocking the caller."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("this FlowpointSaver is closed")
        if self.blocking:
            return self._run_here(coroutine)
        loop = self._home if not self.owned else None
        if loop is None or loop.is_closed() or not loop.is_running():
            loop = self._own_loop()
        if _running_loop() is loop:
            coroutine.close()
            raise RuntimeError(
                "a FlowpointSaver's blocking methods cannot wait on the event loop they run "
                "in: use the async methods (aget_tuple, aput, ...) there"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def arun(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Await ``coroutine`` run where this saver's work runs."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("this FlowpointSaver is closed")
        if self.blocking:
            return await self._work_thread.run(functools.partial(self._run_here, coroutine))
        if not self.owned:
            self._home = asyncio.get_running_loop()
            return await coroutine
        loop = self._own_loop()
        if asyncio.get_running_loop() is loop:
            return await coroutine
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

    def stop(self) -> None:
        """Stop the saver's own loop, if it has one. Later calls raise ``RuntimeError``."""
        self.closed = True
        self._work_thread.close()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join()
            loop.close()

    def _run_here(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        with self._lock:
            return run_in_caller_thread(coroutine)

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        """The saver's own loop, started on first use in a daemon thread."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="flowpoint-langgraph", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
