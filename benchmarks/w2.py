"""W2 fan-out: 1,000 traces x 10 steps of a 1 KB dict state, 32 saves in flight.

Every trace's steps are saved in order (step k+1 is the child of step k); saves of
different traces overlap, at most ``w2_in_flight`` at a time (an ``asyncio.Semaphore``).
Then ``load_latest`` of every trace, with the same limit. Reported: saves/s and loads/s
over the wall-clock time of each phase (building the checkpoints included, for all
subjects alike). Async subjects only.
"""

from __future__ import annotations

import asyncio
import random
from functools import cache
from time import perf_counter_ns
from typing import Any

from benchmarks.config import Sizes
from benchmarks.subjects import AsyncSubject
from benchmarks.text import text

ALL_CHANNELS = frozenset({"step", "notes"})


def trace_name(index: int) -> str:
    return f"fan-{index:04d}"


@cache
def texts(sizes: Sizes) -> tuple[tuple[str, ...], ...]:
    rng = random.Random(sizes.seed + 2)
    return tuple(
        tuple(text(rng, sizes.w2_state_chars) for _ in range(sizes.w2_steps))
        for _ in range(sizes.w2_traces)
    )


def state(sizes: Sizes, trace_index: int, step: int) -> dict[str, Any]:
    """About 1 KB: a step counter and a ~1,000-character note that changes every step."""
    return {"step": step, "notes": texts(sizes)[trace_index][step]}


async def run_async(subject: AsyncSubject, sizes: Sizes) -> dict[str, Any]:
    texts(sizes)  # built before the clock starts
    gate = asyncio.Semaphore(sizes.w2_in_flight)
    last = sizes.w2_steps - 1

    async def save_trace(index: int) -> None:
        trace = trace_name(index)
        for step in range(sizes.w2_steps):
            prepared = subject.prepare(trace, state(sizes, index, step), ALL_CHANNELS)
            async with gate:
                await subject.save(prepared)

    async def load_trace(index: int) -> None:
        async with gate:
            loaded = await subject.load_latest(trace_name(index))
        if subject.state_of(loaded)["step"] != last:
            raise AssertionError(f"trace {index}: the latest is not step {last}")

    await subject.open()
    try:
        t0 = perf_counter_ns()
        await asyncio.gather(*(save_trace(i) for i in range(sizes.w2_traces)))
        t1 = perf_counter_ns()
        await asyncio.gather(*(load_trace(i) for i in range(sizes.w2_traces)))
        t2 = perf_counter_ns()
        settings = subject.settings()
    finally:
        await subject.close()
    saves = sizes.w2_traces * sizes.w2_steps
    return {
        "saves_per_s": saves / ((t1 - t0) / 1e9),
        "loads_per_s": sizes.w2_traces / ((t2 - t1) / 1e9),
        "save_wall_s": (t1 - t0) / 1e9,
        "load_wall_s": (t2 - t1) / 1e9,
        "saves": saves,
        "loads": sizes.w2_traces,
        "settings": settings,
    }
