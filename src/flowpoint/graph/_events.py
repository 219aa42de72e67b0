"""Streaming a run: the events it emits, and the iterator that hands them over.

A run emits its events through a sink held in a context variable: ``run`` and
``resume`` have none, so emitting is a no-op for them; :func:`stream_events`
runs the same coroutine in a task of its own with a sink that hands each event
to the consumer and waits until the consumer asks for the next. So the run is
never ahead of its consumer, and a consumer that stops (``break``, ``aclose()``)
cancels it right after the last event it took: what was saved stands, and tasks
of a superstep still running are cancelled (a sync node's worker thread finishes
on its own; what it returns is dropped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from flowpoint.blob import CheckpointInfo
from flowpoint.ids import CheckpointId, TraceId

if TYPE_CHECKING:
    from flowpoint.graph._runner import RunResult

__all__ = [
    "CheckpointSaved",
    "Interrupted",
    "NodeFinished",
    "NodeStarted",
    "RunEvent",
    "RunFinished",
    "emit",
    "silenced",
    "stream_events",
]


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """A task of a node starts; ``attempt`` counts its tries under a retry policy (1, 2, ...).

    ``step`` is the step the node runs at (its ``NodeContext.step``); ``task_id``
    is the node's name, or ``"node#3"`` for a ``Send``.
    """

    trace_id: TraceId
    step: int
    node: str
    task_id: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """A task finished and its output is recorded; ``update`` is what it returned.

    In a superstep of several tasks the update is a dict of fields as the state
    takes it (the pending write is saved before this event); ``None`` when the
    node changed nothing.
    """

    trace_id: TraceId
    step: int
    node: str
    task_id: str
    update: Any


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    """A checkpoint is in the store; ``info`` is its header."""

    trace_id: TraceId
    step: int
    checkpoint_id: CheckpointId
    info: CheckpointInfo


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The run paused; it comes right before :class:`RunFinished`.

    ``reason`` is ``"interrupt"`` when a node called :func:`~flowpoint.interrupt`
    (``node`` and ``task_id`` name it, ``payload`` is what it asked, as plain
    data), and ``"before"`` or ``"after"`` for a runner's ``interrupt_before`` /
    ``interrupt_after`` (``node`` is then what runs next, ``payload`` ``None``).
    ``step`` and ``checkpoint_id`` are the pause's checkpoint.
    """

    trace_id: TraceId
    step: int
    checkpoint_id: CheckpointId
    reason: Literal["interrupt", "before", "after"]
    node: str | None
    task_id: str | None
    payload: Any


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The last event: the :class:`~flowpoint.RunResult` that ``run`` or ``resume`` returns."""

    trace_id: TraceId
    result: RunResult[Any]


RunEvent = NodeStarted | NodeFinished | CheckpointSaved | Interrupted | RunFinished
"""Any event of :meth:`Runner.stream <flowpoint.Runner.stream>`."""

_Sink = Callable[[RunEvent], Awaitable[None]]
_SINK: ContextVar[_Sink | None] = ContextVar("flowpoint_event_sink", default=None)


async def emit(event: RunEvent) -> None:
    """Hand ``event`` to the stream this run feeds, if any; wait until the consumer is back."""
    sink = _SINK.get()
    if sink is not None:
        await sink(event)


def streaming() -> bool:
    """Whether events are wanted: a run without a stream builds none."""
    return _SINK.get() is not None


@contextmanager
def silenced() -> Iterator[None]:
    """No sink in here: a node's own code (a run it starts, on any loop) feeds no stream."""
    token = _SINK.set(None)
    try:
        yield
    finally:
        _SINK.reset(token)


async def stream_events(
    work: Callable[[], Awaitable[RunResult[Any]]],
    finished: Callable[[RunResult[Any]], list[RunEvent]],
) -> AsyncGenerator[RunEvent, None]:
    """Run ``work()`` and yield its events, then ``finished(result)`` (ending with RunFinished).

    Each event the run emits holds it up until the consumer comes back for the
    next one, so a consumer that stops after an event has seen everything the run
    did. The run's error, if it fails, is raised from the iteration after the
    events before it. Closing the iterator early cancels the run and waits for it.
    """
    loop = asyncio.get_running_loop()
    handover: asyncio.Queue[tuple[RunEvent, asyncio.Future[None] | None]] = asyncio.Queue()

    async def hand_over(event: RunEvent) -> None:
        taken = loop.create_future()
        handover.put_nowait((event, taken))
        await taken

    async def drive() -> None:
        _SINK.set(hand_over)  # this task's own context: only the run sees it
        result = await work()
        for event in finished(result):
            handover.put_nowait((event, None))

    driver = asyncio.ensure_future(drive())
    taking: asyncio.Future[tuple[RunEvent, asyncio.Future[None] | None]] | None = None
    taken: asyncio.Future[None] | None = None
    try:
        while True:
            if taken is not None and not taken.done():
                taken.set_result(None)  # the consumer is back: the run goes on
            taking = asyncio.ensure_future(handover.get())
            await asyncio.wait({taking, driver}, return_when=asyncio.FIRST_COMPLETED)
            if not taking.done():
                taking.cancel()
                driver.result()  # the run failed: its error goes to the consumer
                return  # pragma: no cover - a run that returns has put RunFinished
            event, taken = taking.result()
            yield event
            if isinstance(event, RunFinished):
                return
    finally:
        if taking is not None and not taking.done():
            taking.cancel()  # the consumer was cancelled while it waited
        if not driver.done():
            driver.cancel()
        await asyncio.wait({driver})
        if not driver.cancelled():
            driver.exception()  # retrieved: raised above, or of no one's concern now
