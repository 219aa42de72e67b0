"""Group commit on an event loop: saves that arrive together are committed together.

A store whose every save is one round trip to a server spends most of a save's
time on the event loop in the driver (taking a connection, sending a statement,
waiting on its socket), not in the server. :class:`BatchedInserts` queues the rows
of the saves that arrive while a batch is being committed, and commits the
queue as the next batch, in one statement: with 32 saves in flight, one round
trip carries many of them.

A batch's commit says of each row whether it went in. One that did not (it
conflicts with a stored row, or the batch could not take it) is handed back to
its caller, who saves it alone as if there were no batching: so each conflict,
and each error of a row's own, reaches exactly the caller it belongs to, as
the store reports it for a single save. (The runner's pending writes are
batched all or nothing instead, by ``graph/_superstep.py``'s ``GroupCommit``: a
task's writes belong to one superstep, and any failure is the superstep's.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchedInserts"]

_Row = TypeVar("_Row")
_Waiting = tuple[_Row, asyncio.Future[bool]]


class BatchedInserts(Generic[_Row]):
    """Commit queued rows in batches of up to ``max_rows`` rows and about ``max_bytes``.

    ``commit(rows)`` commits a batch of two or more rows and returns, for each,
    whether it was committed; if it raises, every caller of the batch gets the
    exception (which must mean that none of them may take its row as stored). A
    batch of one row is not committed here: its caller saves it alone, with no
    more cost than the hop to the batching task. ``size(row)`` is what a row
    adds to its batch's bytes.

    One batch is committed at a time while the next one gathers. A commit that
    has not returned after ``stall`` seconds (it may wait on a lock that another
    transaction holds) does not hold up the rows queued behind it: they go as
    another batch beside it, up to ``max_batches`` at once.

    The batching belongs to the loop of the save that started it; a save from
    another loop meanwhile is handed back at once, to save alone.
    """

    def __init__(
        self,
        commit: Callable[[list[_Row]], Awaitable[Sequence[bool]]],
        *,
        size: Callable[[_Row], int],
        max_rows: int,
        max_bytes: int,
        stall: float,
        max_batches: int,
    ) -> None:
        if max_rows < 2 or max_bytes < 1 or max_batches < 1 or not stall > 0:
            raise ValueError("a batch holds two rows or more, and one batch at least may run")
        self._commit = commit
        self._size = size
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._stall = stall
        self._max_batches = max_batches
        self._queue: list[_Waiting[_Row]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, row: _Row) -> bool:
        """Wait until ``row``'s batch is committed: ``True`` if ``row`` went in with it.

        ``False`` means it was not stored: the caller saves it alone (it met a
        conflict, or it was alone in its batch, or the batches run on another
        loop). Cancelled while still queued, the row is dropped unsaved; once
        its batch is being committed, it may be stored or not, as any save
        cancelled in flight.
        """
        loop = asyncio.get_running_loop()
        if self._tasks and self._loop is not loop:
            return False
        waiter: asyncio.Future[bool] = loop.create_future()
        self._queue.append((row, waiter))
        if not self._tasks:
            self._loop = loop
            self._start()
        return await waiter

    async def wait_idle(self) -> None:
        """Return once every save queued on this loop has been answered."""
        while self._tasks and self._loop is asyncio.get_running_loop():
            await asyncio.shield(asyncio.gather(*self._tasks, return_exceptions=True))

    def _start(self) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._run(), name="flowpoint-group-commit")
        self._tasks.add(task)

    def _unstall(self) -> None:
        """A commit is taking long: let the queue go as another batch beside it."""
        if self._queue and len(self._tasks) < self._max_batches:
            self._start()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        this = asyncio.current_task()
        batch: list[_Waiting[_Row]] = []
        try:
            while self._queue:
                batch = self._take()
                if len(batch) < 2:
                    for _, waiter in batch:
                        _answer(waiter, False)
                    continue
                timer = loop.call_later(self._stall, self._unstall)
                try:
                    committed = await self._commit([row for row, _ in batch])
                    if len(committed) != len(batch):
                        raise RuntimeError(f"{len(committed)} answers for {len(batch)} rows")
                except Exception as exc:
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                finally:
                    timer.cancel()
                for (_, waiter), went_in in zip(batch, committed, strict=True):
                    _answer(waiter, went_in)
        finally:
            if this is not None:
                self._tasks.discard(this)
            # Cancelled (its loop is closing): no waiter is left hanging.
            for _, waiter in batch:
                waiter.cancel()
            if not self._tasks:
                for _, waiter in self._queue:
                    waiter.cancel()
                self._queue.clear()

    def _take(self) -> list[_Waiting[_Row]]:
        """The next batch: the oldest rows still waited for, within the limits."""
        batch: list[_Waiting[_Row]] = []
        size = 0
        taken = 0
        for row, waiter in self._queue:
            if len(batch) == self._max_rows:
                break
            row_size = self._size(row)
            if batch and size + row_size > self._max_bytes:
                break
            taken += 1
            if waiter.done():  # its caller was cancelled while it waited
                continue
            batch.append((row, waiter))
            size += row_size
        del self._queue[:taken]
        return batch


def _answer(waiter: asyncio.Future[bool], went_in: bool) -> None:
    if not waiter.done():  # a cancelled caller no longer waits
        waiter.set_result(went_in)
