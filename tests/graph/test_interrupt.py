"""interrupt() inside a node: the pause, its payload in the checkpoint, answers in order."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowpoint import (
    END,
    START,
    CorruptCheckpoint,
    Graph,
    InMemoryBlobStore,
    InterruptOutsideNode,
    InvalidInterrupt,
    NodeContext,
    NoPendingInterrupt,
    RetentionPolicy,
    Retry,
    Runner,
    RunResult,
    TriggerPolicy,
    interrupt,
)
from flowpoint.cli._app import app
from flowpoint.stores.sqlite import SqliteBlobStore

T = "trace-1"


def approval(calls: Counter[str], *, sync: bool = True) -> Graph[dict[str, Any]]:
    """draft -> publish, where publish asks twice: may it publish, and under which title."""

    def draft(state: dict[str, Any]) -> dict[str, Any]:
        calls["draft"] += 1
        return {"draft": f"text about {state['topic']}"}

    def publish_sync(state: dict[str, Any]) -> dict[str, Any]:
        calls["publish"] += 1
        ok = interrupt({"question": "publish?", "draft": state["draft"]})
        if not ok:
            return {"published": False}
        title = interrupt("title?")
        return {"published": True, "title": title}

    async def publish_async(state: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return publish_sync(state)

    g: Graph[dict[str, Any]] = Graph("approval")
    g.add_node("draft", draft).add_node("publish", publish_sync if sync else publish_async)
    return g.add_edge(START, "draft").add_edge("draft", "publish").add_edge("publish", END)


@pytest.mark.parametrize("sync", [True, False], ids=["sync-node", "async-node"])
async def test_interrupt_pauses_and_answers_come_back_in_order(sync: bool) -> None:
    calls: Counter[str] = Counter()
    runner = Runner(approval(calls, sync=sync), InMemoryBlobStore())
    paused = await runner.run(T, {"topic": "WAL"})
    assert paused.status == "interrupted"
    assert paused.interrupt == {"question": "publish?", "draft": "text about WAL"}
    assert paused.next_node == "publish"
    assert paused.state == {"topic": "WAL", "draft": "text about WAL"}
    second = await runner.resume(T, value=True)
    assert (second.status, second.interrupt) == ("interrupted", "title?")
    done = await runner.resume(T, value="On logs")
    assert done.status == "done"
    assert done.interrupt is None
    assert done.state["published"] is True
    assert done.state["title"] == "On logs"
    # publish ran from the top each time; draft, checkpointed, never again.
    assert calls == Counter({"draft": 1, "publish": 3})


async def test_the_pending_interrupt_is_stored_in_the_checkpoint(tmp_path: Path) -> None:
    """A new runner over a new store object (a new process, as far as it knows) answers it."""
    path = tmp_path / "runs.db"
    calls: Counter[str] = Counter()
    async with SqliteBlobStore(path) as store:
        paused = await Runner(approval(calls), store).run(T, {"topic": "WAL"})
    cursor = paused.checkpoint.cursor
    assert cursor["interrupts"][0]["payload"] == paused.interrupt
    async with SqliteBlobStore(path) as store:
        runner = Runner(approval(calls), store)
        latest = await runner.store.load_latest(T, None)
        assert latest is not None
        assert latest.cursor == cursor
        assert latest.metadata["source"] == "interrupt"
        assert (await runner.resume(T, value=True)).interrupt == "title?"
    async with SqliteBlobStore(path) as store:
        done = await Runner(approval(calls), store).resume(T, value="On logs")
    assert done.state["title"] == "On logs"
    assert calls["draft"] == 1


def test_flowpoint_show_shows_the_payload(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def pause() -> RunResult[Any]:
        async with SqliteBlobStore(tmp_path / "runs.db") as store:
            return await Runner(approval(Counter()), store).run(T, {"topic": "WAL"})

    paused = asyncio.run(pause())
    checkpoint = str(paused.checkpoint.checkpoint_id)
    shown = CliRunner().invoke(app, ["show", checkpoint, "--json", "--store", url])
    assert shown.exit_code == 0, shown.output
    asked = json.loads(shown.stdout)["interrupt"]
    assert asked == {
        "task": "publish",
        "node": "publish",
        "payload": {"question": "publish?", "draft": "text about WAL"},
        "answers": [],
    }
    text = CliRunner().invoke(app, ["show", checkpoint, "--store", url], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "interrupt() in 'publish'" in text.stdout
    assert '"question": "publish?"' in text.stdout


async def test_resuming_without_an_answer_stays_paused_and_runs_nothing() -> None:
    calls: Counter[str] = Counter()
    runner = Runner(approval(calls), InMemoryBlobStore())
    paused = await runner.run(T, {"topic": "WAL"})
    again = await runner.resume(T)
    assert (again.status, again.interrupt, again.nodes_run) == ("interrupted", paused.interrupt, 0)
    assert again.checkpoint.checkpoint_id == paused.checkpoint.checkpoint_id
    assert calls["publish"] == 1


async def test_resume_with_an_update_reruns_the_node_which_asks_again() -> None:
    calls: Counter[str] = Counter()
    runner = Runner(approval(calls), InMemoryBlobStore())
    await runner.run(T, {"topic": "WAL"})
    asked = await runner.resume(T, update={"draft": "better text"})
    assert asked.interrupt == {"question": "publish?", "draft": "better text"}
    done = await runner.resume(T, value=False)
    assert done.state == {"topic": "WAL", "draft": "better text", "published": False}


async def test_a_value_when_nothing_waits_is_refused_and_saves_nothing() -> None:
    calls: Counter[str] = Counter()
    runner = Runner(approval(calls), InMemoryBlobStore(), interrupt_before=["publish"])
    await runner.run(T, {"topic": "WAL"})  # paused before publish: no interrupt() waits
    before = len(await runner.store.history(T))
    with pytest.raises(NoPendingInterrupt) as caught:
        await runner.resume(T, value=True)
    assert caught.value.trace_id == T
    assert "nothing to answer" in str(caught.value)
    assert len(await runner.store.history(T)) == before
    # The run goes on past the static pause, and its node's interrupt() pauses it.
    inside = await runner.resume(T)
    assert inside.interrupt is not None
    assert (await runner.resume(T, value=False)).status == "done"
    with pytest.raises(NoPendingInterrupt):  # a finished trace has nothing to answer
        await runner.resume(T, value=True)


async def test_interrupt_outside_a_node_is_a_clear_error() -> None:
    with pytest.raises(InterruptOutsideNode, match="outside a running node"):
        interrupt("hello?")

    def route(state: dict[str, Any]) -> str:
        interrupt("which way?")
        return END

    g: Graph[dict[str, Any]] = Graph("router").add_node("a", lambda state: None)
    g.add_edge(START, "a").add_conditional_edges("a", route, [END])
    with pytest.raises(InterruptOutsideNode):
        await Runner(g, InMemoryBlobStore()).run(T, {})


async def test_a_payload_that_cannot_be_stored_fails_at_the_call() -> None:
    seen: list[BaseException] = []

    def ask(state: dict[str, Any]) -> None:
        try:
            interrupt({"callback": print})
        except InvalidInterrupt as exc:
            seen.append(exc)
            raise

    g: Graph[dict[str, Any]] = Graph("bad").add_node("ask", ask)
    g.add_edge(START, "ask").add_edge("ask", END)
    runner = Runner(g, InMemoryBlobStore())
    with pytest.raises(InvalidInterrupt) as caught:
        await runner.run(T, {})
    assert seen == [caught.value]
    assert caught.value.task == "ask"
    assert "not plain data" in caught.value.reason
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.step == 0


async def test_an_answer_that_cannot_be_stored_is_refused_and_saves_nothing() -> None:
    runner = Runner(approval(Counter()), InMemoryBlobStore())
    await runner.run(T, {"topic": "WAL"})
    before = len(await runner.store.history(T))
    with pytest.raises(InvalidInterrupt, match="answer"):
        await runner.resume(T, value=object())
    assert len(await runner.store.history(T)) == before


async def test_except_exception_and_retries_let_the_pause_through() -> None:
    tries: list[int] = []

    def careful(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        tries.append(ctx.attempt)
        try:
            answer = interrupt("go?")
        except Exception:  # a node's own error handling does not swallow the pause
            return {"swallowed": True}
        return {"answer": answer}

    g: Graph[dict[str, Any]] = Graph("careful")
    g.add_node("careful", careful, retry=Retry(max_attempts=3, backoff=0))
    g.add_edge(START, "careful").add_edge("careful", END)
    runner = Runner(g, InMemoryBlobStore())
    assert (await runner.run(T, {})).interrupt == "go?"
    assert tries == [1]
    assert (await runner.resume(T, value=7)).state == {"answer": 7}


async def test_an_answered_node_runs_again_from_the_answers_checkpoint() -> None:
    """Its context names the checkpoint it runs from: the answer's, with a key of its own."""
    seen: list[tuple[str, Any]] = []

    def ask(state: dict[str, Any], ctx: NodeContext) -> None:
        seen.append((ctx.idempotency_key, ctx.checkpoint_id))
        interrupt("one")
        interrupt("two")

    g: Graph[dict[str, Any]] = Graph("keys").add_node("ask", ask)
    g.add_edge(START, "ask").add_edge("ask", END)
    runner = Runner(g, InMemoryBlobStore())
    await runner.run(T, {})
    answered = [(await runner.resume(T, value=n)).checkpoint for n in (1, 2)]
    assert len({key for key, _ in seen}) == 3
    # Each rerun starts from the checkpoint that recorded its answer.
    history = {info.checkpoint_id: info for info in await runner.store.history(T)}
    for (_, checkpoint_id), result in zip(seen[1:], answered, strict=True):
        assert history[checkpoint_id].metadata["source"] == "resume"
        assert history[checkpoint_id].step < result.step


