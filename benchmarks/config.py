"""Workload sizes: the full run of docs/workloads.md and a smoke run that takes seconds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Sizes:
    # W1 chat-300: one trace, one message appended per step.
    w1_steps: int = 300
    w1_message_chars: int = 400
    w1_profile_chars: int = 2048
    w1_random_loads: int = 50
    w1_list_repeats: int = 5  # each listing is timed this many times; the stats are over them
    w1_cold_loads: int = 20  # a fresh store object opened, then load_latest: this many times
    w1_bytes_every: int = 50  # bytes at rest against step, in a separate untimed pass
    # W2 fan-out: many traces at once from asyncio.
    w2_traces: int = 1000
    w2_steps: int = 10
    w2_in_flight: int = 32
    w2_state_chars: int = 1000  # the text of a ~1 KB dict state
    # W3 large state: a list of records of mixed fields.
    w3_traces: int = 10
    w3_steps: int = 20
    w3_records: int = 4000  # about 250 B each in MessagePack: about 1 MB
    w3_changed_per_step: float = 0.01  # share of records replaced at each step
    w3_memory_steps: int = 3  # steps of the separate tracemalloc pass
    # W4 fan-out agent step: agent -> 8 tools -> join, run by flowpoint and by LangGraph.
    w4_supersteps: int = 200
    w4_message_chars: int = 200
    # W5 LangGraph adapter: W1's steps through the saver API; an add_messages agent's bytes.
    w5_agent_turns: tuple[int, ...] = (60, 300)
    # Everything.
    repeat: int = 3
    seed: int = 20_260_101

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_repeat(self, repeat: int | None) -> Sizes:
        return self if repeat is None else replace(self, repeat=repeat)


FULL = Sizes()

SMOKE = Sizes(
    w1_steps=20,
    w1_random_loads=10,
    w1_list_repeats=2,
    w1_cold_loads=2,
    w1_bytes_every=5,
    w2_traces=20,
    w2_steps=3,
    w2_in_flight=32,
    w3_traces=2,
    w3_steps=2,
    w3_records=200,  # about 50 KB
    w3_memory_steps=2,
    w4_supersteps=10,
    w5_agent_turns=(3, 8),
    repeat=1,
)
