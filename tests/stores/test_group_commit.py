"""The group commit of the server stores' saves (flowpoint.stores._group_commit)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import pytest

from flowpoint.stores._group_commit import BatchedInserts


class Recorder:
    """A batch commit that records its batches; ``refuse`` rows go back to their callers."""

    def __init__(self, refuse: Callable[[str], bool] = lambda row: False) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse
        self.gate: asyncio.Event | None = None  # when set, commits wait for it
        self.entered = asyncio.Event()

    async def commit(self, rows: list[str]) -> Sequence[bool]:
        self.batches.append(list(rows))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return [not self.refuse(row) for row in rows]


def batcher(
    recorder: Recorder,
    *,
    max_rows: int = 64,
    max_bytes: int = 1 << 20,
    stall: float = 60.0,
    max_batches: int = 4,
) -> BatchedInserts[str]:
    return BatchedInserts(
        recorder.commit,
        size=len,
        max_rows=max_rows,
        max_bytes=max_bytes,
        stall=stall,
        max_batches=max_batches,
    )


async def hold_a_batch(
    *names: str,
) -> tuple[Recorder, BatchedInserts[str], list[asyncio.Task[bool]]]:
    """A group commit whose first batch, ``names``, waits in its commit for the recorder's gate."""
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    group = batcher(recorder)
    tasks = [asyncio.create_task(group.submit(name)) for name in names]
    await recorder.entered.wait()
    return recorder, group, tasks


async def test_saves_that_arrive_together_are_one_batch() -> None:
    recorder = Recorder()
    group = batcher(recorder)
    answers = await asyncio.gather(*(group.submit(f"row-{n}") for n in range(10)))
    assert answers == [True] * 10
    assert recorder.batches == [[f"row-{n}" for n in range(10)]]


async def test_a_lone_save_is_handed_back_to_save_alone() -> None:
    recorder = Recorder()
    group = batcher(recorder)
    assert await group.submit("alone") is False
    assert recorder.batches == []


async def test_saves_queued_during_a_commit_are_the_next_batch() -> None:
    recorder, group, first = await hold_a_batch("a0", "a1", "a2")
    second = [asyncio.create_task(group.submit(f"b{n}")) for n in range(4)]
    await asyncio.sleep(0)
    assert len(recorder.batches) == 1  # the second waits for the first's commit
    recorder.gate.set()
    assert await asyncio.gather(*first, *second) == [True] * 7
    assert recorder.batches == [["a0", "a1", "a2"], ["b0", "b1", "b2", "b3"]]


async def test_rows_the_commit_did_not_take_go_back_to_their_callers() -> None:
    group = batcher(Recorder(refuse=lambda row: row.startswith("taken")))
    rows = ["taken-1", "new-1", "taken-2", "new-2"]
    answers = await asyncio.gather(*(group.submit(row) for row in rows))
    assert answers == [False, True, False, True]


@pytest.mark.parametrize(
    ("max_rows", "max_bytes", "sizes"),
    [
        (4, 1 << 20, [4, 4, 2]),
        (64, 10, [2, 2, 2, 2, 2]),  # five-byte rows, ten bytes a batch
        (64, 3, [1] * 10),  # a row over the limit goes alone
    ],
)
async def test_a_batch_keeps_to_its_limits(max_rows: int, max_bytes: int, sizes: list[int]) -> None:
    recorder = Recorder()
    group = batcher(recorder, max_rows=max_rows, max_bytes=max_bytes)
    answers = await asyncio.gather(*(group.submit(f"row-{n}") for n in range(10)))
    # Batches of one are handed back unsent.
    assert [len(batch) for batch in recorder.batches] == [size for size in sizes if size > 1]
    expected = [size > 1 for size in sizes for _ in range(size)]
    assert answers == expected


