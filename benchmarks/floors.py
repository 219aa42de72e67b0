"""How close to the limit: the same work done with nothing but msgspec and sqlite3.

- ``floor.msgspec``: encoding the state with ``msgspec.msgpack.encode`` alone.
- ``floor.sqlite``: that encoding plus a raw ``INSERT`` of the bytes, one transaction per
  row (autocommit), from a plain sync ``sqlite3`` connection at flowpoint's default
  durability (WAL, ``synchronous=FULL``), into ``(trace TEXT, step INTEGER, data BLOB,
  UNIQUE (trace, step))``. Its load is ``SELECT data ... ORDER BY step DESC LIMIT 1``
  and ``msgspec.msgpack.decode``.
- ``floor.delta`` (W1 only): the delta-commit floor: encode and INSERT only what the step
  adds (its message and turn, about 450 B; plus the profile at step 0), same durability.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import msgspec

from benchmarks import w1, w3
from benchmarks.config import Sizes
from benchmarks.places import sqlite_bytes, sqlite_pragmas
from benchmarks.stats import latency_ms

encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


class RawSqlite:
    """One table, one INSERT per save, autocommit: each INSERT is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE floor (trace TEXT NOT NULL, step INTEGER NOT NULL, "
            "data BLOB NOT NULL, UNIQUE (trace, step))"
        )
        self.settings = {"path": str(path), **sqlite_pragmas(self.conn)}

    def insert(self, trace: str, step: int, data: bytes) -> None:
        self.conn.execute(
            "INSERT INTO floor (trace, step, data) VALUES (?, ?, ?)", (trace, step, data)
        )

    def latest(self, trace: str) -> bytes:
        row = self.conn.execute(
            "SELECT data FROM floor WHERE trace = ? ORDER BY step DESC LIMIT 1", (trace,)
        ).fetchone()
        data: bytes = row[0]
        return data

    def footprint(self) -> dict[str, Any]:
        return sqlite_bytes(self.path)

    def close(self) -> None:
        self.conn.close()


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_w1(sizes: Sizes, directory: Path, growth_every: int | None = None) -> dict[str, Any]:
    """The W1 floors, step by step as W1 runs; with ``growth_every``, bytes by step only."""
    conversation = w1.chat(sizes)
    steps = sizes.w1_steps
    full = RawSqlite(directory / "full.db")
    delta = RawSqlite(directory / "delta.db")
    encode_ns: list[int] = []
    insert_ns: list[int] = []
    total_ns: list[int] = []
    load_ns: list[int] = []
    delta_ns: list[int] = []
    state_sizes: list[int] = []
    delta_sizes: list[int] = []
    growth_full: list[list[int]] = []
    growth_delta: list[list[int]] = []
    try:
        for step in range(steps):
            state = conversation.state(step)
            t0 = perf_counter_ns()
            data = encode(state)
            t1 = perf_counter_ns()
            full.insert(w1.TRACE, step, data)
            t2 = perf_counter_ns()
            loaded = decode(full.latest(w1.TRACE))
            t3 = perf_counter_ns()
            w1.check(loaded, step)
            added = conversation.delta(step)
            t4 = perf_counter_ns()
            delta_data = encode(added)
            delta.insert(w1.TRACE, step, delta_data)
            t5 = perf_counter_ns()
            encode_ns.append(t1 - t0)
            insert_ns.append(t2 - t1)
            total_ns.append(t2 - t0)
            load_ns.append(t3 - t2)
            delta_ns.append(t5 - t4)
            state_sizes.append(len(data))
            delta_sizes.append(len(delta_data))
            if growth_every is not None and (
                step == 0 or (step + 1) % growth_every == 0 or step + 1 == steps
            ):
                growth_full.append([step + 1, full.footprint()["bytes"]])
                growth_delta.append([step + 1, delta.footprint()["bytes"]])
        if growth_every is not None:
            return {
                "floor.sqlite": {"bytes_by_step": growth_full},
                "floor.delta": {"bytes_by_step": growth_delta},
            }
        full_footprint = full.footprint()
        delta_footprint = delta.footprint()
    finally:
        full.close()
        delta.close()
    return {
        "floor.msgspec": {
            "save_ms": latency_ms(encode_ns),
            "state_bytes_mean": _mean(state_sizes),
            "state_bytes_last": state_sizes[-1] if state_sizes else 0,
        },
        "floor.sqlite": {
            "save_ms": latency_ms(total_ns),
            "encode_ms": latency_ms(encode_ns),
            "insert_ms": latency_ms(insert_ns),
            "load_latest_ms": latency_ms(load_ns),
            "bytes_at_rest": full_footprint["bytes"],
            "footprint": full_footprint,
            "settings": full.settings,
        },
        "floor.delta": {
            "save_ms": latency_ms(delta_ns),
            "delta_bytes_mean": _mean(delta_sizes),
            "bytes_at_rest": delta_footprint["bytes"],
            "footprint": delta_footprint,
            "settings": delta.settings,
        },
    }


def run_w3(sizes: Sizes, directory: Path) -> dict[str, Any]:
    """The W3 floors over the same traces and steps as W3."""
    data = w3.large(sizes)
    raw = RawSqlite(directory / "full.db")
    encode_ns: list[int] = []
    insert_ns: list[int] = []
    total_ns: list[int] = []
    load_ns: list[int] = []
    try:
        for trace_index, states in enumerate(data.states):
            trace = w3.trace_name(trace_index)
            for step, state in enumerate(states):
                t0 = perf_counter_ns()
                encoded = encode(state)
                t1 = perf_counter_ns()
                raw.insert(trace, step, encoded)
                t2 = perf_counter_ns()
                loaded = decode(raw.latest(trace))
                t3 = perf_counter_ns()
                w3.check(loaded, data, trace_index, step)
                encode_ns.append(t1 - t0)
                insert_ns.append(t2 - t1)
                total_ns.append(t2 - t0)
                load_ns.append(t3 - t2)
        footprint = raw.footprint()
    finally:
        raw.close()
    return {
        "floor.msgspec": w3.throughput(data, encode_ns, None),
        "floor.sqlite": {
            **w3.throughput(data, total_ns, load_ns),
            "encode_ms": latency_ms(encode_ns),
            "insert_ms": latency_ms(insert_ns),
            "bytes_at_rest": footprint["bytes"],
            "settings": raw.settings,
        },
    }


def memory_w3(sizes: Sizes) -> dict[str, Any]:
    """Peak memory (tracemalloc) of encoding and decoding one W3 state with msgspec."""
    data = w3.large(sizes)
    encode_peak = decode_peak = 0
    tracemalloc.start()
    try:
        for state in data.states[0][: sizes.w3_memory_steps]:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            encoded = encode(state)
            encode_peak = max(encode_peak, tracemalloc.get_traced_memory()[1] - base)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            decoded = decode(encoded)
            decode_peak = max(decode_peak, tracemalloc.get_traced_memory()[1] - base)
            del encoded, decoded
    finally:
        tracemalloc.stop()
    return {"floor.msgspec": {"save_peak_mb": encode_peak / 1e6, "load_peak_mb": decode_peak / 1e6}}
