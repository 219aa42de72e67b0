"""W1 chat-300: one trace, one message appended per step; save, then load the latest.

State: ``{"messages": [{"role", "content"}, ...], "profile": str, "turn": int}`` with
400-character messages (one more each step), a constant 2,048-character profile and the
step number. After the run: 50 random loads by id, the newest-20 listing and the full
listing (each timed ``w1_list_repeats`` times), cold loads of the latest checkpoint (a
fresh store object on the same database, as after a restart: opening it and the load are
timed together, ``w1_cold_loads`` times), and the bytes at rest.

The async and blocking loops are the same code but for ``await``: only the library call is
between the two ``perf_counter_ns()`` readings; building the checkpoint, and checking what
came back, is outside.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from time import perf_counter_ns
from typing import Any

from benchmarks.config import Sizes
from benchmarks.stats import latency_ms
from benchmarks.subjects import AsyncSubject, SyncSubject
from benchmarks.text import text

TRACE = "chat-300"
ALL_CHANNELS = frozenset({"messages", "profile", "turn"})
STEP_CHANNELS = frozenset({"messages", "turn"})  # what changes after step 0
OPERATIONS = (
    "save",
    "load_latest",
    "load_by_id",
    "cold_load_latest",
    "list_newest_20",
    "list_all",
)


@dataclass(frozen=True)
class Chat:
    messages: tuple[dict[str, str], ...]
    profile: str

    def state(self, step: int) -> dict[str, Any]:
        """The state saved at ``step`` (a new dict and list: the previous ones stay as they are)."""
        return {"messages": list(self.messages[: step + 1]), "profile": self.profile, "turn": step}

    def delta(self, step: int) -> dict[str, Any]:
        """What ``step`` adds to the state: its message and turn (and the profile, at step 0)."""
        added: dict[str, Any] = {"message": self.messages[step], "turn": step}
        if step == 0:
            added["profile"] = self.profile
        return added


@cache
def chat(sizes: Sizes) -> Chat:
    rng = random.Random(sizes.seed)
    profile = text(rng, sizes.w1_profile_chars)
    messages = tuple(
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": text(rng, sizes.w1_message_chars),
        }
        for i in range(sizes.w1_steps)
    )
    return Chat(messages, profile)


def changed(step: int) -> frozenset[str]:
    return ALL_CHANNELS if step == 0 else STEP_CHANNELS


def check(state: dict[str, Any], step: int) -> None:
    if state["turn"] != step or len(state["messages"]) != step + 1:
        raise AssertionError(
            f"expected step {step}, loaded turn {state['turn']} "
            f"with {len(state['messages'])} messages"
        )


def check_count(listed: list[Any], expected: int, what: str) -> None:
    if len(listed) != expected:
        raise AssertionError(f"{what} returned {len(listed)} checkpoints, expected {expected}")


def _growth_point(step: int, every: int | None, steps: int) -> bool:
    return every is not None and (step == 0 or (step + 1) % every == 0 or step + 1 == steps)


def _result(
    save_ns: list[int],
    load_ns: list[int],
    by_id_ns: list[int],
    newest_ns: list[int],
    all_ns: list[int],
    cold_ns: list[int],
    footprint: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "save_ms": latency_ms(save_ns),
        "load_latest_ms": latency_ms(load_ns),
        "load_by_id_ms": latency_ms(by_id_ns),
        # None where a fresh store object would be empty (in memory) or is not measured.
        "cold_load_latest_ms": latency_ms(cold_ns) if cold_ns else None,
        "list_newest_20_ms": latency_ms(newest_ns),
        "list_all_ms": latency_ms(all_ns),
        "bytes_at_rest": None if footprint is None else footprint["bytes"],
        "footprint": footprint,
    }


async def run_async(
    subject: AsyncSubject, sizes: Sizes, growth_every: int | None = None, *, cold: bool = True
) -> dict[str, Any]:
    """Run W1 on an async subject; with ``growth_every``, an untimed pass for bytes by step.

    ``cold=False`` leaves out the cold loads (W5, which times the saver API only).
    """
    conversation = chat(sizes)
    rng = random.Random(sizes.seed + 1)
    steps = sizes.w1_steps
    save_ns: list[int] = []
    load_ns: list[int] = []
    keys: list[Any] = []
    growth: list[list[int]] = []
    await subject.open()
    try:
        for step in range(steps):
            prepared = subject.prepare(TRACE, conversation.state(step), changed(step))
            t0 = perf_counter_ns()
            await subject.save(prepared)
            t1 = perf_counter_ns()
            loaded = await subject.load_latest(TRACE)
            t2 = perf_counter_ns()
            check(subject.state_of(loaded), step)
            save_ns.append(t1 - t0)
            load_ns.append(t2 - t1)
            keys.append(prepared.key)
            if _growth_point(step, growth_every, steps):
                footprint = subject.bytes_at_rest()
                if footprint is not None:
                    growth.append([step + 1, footprint["bytes"]])
        if growth_every is not None:
            return {"bytes_by_step": growth, "settings": subject.settings()}

        by_id_ns: list[int] = []
        for index in [rng.randrange(steps) for _ in range(sizes.w1_random_loads)]:
            t0 = perf_counter_ns()
            loaded = await subject.load_by_id(keys[index])
            t1 = perf_counter_ns()
            check(subject.state_of(loaded), index)
            by_id_ns.append(t1 - t0)
        newest_ns: list[int] = []
        all_ns: list[int] = []
        for _ in range(sizes.w1_list_repeats):
            t0 = perf_counter_ns()
            newest = await subject.list_newest_20(TRACE)
            t1 = perf_counter_ns()
            every = await subject.list_all(TRACE)
            t2 = perf_counter_ns()
            check_count(newest, min(20, steps), "newest-20 listing")
            check_count(every, steps, "full listing")
            newest_ns.append(t1 - t0)
            all_ns.append(t2 - t1)
        cold_ns: list[int] = []
        for _ in range(sizes.w1_cold_loads if cold else 0):
            fresh = subject.reopen()
            if fresh is None:
                break
            t0 = perf_counter_ns()
            await fresh.open_cold()
            loaded = await fresh.load_latest(TRACE)
            t1 = perf_counter_ns()
            await fresh.close()
            check(fresh.state_of(loaded), steps - 1)
            cold_ns.append(t1 - t0)
        footprint = subject.bytes_at_rest()
        result = _result(save_ns, load_ns, by_id_ns, newest_ns, all_ns, cold_ns, footprint)
        result["settings"] = subject.settings()
        return result
    finally:
        await subject.close()


def run_sync(
    subject: SyncSubject, sizes: Sizes, growth_every: int | None = None, *, cold: bool = True
) -> dict[str, Any]:
    """Run W1 on a blocking subject: :func:`run_async` without ``await``."""
    conversation = chat(sizes)
    rng = random.Random(sizes.seed + 1)
    steps = sizes.w1_steps
    save_ns: list[int] = []
    load_ns: list[int] = []
    keys: list[Any] = []
    growth: list[list[int]] = []
    subject.open()
    try:
        for step in range(steps):
            prepared = subject.prepare(TRACE, conversation.state(step), changed(step))
            t0 = perf_counter_ns()
            subject.save(prepared)
            t1 = perf_counter_ns()
            loaded = subject.load_latest(TRACE)
            t2 = perf_counter_ns()
            check(subject.state_of(loaded), step)
            save_ns.append(t1 - t0)
            load_ns.append(t2 - t1)
            keys.append(prepared.key)
            if _growth_point(step, growth_every, steps):
                footprint = subject.bytes_at_rest()
                if footprint is not None:
                    growth.append([step + 1, footprint["bytes"]])
        if growth_every is not None:
            return {"bytes_by_step": growth, "settings": subject.settings()}

        by_id_ns: list[int] = []
        for index in [rng.randrange(steps) for _ in range(sizes.w1_random_loads)]:
            t0 = perf_counter_ns()
            loaded = subject.load_by_id(keys[index])
            t1 = perf_counter_ns()
            check(subject.state_of(loaded), index)
            by_id_ns.append(t1 - t0)
        newest_ns: list[int] = []
        all_ns: list[int] = []
        for _ in range(sizes.w1_list_repeats):
            t0 = perf_counter_ns()
            newest = subject.list_newest_20(TRACE)
            t1 = perf_counter_ns()
            every = subject.list_all(TRACE)
            t2 = perf_counter_ns()
            check_count(newest, min(20, steps), "newest-20 listing")
            check_count(every, steps, "full listing")
            newest_ns.append(t1 - t0)
            all_ns.append(t2 - t1)
        cold_ns: list[int] = []
        for _ in range(sizes.w1_cold_loads if cold else 0):
            fresh = subject.reopen()
            if fresh is None:
                break
            t0 = perf_counter_ns()
            fresh.open_cold()
            loaded = fresh.load_latest(TRACE)
            t1 = perf_counter_ns()
            fresh.close()
            check(fresh.state_of(loaded), steps - 1)
            cold_ns.append(t1 - t0)
        footprint = subject.bytes_at_rest()
        result = _result(save_ns, load_ns, by_id_ns, newest_ns, all_ns, cold_ns, footprint)
        result["settings"] = subject.settings()
        return result
    finally:
        subject.close()
