"""Running a superstep's tasks: the one place where tasks start and their outputs are recorded.

The tasks of a superstep run concurrently: async nodes as tasks on the event
loop, sync nodes in worker threads. Each output is recorded as soon as its task
finishes (for the runner, saved as a pending write), whatever the others do; a
task that raised does not stop the others, so that every task that can finish
does, and is recorded. Outcomes come back in the tasks' canonical order, never
in the order they finished.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from flowpoint.graph._context import NodeContext
from flowpoint.graph._cursor import Task

__all__ = ["GroupCommit", "Outcome", "call", "execute"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a task gave: its update, or the exception it raised (``error``)."""

    task: Task
    update: Any = None
    error: Exception | None = None


Start = Callable[[Task], Awaitable[Any]]
"""Runs a task's node and returns its update."""
Record = Callable[[Task, Any, Exception | None], Awaitable[Any]]
"""Records a task's output (its update, or the error it raised) as soon as it has one;
returns the update as the superstep applies it."""


async def execute(tasks: Sequence[Task], start: Start, record: Record) -> list[Outcome]:
    """Run ``tasks`` concurrently; return their outcomes in the order of ``tasks``.

    ``start`` runs one task; ``record`` is awaited with its output as soon as it
    has one. A task that raises is an outcome with an ``error``: the others go on.
    An error of ``record`` itself (a store failure) ends the superstep, cancelling
    the tasks still running on the loop. A lone task runs in the caller's task.
    """

    async def one(task: Task) -> Outcome:
        try:
            update = await start(task)
        except Exception as error:  # a node's failure is an outcome; recorded, then raised
            await record(task, None, error)
            return Outcome(task, error=error)
        return Outcome(task, await record(task, update, None))

    if len(tasks) == 1:
        return [await one(tasks[0])]
    running = [asyncio.ensure_future(one(task)) for task in tasks]
    try:
        return list(await asyncio.gather(*running))
    except BaseException:
        for future in running:
            future.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


async def call(function: Any, argument: Any, context: NodeContext | None) -> Any:
    """Call a node or router: async ones are awaited, sync ones run in a worker thread.

    ``context`` is passed as the second argument to a function that declares one.
    """
    args = (argument,) if context is None else (argument, context)
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(eq=False, slots=True)
class _Entry(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = field(default=None)


class GroupCommit(Generic[T]):
    """Saves items as they come; those that come during a save go together in the next one.

    :meth:`put` returns once its item is saved, never later than needed: the first
    caller saves at once, and callers arriving while a save runs are saved together
    right after it (one commit, one fsync, for tasks that finish at about the same
    time). A failed save raises its error in every caller whose item it held.
    """

    def __init__(self, save: Callable[[list[T]], Awaitable[Any]]) -> None:
        self._save = save
        self._lock = asyncio.Lock()
        self._pending: list[_Entry[T]] = []

    async def put(self, item: T) -> None:
        """Save ``item`` (with whatever else is waiting); return when it is saved."""
        entry = _Entry(item)
        self._pending.append(entry)
        async with self._lock:
            if not entry.done:
                batch, self._pending = self._pending, []
                try:
                    await self._save([one.item for one in batch])
                except BaseException as exc:
                    for one in batch:
                        one.done, one.error = True, exc
                    raise
                for one in batch:
                    one.done = True
        if entry.error is not None:
            raise entry.error
