"""Workers on SQLite and PostgreSQL: runs to the end, interrupts, failures, lost leases, stops."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowpoint import (
    END,
    START,
    CodecError,
    Graph,
    GraphDefinitionError,
    KeyRing,
    RunQueue,
    SerdeCheckpointCodec,
    StorageError,
    TypedCheckpointStore,
    Worker,
    interrupt,
)
from tests.harnesses import HARNESSES
from tests.queue import graphs

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
CHAIN = graphs.chain()


async def final_state(queue: RunQueue, trace: str, graph: Any = CHAIN) -> Any:
    latest = await TypedCheckpointStore(queue.store).load_latest(trace, graph.hash_u64())
    assert latest is not None
    return latest.state


async def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 30
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def test_a_worker_runs_the_runs_of_its_graphs_to_the_end(queue: RunQueue) -> None:
    for n in range(5):
        await queue.submit(CHAIN, f"t{n}", graphs.start(n))
    await queue.submit(graphs.approval(), "not-served", {"ticket": 1})
    await Worker(queue, graphs=[CHAIN], concurrency=3).arun(until_idle=True)
    for n in range(5):
        assert await queue.status(f"t{n}") == "done"
        assert (await final_state(queue, f"t{n}"))["visited"] == list(graphs.NODES)
    assert await queue.status("not-served") == "queued"
    assert [run.trace_id for run in await queue.stranded()] == ["not-served"]
    run = await queue.get("t0")
    assert run is not None
    assert (run.epoch, run.attempts, run.owner, run.error) == (1, 0, None, None)


RING = KeyRing({"k1": bytes(range(32))}, primary="k1")
SEALED = SerdeCheckpointCodec(encryption=RING)


async def test_a_queue_opened_with_a_key_ring_encrypts_every_checkpoint(queue_url: str) -> None:
    async with RunQueue.open(queue_url, codec=SEALED) as queue:
        await queue.submit(CHAIN, "secret", graphs.start(7))
        await Worker(queue, graphs=[CHAIN]).arun(until_idle=True)
        assert await queue.status("secret") == "done"
        sealed = TypedCheckpointStore(queue.store, SEALED.for_state(CHAIN.state_type))
        latest = await sealed.load_latest("secret", CHAIN.hash_u64())
        assert latest is not None
        assert latest.state["visited"] == list(graphs.NODES)
        history = await queue.store.history("secret")
        assert len(history) == len(graphs.NODES) + 1
        stock = SerdeCheckpointCodec(CHAIN.state_type)
        for info in history:  # the submitted state too: nothing is stored in the clear
            blob = await queue.store.load(info.checkpoint_id)
            assert blob is not None
            with pytest.raises(CodecError, match="encrypted with key 'k1'"):
                stock.deserialize(blob, CHAIN.hash_u64())


async def fails_without_the_key(queue_url: str, graph: Any, trace: str) -> None:
    """A worker of a queue opened without the key ring fails run ``trace``, saying why."""
    async with RunQueue.open(queue_url) as plain:
        await Worker(plain, graphs=[graph]).arun(until_idle=True)
        run = await plain.get(trace)
        assert run is not None
        assert run.status == "failed"
        assert "encrypted with key 'k1'" in (run.error or "")


async def test_a_worker_without_the_key_fails_the_run_saying_so(queue_url: str) -> None:
    async with RunQueue.open(queue_url, codec=SEALED) as sealed:
        await sealed.submit(CHAIN, "secret", graphs.start(1))
    await fails_without_the_key(queue_url, CHAIN, "secret")
    async with RunQueue.open(queue_url, codec=SEALED) as sealed:
        await sealed.resume("secret")  # its cause fixed: a worker with the key
        await Worker(sealed, graphs=[CHAIN]).arun(until_idle=True)
        assert await sealed.status("secret") == "done"


async def test_a_resume_given_to_an_encrypting_queue_reaches_only_a_worker_with_the_key(
    queue_url: str,
) -> None:
    approval = graphs.approval()
    async with RunQueue.open(queue_url, codec=SEALED) as sealed:
        await sealed.submit(approval, "ticket", {"ticket": 1})
        await Worker(sealed, graphs=[approval], interrupt_before=["send"]).arun(until_idle=True)
        await sealed.resume("ticket", update={"by": "ana"})
    await fails_without_the_key(queue_url, approval, "ticket")
    async with RunQueue.open(queue_url, codec=SEALED) as sealed:
        await sealed.resume("ticket", update={"by": "ana"})
        await Worker(sealed, graphs=[approval]).arun(until_idle=True)
        assert await sealed.status("ticket") == "done"
        store = TypedCheckpointStore(sealed.store, SEALED.for_state(approval.state_type))
        latest = await store.load_latest("ticket", approval.hash_u64())
        assert latest is not None
        assert latest.state["approved_by"] == "ana"


def test_a_queue_codec_must_be_a_serde_codec(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SerdeCheckpointCodec"):
        RunQueue.open(f"sqlite:///{tmp_path / 'q.db'}", codec=object())  # type: ignore[arg-type]


async def test_an_interrupted_run_holds_no_worker_until_resumed(queue: RunQueue) -> None:
    approval = graphs.approval()
    await queue.submit(approval, "ticket-42", {"ticket": 42})
    worker = Worker(queue, graphs=[approval], interrupt_before=["send"])
    await worker.arun(until_idle=True)  # returns: the paused run holds no worker
    assert await queue.status("ticket-42") == "interrupted"
    await queue.resume("ticket-42", update={"by": "ana"})
    assert await queue.status("ticket-42") == "queued"
    await Worker(queue, graphs=[approval], interrupt_before=["send"]).arun(until_idle=True)
    assert await queue.status("ticket-42") == "done"
    state = await final_state(queue, "ticket-42", approval)
    assert state == {
        "ticket": 42,
        "text": "reply to 42",
        "drafts": 1,
        "by": "ana",
        "sent": "reply to 42",
        "approved_by": "ana",
    }


async def test_parallel_branches_save_their_pending_writes_under_the_lease(
    queue: RunQueue,
) -> None:
    g = Graph("branches", state=dict)
    g.add_node("plan", lambda state: {"plan": 1})
    g.add_node("web", lambda state: {"web": state["plan"] + 1})
    g.add_node("docs", lambda state: {"docs": state["plan"] + 2})
    g.add_node("write", lambda state: {"text": state["web"] + state["docs"]})
    g.add_edge(START, "plan")
    g.add_edge("plan", "web")
    g.add_edge("plan", "docs")
    g.add_edge(["web", "docs"], "write")
    g.add_edge("write", END)
    branches = g.build()
    await queue.submit(branches, "t", {})
    await Worker(queue, graphs=[branches]).arun(until_idle=True)
    assert await queue.status("t") == "done"
    assert (await final_state(queue, "t", branches))["text"] == 5
    history = await queue.store.history("t")
    [fan_out] = [info for info in history if info.current_node == "docs, web"]
    writes = await queue.store.load_writes(fan_out.checkpoint_id)
    assert sorted(write.task_id for write in writes) == ["docs", "web"]


async def test_a_run_paused_by_interrupt_is_resumed_with_the_answer(queue: RunQueue) -> None:
    def publish(post: dict[str, Any]) -> dict[str, Any]:
        ok = interrupt({"question": "Publish?", "title": post["title"]})
        return {"status": "published" if ok else "held back"}

    g = Graph("blog").add_node("publish", publish)
    blog = g.add_edge(START, "publish").add_edge("publish", END).build()
    await queue.submit(blog, "post-1", {"title": "WAL"})
    await Worker(queue, graphs=[blog]).arun(until_idle=True)
    assert await queue.status("post-1") == "interrupted"
    await queue.resume("post-1", value=True)
    await Worker(queue, graphs=[blog]).arun(until_idle=True)
    assert await queue.status("post-1") == "done"
    assert await final_state(queue, "post-1", blog) == {"title": "WAL", "status": "published"}


async def test_a_run_whose_node_raises_is_failed_with_the_error(queue: RunQueue) -> None:
    failing = graphs.failing()
    await queue.submit(failing, "t", {"n": 3})
    await Worker(queue, graphs=[failing]).arun(until_idle=True)
    run = await queue.get("t")
    assert run is not None
    assert run.status == "failed"
    assert run.error == "builtins.RuntimeError: no luck with 3"


async def test_a_worker_that_lost_its_lease_saves_nothing_more_of_the_run(
    queue: RunQueue,
    other_queue: RunQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow(state: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await gate.wait()
        return {"slow": True}

    g = Graph("gated", state=dict)
    g.add_node("slow", slow)
    g.add_node("after", lambda state: {"after": True})
    g.add_edge(START, "slow")
    g.add_edge("slow", "after")
    g.add_edge("after", END)
    gated = g.build()
    await queue.submit(gated, "t", {})

    beat = queue._heartbeat
    beats = 0

    async def partitioned(*args: Any) -> Any:
        nonlocal beats
        beats += 1
        if beats == 1:
            return await beat(*args)  # it registers, then never renews its leases
        raise StorageError("the network is down")

    monkeypatch.setattr(queue, "_heartbeat", partitioned)
    # One slot: the stale run holds it, so the other worker is the one to take the run over.
    worker = Worker(queue, graphs=[gated], concurrency=1, lease=timedelta(seconds=0.5))
    caplog.set_level(logging.INFO, "flowpoint.worker")
    serving = asyncio.create_task(worker.arun())
    await started.wait()
    await asyncio.sleep(1.0)  # past the lease
    [taken] = await other_queue._claim("other", [gated.hash_u64()], 1, 30.0)
    assert taken.epoch == 2
    gate.set()  # the old owner's node finishes now; its save must fail
    await wait_for(lambda: _logged(caplog, "lease_lost"))
    worker.stop()
    await serving
    assert [info.step for info in await queue.store.history("t")] == [0]
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.owner, run.epoch) == ("running", "other", 2)


async def _logged(caplog: pytest.LogCaptureFixture, event: str) -> bool:
    return any(getattr(record, "event", None) == event for record in caplog.records)


async def test_stop_finishes_the_node_in_flight_and_releases_the_run(queue: RunQueue) -> None:
    slow = graphs.chain(delay=0.2)
    await queue.submit(slow, "t", graphs.start())
    worker = Worker(queue, graphs=[slow])
    serving = asyncio.create_task(worker.arun())

    async def past_the_first_node() -> bool:
        return len(await queue.store.history("t")) >= 2

    await wait_for(past_the_first_node)
    worker.stop()
    await serving
    run = await queue.get("t")
    assert run is not None
    assert (run.status, run.owner, run.attempts) == ("queued", None, 0)
    stopped_at = len(await queue.store.history("t"))
    assert stopped_at < len(graphs.NODES) + 1
    await Worker(queue, graphs=[slow]).arun(until_idle=True)
    assert await queue.status("t") == "done"
    assert (await final_state(queue, "t", slow))["visited"] == list(graphs.NODES)


async def test_a_worker_that_cannot_reach_its_queue_fails_at_once(tmp_path: Path) -> None:
    queue = RunQueue.open(f"sqlite:///{tmp_path / 'no-such-dir' / 'runs.db'}")
    with pytest.raises(StorageError, match="unable to open database file"):
        await Worker(queue, graphs=[CHAIN]).arun()
    await queue.close()


def test_a_worker_refuses_what_it_cannot_serve() -> None:
    queue = RunQueue.open("sqlite:///unused.db")
    with pytest.raises(TypeError, match="a list of graphs"):
        Worker(queue, graphs=CHAIN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one graph"):
        Worker(queue, graphs=[])
    with pytest.raises(GraphDefinitionError, match="twice"):
        Worker(queue, graphs=[CHAIN, graphs.chain()])
    with pytest.raises(GraphDefinitionError, match="no graph has: \\['nope'\\]"):
        Worker(queue, graphs=[CHAIN], interrupt_before=["nope"])
    with pytest.raises(ValueError, match="concurrency"):
        Worker(queue, graphs=[CHAIN], concurrency=0)
    with pytest.raises(ValueError, match="lease must be a positive length"):
        Worker(queue, graphs=[CHAIN], lease=timedelta(0))
    with pytest.raises(TypeError, match="lease must be a timedelta"):
        Worker(queue, graphs=[CHAIN], lease=30)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="poll_interval must be a timedelta"):
        Worker(queue, graphs=[CHAIN], poll_interval=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval must be a positive length"):
        Worker(queue, graphs=[CHAIN], poll_interval=timedelta(seconds=-1))
    with pytest.raises(TypeError, match="RunQueue"):
        Worker("sqlite:///x.db", graphs=[CHAIN])  # type: ignore[arg-type]


# -- signals, in a worker process --------------------------------------------------------


def start_worker(url: str, log: Path, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.queue.worker_process", url, "--log", str(log)]
    return subprocess.Popen(
        [*command, *options], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
    )


def logged(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()[:2]) for line in log.read_text().splitlines()]  # type: ignore[misc]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_finishes_the_nodes_in_flight_and_releases_the_runs(
    queue: RunQueue, queue_url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "side-effects.txt"
    slow = graphs.chain(delay=0.4)
    for trace in ("a", "b"):
        await queue.submit(slow, trace, graphs.start())
    child = start_worker(queue_url, log, "--delay", "0.4")
    try:

        async def both_running() -> bool:
            return len(await queue.runs(status="running")) == 2

        await wait_for(both_running)
        child.send_signal(signum)
        assert await asyncio.to_thread(child.wait, 30) == 0
    finally:
        child.kill()
        child.communicate()
    for trace in ("a", "b"):
        run = await queue.get(trace)
        assert run is not None
        assert (run.status, run.owner, run.attempts) == ("queued", None, 0)
        # Every node that ran was saved: the next worker goes on after them.
        history = await queue.store.history(trace)
        ran = [node for logged_trace, node in logged(log) if logged_trace == trace]
        assert len(history) == len(ran) + 1
    assert max(Counter(logged(log)).values()) == 1


async def test_a_second_sigterm_stops_at_once_and_the_lease_expires(
    queue: RunQueue, queue_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side-effects.txt"
    slow = graphs.chain(delay=5.0)
    await queue.submit(slow, "t", graphs.start())
    child = start_worker(queue_url, log, "--delay", "5", "--lease", "1")
    try:

        async def running() -> bool:
            return await queue.status("t") == "running"

        await wait_for(running)
        child.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        child.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(child.wait, 10) == -signal.SIGTERM
    finally:
        child.kill()
        child.communicate()
    assert logged(log) == []  # the node in flight never finished
    run = await queue.get("t")
    assert run is not None
    assert run.status == "running"  # until its lease expires; then any worker requeues it
    await asyncio.sleep(1.5)
    assert [c.trace_id for c in await queue._claim("next", [slow.hash_u64()], 1, 30.0)] == ["t"]


@pytest.fixture
async def postgres_url() -> Any:
    harness = await HARNESSES["postgres"]()
    try:
        yield harness.store_url()
    finally:
        await harness.cleanup()


async def test_a_postgres_worker_wakes_on_notify_not_on_its_poll(postgres_url: str) -> None:
    async with RunQueue.open(postgres_url) as queue:
        worker = Worker(queue, graphs=[CHAIN], poll_interval=timedelta(minutes=10))
        serving = asyncio.create_task(worker.arun())
        try:
            await asyncio.sleep(1.0)  # it has claimed nothing, and now waits
            await queue.submit(CHAIN, "t", graphs.start())

            async def done() -> bool:
                return await queue.status("t") == "done"

            await wait_for(done)  # 30 s at most: long before its next poll
        finally:
            worker.stop()
            await serving


@dataclass
class _TicketV1:
    text: str
    reply: str = ""


@dataclass
class _TicketV2:
    text: str
    answer: str = ""
    language: str = "en"


def _draft(ticket: _TicketV1) -> dict[str, Any]:
    return {"reply": f"re: {ticket.text}"}


def _compose(ticket: _TicketV2) -> dict[str, Any]:
    return {"answer": f"[{ticket.language}] re: {ticket.text}"}


def _v1_to_v2(old: _TicketV1) -> _TicketV2:
    return _TicketV2(text=old.text, answer=old.reply)


async def test_a_worker_of_a_new_graph_migrates_the_runs_of_the_old_one(queue: RunQueue) -> None:
    v1 = Graph("ticket", state=_TicketV1).add_node("draft", _draft)
    v1 = v1.add_edge(START, "draft").add_edge("draft", END)
    old = v1.build()
    v2 = Graph("ticket", state=_TicketV2).add_node("compose", _compose)
    v2.add_edge(START, "compose").add_edge("compose", END)
    v2.migration(from_hash=old.hash_u64(), state=_TicketV1, nodes={"draft": "compose"})(_v1_to_v2)
    new = v2.build()
    await queue.submit(old, "queued-before-the-deploy", _TicketV1("hi"))
    # Only the new graph's workers are left: the old run is theirs, not stranded.
    worker = Worker(queue, graphs=[new])
    assert [run.trace_id for run in await queue.stranded()] == ["queued-before-the-deploy"]
    await worker.arun(until_idle=True)
    assert await queue.status("queued-before-the-deploy") == "done"
    state = await final_state(queue, "queued-before-the-deploy", new)
    assert state == {"text": "hi", "answer": "[en] re: hi", "language": "en"}


def test_two_graphs_taking_the_runs_of_one_old_graph_are_refused(queue: RunQueue) -> None:
    v1 = Graph("ticket", state=_TicketV1).add_node("draft", _draft)
    old = v1.add_edge(START, "draft").add_edge("draft", END).build()
    newer = []
    for name in ("a", "b"):
        g = Graph(name, state=_TicketV2).add_node("compose", _compose)
        g.add_edge(START, "compose").add_edge("compose", END)
        g.migration(from_hash=old.hash_u64(), state=_TicketV1, nodes={"draft": "compose"})(
            _v1_to_v2
        )
        newer.append(g.build())
    with pytest.raises(GraphDefinitionError, match="both take the runs of graph"):
        Worker(queue, graphs=newer)