def fan(calls: Counter[str], asking: tuple[str, ...]) -> Graph[dict[str, Any]]:
    def branch(name: str) -> Any:
        def node(state: dict[str, Any]) -> dict[str, Any]:
            calls[name] += 1
            answer = interrupt(f"{name}?") if name in asking else "-"
            return {name: answer}

        return node

    g: Graph[dict[str, Any]] = Graph("fan").add_node("go", lambda state: None)
    for name in ("left", "right"):
        g.add_node(name, branch(name)).add_edge("go", name).add_edge(name, END)
    return g.add_edge(START, "go")


async def test_a_branch_that_interrupts_pauses_the_superstep_and_the_others_keep_their_output() -> (
    None
):
    calls: Counter[str] = Counter()
    runner = Runner(fan(calls, ("right",)), InMemoryBlobStore())
    paused = await runner.run(T, {})
    assert (paused.interrupt, paused.next_nodes) == ("right?", ("left", "right"))
    writes = await runner.store.load_writes(paused.checkpoint.checkpoint_id)
    assert [write.task_id for write in writes] == ["left"]  # carried to the pause
    done = await runner.resume(T, value="yes")
    assert done.state == {"left": "-", "right": "yes"}
    assert calls == Counter({"left": 1, "right": 2})


async def test_two_branches_that_interrupt_are_answered_one_after_the_other() -> None:
    calls: Counter[str] = Counter()
    runner = Runner(fan(calls, ("left", "right")), InMemoryBlobStore())
    assert (await runner.run(T, {})).interrupt == "left?"
    assert (await runner.resume(T, value="L")).interrupt == "right?"
    done = await runner.resume(T, value="R")
    assert done.state == {"left": "L", "right": "R"}
    assert calls == Counter({"left": 2, "right": 3})


