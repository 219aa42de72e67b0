"""W3 large state: 10 traces x 20 steps of a ~1 MB state; save, then load the latest.

State: ``{"records": [...], "step": int}``, 4,000 records of mixed fields (``id`` int,
``score`` float, ``name`` short str, ``active`` bool, ``values`` a list of 40 ints), about
250 B each in MessagePack. Each step replaces 1% of the records. MB/s is the state's
msgspec MessagePack size (the same bytes for every subject) over the p50 latency.

Peak memory is a separate pass under ``tracemalloc`` (which slows allocation, so it
never runs while timing): for each save and each load, the peak of traced memory above
what was allocated just before the call; the largest over ``w3_memory_steps`` steps.
tracemalloc sees Python's allocators (msgspec and ormsgpack use them) in every thread,
not SQLite's or libpq's own C allocations.
"""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import dataclass
from functools import cache
from time import perf_counter_ns
from typing import Any

import msgspec

from benchmarks.config import Sizes
from benchmarks.stats import latency_ms
from benchmarks.subjects import AsyncSubject, SyncSubject
from benchmarks.text import text

ALL_CHANNELS = frozenset({"records", "step"})
VALUES_PER_RECORD = 40


def trace_name(index: int) -> str:
    return f"large-{index:02d}"


def _record(rng: random.Random, index: int) -> dict[str, Any]:
    return {
        "id": index,
        "score": rng.random() * 1000,
        "name": text(rng, rng.randint(6, 16)),
        "active": rng.random() < 0.5,
        "values": [rng.randrange(65_536, 2**31) for _ in range(VALUES_PER_RECORD)],
    }


@dataclass(frozen=True)
class Large:
    states: tuple[tuple[dict[str, Any], ...], ...]  # [trace][step]
    state_bytes: float  # mean msgspec MessagePack size of a state

    @property
    def state_mb(self) -> float:
        return self.state_bytes / 1e6


@cache
def large(sizes: Sizes) -> Large:
    """Every trace's states, built once per run (records are shared between steps)."""
    rng = random.Random(sizes.seed + 3)
    n = sizes.w3_records
    changed = max(1, round(n * sizes.w3_changed_per_step))
    traces = []
    for _ in range(sizes.w3_traces):
        records = [_record(rng, i) for i in range(n)]
        states = []
        for step in range(sizes.w3_steps):
            if step:
                records = list(records)
                for i in rng.sample(range(n), changed):
                    records[i] = _record(rng, i)
            states.append({"records": records, "step": step})
        traces.append(tuple(states))
    sizes_seen = [len(msgspec.msgpack.encode(s)) for states in traces for s in states]
    return Large(tuple(traces), sum(sizes_seen) / len(sizes_seen))


def check(state: dict[str, Any], data: Large, trace_index: int, step: int) -> None:
    expected = data.states[trace_index][step]
    if state["step"] != step or len(state["records"]) != len(expected["records"]):
        raise AssertionError(f"trace {trace_index}: expected step {step}, got {state['step']}")
    if state["records"][-1]["values"] != expected["records"][-1]["values"]:
        raise AssertionError(f"trace {trace_index} step {step}: the records differ")


def throughput(data: Large, save_ns: list[int], load_ns: list[int] | None) -> dict[str, Any]:
    """Latency stats and MB/s (state MB over the p50 latency, and over the mean)."""
    out: dict[str, Any] = {"state_mb": data.state_mb}
    for op, samples in (("save", save_ns), ("load_latest", load_ns)):
        if samples is None:
            continue
        stats = latency_ms(samples)
        out[f"{op}_ms"] = stats
        out[f"{op}_mb_s"] = data.state_mb / (stats["p50"] / 1e3)
        out[f"{op}_mb_s_mean"] = data.state_mb / (stats["mean"] / 1e3)
    return out


