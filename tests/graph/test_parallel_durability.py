"""Parallel runs are durable: cursors in checkpoints, pending writes, resume without rerunning."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import pytest

from flowpoint import (
    END,
    START,
    Checkpoint,
    CorruptCheckpoint,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    Runner,
    Send,
    StorageError,
    TriggerPolicy,
    TypedCheckpointStore,
)
from flowpoint.checkpoint import TaskWrite
from flowpoint.graph._runner import ERROR_CHANNEL, ERROR_INDEX, OUTPUT_INDEX, UPDATE_CHANNEL
from flowpoint.graph._superstep import GroupCommit
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.graph.doubles import FailingBlobStore

T = "trace-1"


@dataclasses.dataclass
class Notes:
    log: Annotated[list[str], operator.add] = dataclasses.field(default_factory=list)
    done: bool = False


class Flaky:
    """Nodes that count their calls, and raise on the attempts listed for them."""

    def __init__(self, fail: dict[str, set[int]] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.fail = fail or {}

    def node(self, name: str, delay: float = 0.0) -> Any:
        async def body(state: Any) -> dict[str, Any]:
            self.calls[name] += 1
            await asyncio.sleep(delay)
            if self.calls[name] in self.fail.get(name, set()):
                raise RuntimeError(f"{name} failed")
            return {"log": [name]}

        return body


def fan(flaky: Flaky, branches: tuple[str, ...] = ("docs", "web", "wiki")) -> Graph[Notes]:
    g = Graph("fan", state=Notes).add_node("plan", flaky.node("plan"))
    g.add_node("write", flaky.node("write")).add_edge(START, "plan")
    for name in branches:
        g.add_node(name, flaky.node(name)).add_edge("plan", name)
    g.add_edge(list(branches), "write").add_edge("write", END)
    return g


async def test_a_failed_branch_is_the_only_one_a_resume_runs() -> None:
    flaky, store = Flaky({"web": {1}}), FailingBlobStore()
    runner = Runner(fan(flaky), store)
    with pytest.raises(RuntimeError, match="web failed"):
        await runner.run(T, Notes())
    # The superstep's checkpoint was not written; its tasks' outputs were, as each finished.
    assert store.saves == 2
    outputs = {(w.task_id, w.index): overwrite for w, overwrite in store.written}
    assert outputs == {("docs", OUTPUT_INDEX): False, ("wiki", OUTPUT_INDEX): False} | {
        ("web", ERROR_INDEX): True
    }
    typed = TypedCheckpointStore(store)
    (docs, error, wiki) = await typed.load_writes(store.saved[1].checkpoint_id)
    assert error == TaskWrite(
        "web",
        ERROR_INDEX,
        ERROR_CHANNEL,
        {"type": "builtins.RuntimeError", "message": "web failed"},
    )
    assert (docs.channel, docs.value, wiki.value) == (
        UPDATE_CHANNEL,
        {"log": ["docs"]},
        {"log": ["wiki"]},
    )

    result = await runner.resume(T)
    assert result.status == "done"
    assert result.state.log == ["plan", "docs", "web", "wiki", "write"]
    assert result.nodes_run == 2  # web again, then write
    assert flaky.calls == Counter({"plan": 1, "docs": 1, "web": 2, "wiki": 1, "write": 1})
    reference = await Runner(fan(Flaky()), InMemoryBlobStore()).run(T, Notes())
    assert result.state == reference.state


async def test_outputs_that_come_during_a_save_are_saved_together() -> None:
    batches: list[list[str]] = []

    async def save(items: list[str]) -> None:
        batches.append(items)
        await asyncio.sleep(0.01)
        if "bad" in items:
            raise StorageError("injected")

    commit: GroupCommit[str] = GroupCommit(save)
    await asyncio.gather(*(commit.put(item) for item in "abcde"))
    assert batches == [["a"], ["b", "c", "d", "e"]]
    batches.clear()
    results = await asyncio.gather(
        *(commit.put(item) for item in ("x", "bad", "y")), return_exceptions=True
    )
    assert batches == [["x"], ["bad", "y"]]
    assert results[0] is None
    assert all(isinstance(result, StorageError) for result in results[1:])


async def test_a_parallel_superstep_commits_its_outputs_in_few_saves() -> None:
    store = FailingBlobStore(save_delay=0.01)  # a store whose commits take time
    branches = tuple(f"b{i}" for i in range(8))
    await Runner(fan(Flaky(), branches), store).run(T, Notes())
    assert len(store.written) == 8
    assert store.write_calls < 8


async def test_a_second_failure_replaces_the_recorded_error() -> None:
    flaky, store = Flaky({"web": {1, 2}}), FailingBlobStore()
    runner = Runner(fan(flaky), store)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="web failed"):
            await (runner.run(T, Notes()) if flaky.calls["web"] == 0 else runner.resume(T))
    errors = [w for w, overwrite in store.written if w.index == ERROR_INDEX]
    assert len(errors) == 2
    assert flaky.calls["docs"] == 1
    (_, error, _) = await TypedCheckpointStore(store).load_writes(store.saved[1].checkpoint_id)
    assert (error.task_id, error.index) == ("web", ERROR_INDEX)
    assert (await runner.resume(T)).status == "done"


async def test_a_lone_node_saves_no_output_write_but_its_error() -> None:
    store = FailingBlobStore()
    flaky = Flaky({"b": {1}})
    g = Graph("line", state=Notes).add_node("a", flaky.node("a")).add_node("b", flaky.node("b"))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("b", END)
    runner = Runner(g, store)
    with pytest.raises(RuntimeError):
        await runner.run(T, Notes())
    assert [(w.task_id, w.index) for w, _ in store.written] == [("b", ERROR_INDEX)]
    await runner.resume(T)
    assert [(w.task_id, w.index) for w, _ in store.written] == [("b", ERROR_INDEX)]


async def test_a_store_that_fails_pending_writes() -> None:
    store = FailingBlobStore(fail_writes=True)
    with pytest.raises(StorageError, match="save_writes"):
        await Runner(fan(Flaky()), store).run(T, Notes())
    store = FailingBlobStore(fail_writes=True)
    with pytest.warns(RuntimeWarning, match="runs again"):
        result = await Runner(fan(Flaky()), store, on_save_error="warn").run(T, Notes())
    assert result.status == "done"
    # An error that cannot be recorded is raised all the same, with a note.
    store = FailingBlobStore(fail_writes=True)
    g = Graph("one", state=Notes).add_node("a", Flaky({"a": {1}}).node("a"))
    g.add_edge(START, "a").add_edge("a", END)
    with pytest.raises(RuntimeError, match="a failed") as caught:
        await Runner(g, store).run(T, Notes())
    assert any("was not recorded" in note for note in caught.value.__notes__)


async def test_no_pending_writes_from_a_position_that_was_not_saved() -> None:
    store = FailingBlobStore()
    g = Graph("quiet", state=Notes).add_node("plan", lambda s: None)
    for name in ("x", "y"):
        g.add_node(name, lambda s, n=name: {"log": [n]}).add_edge("plan", name)
        g.add_edge(name, END)
    g.add_edge(START, "plan")
    # plan changes nothing: ON_CHANGE does not save its position, so x and y start from
    # an unsaved one, and a resume reruns them from the input's checkpoint anyway.
    await Runner(g, store, trigger=TriggerPolicy.ON_CHANGE).run(T, Notes())
    assert store.written == []
    assert store.saves == 2


# -- cursors: what runs next survives the process ---------------------------------------


@dataclasses.dataclass
class Doc:
    title: str
    words: int


@dataclasses.dataclass
class Docs:
    docs: list[Doc]
    summaries: Annotated[list[str], operator.add] = dataclasses.field(default_factory=list)


def mapped(seen: list[Any]) -> Graph[Docs]:
    def split(state: Docs) -> list[Send]:
        return [Send("summarise", doc) for doc in state.docs]

    async def summarise(doc: Doc) -> dict[str, Any]:
        seen.append(doc)
        return {"summaries": [f"{doc.title}:{doc.words}"]}

    g = Graph("map", state=Docs).add_node("split", lambda s: None)
    g.add_node("summarise", summarise).add_edge(START, "split")
    g.add_conditional_edges("split", split, ["summarise"]).add_edge("summarise", END)
    return g


async def test_sends_survive_a_pause_and_a_new_process(tmp_path: Path) -> None:
    seen: list[Any] = []
    docs = [Doc("a", 1), Doc("b", 2)]
    async with SqliteBlobStore(tmp_path / "map.db") as store:
        paused = await Runner(mapped(seen), store, interrupt_before=["summarise"]).run(
            T, Docs(docs)
        )
    assert (paused.status, paused.next_node) == ("interrupted", "summarise x2")
    assert paused.checkpoint.cursor["tasks"][1] == {
        "node": "summarise",
        "send": 1,
        "arg": {"title": "b", "words": 2},
    }
    async with SqliteBlobStore(tmp_path / "map.db") as store:  # as another process would
        done = await Runner(mapped(seen), store).resume(T)
    assert done.state.summaries == ["a:1", "b:2"]
    assert seen == docs  # typed again as Doc


async def test_a_join_under_way_survives_a_pause(tmp_path: Path) -> None:
    flaky = Flaky()
    g = Graph("wait", state=Notes)
    for name in ("plan", "fast", "slow1", "slow2", "write"):
        g.add_node(name, flaky.node(name))
    g.add_edge(START, "plan").add_edge("plan", "fast").add_edge("plan", "slow1")
    g.add_edge("slow1", "slow2").add_edge(["fast", "slow2"], "write").add_edge("write", END)
    async with SqliteBlobStore(tmp_path / "join.db") as store:
        paused = await Runner(g, store, interrupt_after=["fast"]).run(T, Notes())
    assert paused.next_node == "slow2"
    assert paused.checkpoint.cursor == {
        "tasks": [{"node": "slow2"}],
        "joins": [{"to": "write", "from": ["fast", "slow2"], "done": ["fast"]}],
    }
    async with SqliteBlobStore(tmp_path / "join.db") as store:
        done = await Runner(g, store).resume(T)
    assert done.state.log == ["plan", "fast", "slow1", "slow2", "write"]
    assert flaky.calls["write"] == 1


async def test_a_pause_before_a_parallel_superstep_resumes_with_an_update() -> None:
    flaky = Flaky()
    runner = Runner(fan(flaky), InMemoryBlobStore(), interrupt_before=["web"])
    paused = await runner.run(T, Notes())
    assert paused.next_nodes == ("docs", "web", "wiki")
    done = await runner.resume(T, update={"log": ["human"]})
    assert done.state.log == ["plan", "human", "docs", "web", "wiki", "write"]


async def test_a_parallel_checkpoint_forks_with_its_cursor() -> None:
    flaky, store = Flaky(), FailingBlobStore()
    runner = Runner(fan(flaky), store, interrupt_before=["web"])
    paused = await runner.run(T, Notes())
    forked = await runner.fork(paused.checkpoint.checkpoint_id, "trace-2")
    assert forked.cursor == paused.checkpoint.cursor
    done = await Runner(fan(flaky), store).resume("trace-2")
    assert done.state.log == ["plan", "docs", "web", "wiki", "write"]
    smaller = Runner(fan(Flaky(), ("docs", "wiki")), store)
    with pytest.raises(GraphDefinitionError, match="'web'"):
        await smaller.fork(paused.checkpoint.checkpoint_id, "trace-3", allow_graph_change=True)


@pytest.mark.parametrize(
    ("cursor", "error", "message"),
    [
        ({"tasks": [{"node": 3}]}, CorruptCheckpoint, "not the runner's"),
        ({"tasks": "docs"}, CorruptCheckpoint, "not the runner's"),
        ({"tasks": [{"node": "docs"}, {"node": "docs"}]}, CorruptCheckpoint, "twice"),
        ({"tasks": [{"node": "docs", "send": -1}]}, CorruptCheckpoint, "below 0"),
        (
            {"joins": [{"to": "write", "from": ["docs", "web", "wiki"], "done": ["plan"]}]},
            CorruptCheckpoint,
            "progress wrong",
        ),
        (
            {"joins": [{"to": "write", "from": ["docs", "web", "wiki"], "done": []}]},
            CorruptCheckpoint,
            "progress wrong",
        ),
        ({"tasks": [{"node": "ghost"}]}, GraphDefinitionError, "'ghost'"),
        (
            {"joins": [{"to": "plan", "from": ["docs", "web"], "done": ["web"]}]},
            GraphDefinitionError,
            "join",
        ),
    ],
)
async def test_a_cursor_that_is_not_the_runners_is_refused(
    cursor: dict[str, Any], error: type[Exception], message: str
) -> None:
    runner = Runner(fan(Flaky()), InMemoryBlobStore())
    checkpoint = Checkpoint.first("plan", Notes(), cursor=cursor)
    await runner.store.save_with_trace(T, checkpoint, runner.graph.hash_u64())
    with pytest.raises(error, match=message):
        await runner.resume(T)