async def test_the_paused_superstep_counts_the_nodes_it_ran() -> None:
    runner = Runner(fan(Counter(), ("right",)), InMemoryBlobStore())
    paused = await runner.run(T, {})
    assert paused.nodes_run == 3  # go, then left and right
    assert paused.durable


async def test_retention_does_not_drop_the_finished_branches_of_a_paused_superstep() -> None:
    """The outputs are carried to the pause before the checkpoint they were saved on is pruned."""
    calls: Counter[str] = Counter()
    runner = Runner(
        fan(calls, ("right",)), InMemoryBlobStore(), retention=RetentionPolicy.keep_latest(1)
    )
    await runner.run(T, {})
    done = await runner.resume(T, value="yes")
    assert done.state == {"left": "-", "right": "yes"}
    assert calls == Counter({"left": 1, "right": 2})
    assert len(await runner.store.history(T)) == 1


@pytest.mark.parametrize("trigger", [TriggerPolicy.ON_CHANGE, TriggerPolicy.MANUAL])
async def test_a_pause_inside_is_saved_whatever_the_trigger(trigger: TriggerPolicy) -> None:
    calls: Counter[str] = Counter()
    runner = Runner(approval(calls), InMemoryBlobStore(), trigger=trigger)
    paused = await runner.run(T, {"topic": "WAL"})
    assert paused.durable
    latest = await runner.store.load_latest(T, None)
    assert latest is not None
    assert latest.checkpoint_id == paused.checkpoint.checkpoint_id
    assert latest.state == {"topic": "WAL", "draft": "text about WAL"}
    await runner.resume(T, value=True)
    done = await runner.resume(T, value="T")
    assert done.state["title"] == "T"
    assert calls["draft"] == 1


async def test_a_damaged_interrupt_record_is_a_corrupt_checkpoint() -> None:
    runner = Runner(approval(Counter()), InMemoryBlobStore())
    paused = await runner.run(T, {"topic": "WAL"})
    damaged = paused.checkpoint.child(
        "publish",
        paused.state,
        cursor={"tasks": [{"node": "publish"}], "joins": [], "interrupts": [{"task": 3}]},
    )
    await runner.store.save_with_trace(T, damaged, runner.graph.hash_u64())
    with pytest.raises(CorruptCheckpoint, match="interrupts are not the runner's"):
        await runner.resume(T, value=True)
    with pytest.raises(CorruptCheckpoint):
        await runner.resume(T)


async def test_a_paused_parallel_superstep_on_sqlite_keeps_the_finished_branch(
    tmp_path: Path,
) -> None:
    """The carried pending write is read back by a new store, as after a restart."""
    calls: Counter[str] = Counter()
    async with SqliteBlobStore(tmp_path / "runs.db") as store:
        await Runner(fan(calls, ("right",)), store).run(T, {})
    async with SqliteBlobStore(tmp_path / "runs.db") as store:
        done = await Runner(fan(calls, ("right",)), store).resume(T, value="yes")
    assert done.state == {"left": "-", "right": "yes"}
    assert calls == Counter({"left": 1, "right": 2})