async def run_async(subject: AsyncSubject, sizes: Sizes) -> dict[str, Any]:
    data = large(sizes)
    save_ns: list[int] = []
    load_ns: list[int] = []
    await subject.open()
    try:
        for trace_index, states in enumerate(data.states):
            trace = trace_name(trace_index)
            for step, state in enumerate(states):
                prepared = subject.prepare(trace, state, ALL_CHANNELS)
                t0 = perf_counter_ns()
                await subject.save(prepared)
                t1 = perf_counter_ns()
                loaded = await subject.load_latest(trace)
                t2 = perf_counter_ns()
                check(subject.state_of(loaded), data, trace_index, step)
                save_ns.append(t1 - t0)
                load_ns.append(t2 - t1)
        footprint = subject.bytes_at_rest()
        settings = subject.settings()
    finally:
        await subject.close()
    return {
        **throughput(data, save_ns, load_ns),
        "bytes_at_rest": None if footprint is None else footprint["bytes"],
        "settings": settings,
    }


def run_sync(subject: SyncSubject, sizes: Sizes) -> dict[str, Any]:
    data = large(sizes)
    save_ns: list[int] = []
    load_ns: list[int] = []
    subject.open()
    try:
        for trace_index, states in enumerate(data.states):
            trace = trace_name(trace_index)
            for step, state in enumerate(states):
                prepared = subject.prepare(trace, state, ALL_CHANNELS)
                t0 = perf_counter_ns()
                subject.save(prepared)
                t1 = perf_counter_ns()
                loaded = subject.load_latest(trace)
                t2 = perf_counter_ns()
                check(subject.state_of(loaded), data, trace_index, step)
                save_ns.append(t1 - t0)
                load_ns.append(t2 - t1)
        footprint = subject.bytes_at_rest()
        settings = subject.settings()
    finally:
        subject.close()
    return {
        **throughput(data, save_ns, load_ns),
        "bytes_at_rest": None if footprint is None else footprint["bytes"],
        "settings": settings,
    }


class _Peaks:
    """The largest traced-memory peak above the level just before each call."""

    def __init__(self) -> None:
        self.save = 0
        self.load = 0
        self._base = 0

    def start(self) -> None:
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]

    def above_start(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self._base

    def result(self) -> dict[str, float]:
        return {"save_peak_mb": self.save / 1e6, "load_peak_mb": self.load / 1e6}


async def memory_async(subject: AsyncSubject, sizes: Sizes) -> dict[str, Any]:
    data = large(sizes)
    peaks = _Peaks()
    trace = trace_name(0)
    await subject.open()
    try:
        tracemalloc.start()
        try:
            for step, state in enumerate(data.states[0][: sizes.w3_memory_steps]):
                prepared = subject.prepare(trace, state, ALL_CHANNELS)
                peaks.start()
                await subject.save(prepared)
                peaks.save = max(peaks.save, peaks.above_start())
                peaks.start()
                loaded = await subject.load_latest(trace)
                peaks.load = max(peaks.load, peaks.above_start())
                check(subject.state_of(loaded), data, 0, step)
                del loaded
        finally:
            tracemalloc.stop()
    finally:
        await subject.close()
    return peaks.result()


def memory_sync(subject: SyncSubject, sizes: Sizes) -> dict[str, Any]:
    data = large(sizes)
    peaks = _Peaks()
    trace = trace_name(0)
    subject.open()
    try:
        tracemalloc.start()
        try:
            for step, state in enumerate(data.states[0][: sizes.w3_memory_steps]):
                prepared = subject.prepare(trace, state, ALL_CHANNELS)
                peaks.start()
                subject.save(prepared)
                peaks.save = max(peaks.save, peaks.above_start())
                peaks.start()
                loaded = subject.load_latest(trace)
                peaks.load = max(peaks.load, peaks.above_start())
                check(subject.state_of(loaded), data, 0, step)
                del loaded
        finally:
            tracemalloc.stop()
    finally:
        subject.close()
    return peaks.result()