async def test_a_failed_commit_reaches_every_caller_of_its_batch_only() -> None:
    calls = 0

    async def commit(rows: list[str]) -> list[bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("lost")
        return [True] * len(rows)

    group = BatchedInserts(commit, size=len, max_rows=3, max_bytes=100, stall=60, max_batches=1)
    answers = await asyncio.gather(
        *(group.submit(f"r{n}") for n in range(6)), return_exceptions=True
    )
    assert [type(answer) for answer in answers[:3]] == [ConnectionError] * 3
    assert answers[3:] == [True] * 3


async def test_a_commit_with_the_wrong_number_of_answers_fails_its_callers() -> None:
    async def commit(rows: list[str]) -> list[bool]:
        return [True]

    group = BatchedInserts(commit, size=len, max_rows=8, max_bytes=100, stall=60, max_batches=1)
    answers = await asyncio.gather(
        *(group.submit(f"r{n}") for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(answer, RuntimeError) for answer in answers)


async def test_a_caller_cancelled_while_queued_is_never_committed() -> None:
    recorder, group, first = await hold_a_batch("a0", "a1")
    queued = [asyncio.create_task(group.submit(f"b{n}")) for n in range(3)]
    await asyncio.sleep(0)
    queued[1].cancel()
    recorder.gate.set()
    assert await asyncio.gather(*first) == [True, True]
    assert await queued[0] is True
    assert await queued[2] is True
    assert queued[1].cancelled()
    assert recorder.batches == [["a0", "a1"], ["b0", "b2"]]


async def test_a_stalled_commit_lets_the_next_batch_go_beside_it() -> None:
    stuck = asyncio.Event()
    entered = asyncio.Event()
    batches: list[list[str]] = []

    async def commit(rows: list[str]) -> list[bool]:
        batches.append(rows)
        if rows[0].startswith("stuck"):
            entered.set()
            await stuck.wait()  # as a statement waiting on another transaction's lock
        return [True] * len(rows)

    group = BatchedInserts(commit, size=len, max_rows=8, max_bytes=100, stall=0.02, max_batches=2)
    blocked = [asyncio.create_task(group.submit(f"stuck-{n}")) for n in range(2)]
    await entered.wait()
    others = [asyncio.create_task(group.submit(f"free-{n}")) for n in range(2)]
    assert await asyncio.wait_for(asyncio.gather(*others), 5) == [True, True]
    assert not any(task.done() for task in blocked)
    stuck.set()
    assert await asyncio.gather(*blocked) == [True, True]
    assert batches == [["stuck-0", "stuck-1"], ["free-0", "free-1"]]


async def test_no_more_batches_than_allowed_run_at_once() -> None:
    stuck = asyncio.Event()
    running = 0
    most = 0

    async def commit(rows: list[str]) -> list[bool]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await stuck.wait()
        running -= 1
        return [True] * len(rows)

    group = BatchedInserts(commit, size=len, max_rows=2, max_bytes=100, stall=0.01, max_batches=2)
    tasks = [asyncio.create_task(group.submit(f"r{n}")) for n in range(8)]
    for _ in range(3):
        await asyncio.sleep(0.03)
        tasks += [asyncio.create_task(group.submit(f"late{n}")) for n in range(2)]
    stuck.set()
    assert all(await asyncio.gather(*tasks))
    assert most == 2


async def test_a_save_from_another_loop_meanwhile_goes_alone() -> None:
    recorder, group, ours = await hold_a_batch("a0", "a1")
    found: list[bool] = []
    thread = threading.Thread(target=lambda: found.append(asyncio.run(group.submit("other"))))
    thread.start()
    await asyncio.to_thread(thread.join)
    assert found == [False]
    recorder.gate.set()
    assert await asyncio.gather(*ours) == [True, True]


async def test_wait_idle_returns_when_every_queued_save_is_answered() -> None:
    recorder, group, saves = await hold_a_batch("r0", "r1", "r2")
    idle = asyncio.create_task(group.wait_idle())
    await asyncio.sleep(0.01)
    assert not idle.done()
    recorder.gate.set()
    await idle
    assert all(save.done() for save in saves)


async def test_cancelling_the_batching_leaves_no_caller_waiting() -> None:
    recorder, group, saves = await hold_a_batch("r0", "r1", "r2")
    queued = asyncio.create_task(group.submit("queued"))
    await asyncio.sleep(0)
    for task in list(group._tasks):
        task.cancel()
    results = await asyncio.gather(*saves, queued, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    # The next save starts the batching again.
    recorder.gate = None
    assert list(await asyncio.gather(group.submit("x"), group.submit("y"))) == [True, True]


@pytest.mark.parametrize(
    "options",
    [
        {"max_rows": 1},
        {"max_bytes": 0},
        {"max_batches": 0},
        {"stall": 0},
        {"stall": float("nan")},
    ],
)
def test_limits_that_cannot_batch_are_refused(options: dict[str, float]) -> None:
    settings: dict[str, float] = {"max_rows": 8, "max_bytes": 100, "stall": 1, "max_batches": 1}
    settings.update(options)
    with pytest.raises(ValueError, match="two rows"):
        BatchedInserts(Recorder().commit, size=len, **settings)  # type: ignore[arg-type]
