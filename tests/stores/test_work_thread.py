"""The thread that runs a blocking store's work for async callers (flowpoint.stores._thread)."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from flowpoint.stores._thread import WorkThread


def _threads_named(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


async def test_results_and_errors_come_back_to_the_caller() -> None:
    work = WorkThread("test-work-results")
    try:
        assert await work.run(lambda: 41 + 1) == 42
        assert await work.run(threading.get_ident) != threading.get_ident()

        def refuse() -> None:
            raise KeyError("refused")

        with pytest.raises(KeyError, match="refused"):
            await work.run(refuse)
        # The thread goes on after a failure.
        assert await work.run(lambda: "still here") == "still here"
    finally:
        work.close()


async def test_stop_iteration_reaches_the_caller_as_runtime_error() -> None:
    work = WorkThread("test-work-stop")
    try:
        with pytest.raises(RuntimeError, match="StopIteration") as caught:
            await work.run(lambda: next(iter(())))
        assert isinstance(caught.value.__cause__, StopIteration)
    finally:
        work.close()


async def test_calls_run_one_at_a_time_in_the_order_handed_in() -> None:
    work = WorkThread("test-work-order")
    seen: list[int] = []
    running = 0
    overlap = False

    def step(n: int) -> int:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        seen.append(n)
        running -= 1
        return n

    try:
        results = await asyncio.gather(*(work.run(lambda n=n: step(n)) for n in range(50)))
        assert results == list(range(50))
        assert seen == list(range(50))
        assert not overlap
        assert len(_threads_named("test-work-order")) == 1
    finally:
        work.close()


async def test_a_call_whose_caller_gave_up_first_is_skipped() -> None:
    work = WorkThread("test-work-cancel")
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = asyncio.ensure_future(work.run(lambda: gate.wait(10)))
        waiting = asyncio.ensure_future(work.run(lambda: ran.append("ran")))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert await blocker is True
        assert await work.run(lambda: "after") == "after"
        assert ran == []
    finally:
        gate.set()
        work.close()


async def test_close_refuses_new_calls_and_finishes_those_handed_in() -> None:
    work = WorkThread("test-work-close")
    gate = threading.Event()
    done: list[int] = []
    first = asyncio.ensure_future(work.run(lambda: gate.wait(10)))
    second = asyncio.ensure_future(work.run(lambda: done.append(2)))
    await asyncio.sleep(0.05)
    work.close()
    work.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await work.run(lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        work.post(lambda: None)
    gate.set()
    assert await first is True
    await second
    assert done == [2]
    for thread in _threads_named("test-work-close"):
        thread.join(5)
    assert _threads_named("test-work-close") == []


async def test_a_posted_call_that_raises_is_shown_and_the_thread_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = WorkThread("test-work-post")

    def broken() -> None:
        raise ValueError("a posted call's bug")

    try:
        work.post(broken)
        assert await work.run(lambda: "served") == "served"
    finally:
        work.close()
    assert "a posted call's bug" in capsys.readouterr().err


def test_a_dropped_work_thread_ends_its_thread() -> None:
    async def use() -> None:
        work = WorkThread("test-work-dropped")
        assert await work.run(lambda: 1) == 1

    asyncio.run(use())
    gc.collect()
    for thread in _threads_named("test-work-dropped"):
        thread.join(5)
    assert _threads_named("test-work-dropped") == []


def test_a_caller_whose_loop_closed_does_not_stop_the_thread() -> None:
    work = WorkThread("test-work-loops")
    gate = threading.Event()

    async def abandon() -> None:
        # The caller's loop ends while the call waits for the thread.
        call = asyncio.ensure_future(work.run(lambda: gate.wait(10)))
        await asyncio.sleep(0.05)
        call.cancel()

    try:
        asyncio.run(abandon())
        gate.set()

        async def later() -> str:
            return await work.run(lambda: "served")

        assert asyncio.run(later()) == "served"
    finally:
        gate.set()
        work.close()


def test_callers_on_several_loops_each_get_their_own_results() -> None:
    work = WorkThread("test-work-many-loops")
    results: dict[int, list[int]] = {}

    def caller(index: int) -> None:
        async def calls() -> list[int]:
            return [await work.run(lambda n=n: index * 100 + n) for n in range(20)]

        results[index] = asyncio.run(calls())

    try:
        threads = [threading.Thread(target=caller, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == {index: [index * 100 + n for n in range(20)] for index in range(4)}
    finally:
        work.close()
