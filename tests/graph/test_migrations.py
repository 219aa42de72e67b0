"""Migrations: a deploy resumes the traces of an older graph deliberately, or refuses them."""

from __future__ import annotations

import operator
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest

from flowpoint import (
    END,
    START,
    BlobCheckpointStore,
    CheckpointBlob,
    Graph,
    GraphDefinitionError,
    GraphMismatch,
    InMemoryBlobStore,
    MigrationFailed,
    RetentionPolicy,
    Runner,
    Send,
    interrupt,
    open_store,
)
from flowpoint.stores.sqlite import SqliteBlobStore
from tests.graph import support_versions as sv
from tests.graph.support_versions import TicketV1, TicketV2, TicketV3

V1_TO_V2 = "tests.graph.support_versions.v1_to_v2"
V2_TO_V3 = "tests.graph.support_versions.v2_to_v3"


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    blobs: BlobCheckpointStore = (
        InMemoryBlobStore() if request.param == "memory" else SqliteBlobStore(tmp_path / "s.db")
    )
    async with blobs:
        yield blobs


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The backends the deploy story runs on (the other tests: memory and SQLite)."""
    if request.param != "postgres":
        blobs: BlobCheckpointStore = (
            InMemoryBlobStore() if request.param == "memory" else SqliteBlobStore(tmp_path / "s.db")
        )
        async with blobs:
            yield blobs
        return
    from tests.harnesses.postgres import create_database, drop_database, url_for

    database = await create_database()
    try:
        async with open_store(url_for(database)) as postgres:
            yield postgres
    finally:
        await drop_database(database)


async def all_blobs(store: BlobCheckpointStore, trace: str) -> list[CheckpointBlob]:
    found = []
    for info in await store.history(trace, limit=1000):
        blob = await store.load(info.checkpoint_id)
        assert blob is not None
        found.append(blob)
    return found


async def seed(store: BlobCheckpointStore, paused: int, finished: int) -> None:
    pausing, finishing = sv.runner(sv.graph_v1, store), Runner(sv.graph_v1, store)
    for n in range(paused):
        assert (await pausing.run(f"paused-{n}", TicketV1(sv.TEXTS[n]))).status == "interrupted"
    for n in range(finished):
        assert (await finishing.run(f"done-{n}", TicketV1(sv.TEXTS[n]))).status == "done"


# -- the deploy story -------------------------------------------------------------------


async def test_a_deploy_resumes_paused_traces_and_leaves_the_others(any_store: Any) -> None:
    store = any_store
    await seed(store, paused=5, finished=5)
    before = {trace: await all_blobs(store, trace) for trace in await store.traces()}
    runner = sv.runner(sv.graph_v2, store)
    for n in range(5):
        trace = f"paused-{n}"
        done = await runner.resume(trace)
        text = sv.TEXTS[n]
        category = "billing" if "invoice" in text else "other"
        assert done.status == "done"
        assert done.state == TicketV2(
            text=text,
            category=category,
            answer=f"[en] About your {category} question (sent)",
            language="en",
        )
        history = await store.history(trace)
        # The originals stay as they were, below the new steps (history shows both).
        assert len(before[trace]) == 2
        assert (await all_blobs(store, trace))[-2:] == before[trace]
        migrated = history[-3]
        assert migrated.step == 2
        assert migrated.graph_hash == sv.V2
        assert migrated.current_node == "compose"
        assert dict(migrated.metadata) == {
            "source": "migration",
            "migrated_from": f"0x{sv.V1:016x}",
            "migration": V1_TO_V2,
            "interrupt": "before",
        }
        assert migrated.parent_id == before[trace][0].checkpoint_id
    for n in range(5):
        assert await all_blobs(store, f"done-{n}") == before[f"done-{n}"]


async def test_a_migrated_checkpoint_loads_as_any_other(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    runner = sv.runner(sv.graph_v2, store)
    await runner.resume("paused-0")
    loaded = await runner.store.load_latest("paused-0", sv.V2)
    assert loaded is not None
    assert isinstance(loaded.state, TicketV2)
    # The old checkpoints still load with the old graph's hash and state type.
    old = Runner(sv.graph_v1, store).store
    first = (await store.history("paused-0"))[-1]
    assert (await old.load(first.checkpoint_id, sv.V1)) is not None


async def test_migrations_do_not_change_the_fingerprint() -> None:
    bare = sv.graph(TicketV2, "compose").build()
    assert len(sv.graph_v2.migrations) == 1
    assert sv.graph_v2.hash_u64() == bare.hash_u64() == sv.V2
    assert sv.graph_v3.hash_u64() == sv.graph_v3_from_v1.hash_u64() == sv.V3


async def test_a_paused_trace_resumed_with_an_update_is_migrated_first(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    done = await sv.runner(sv.graph_v2, store).resume("paused-0", update={"language": "fr"})
    assert done.state.answer == "[fr] About your billing question (sent)"
    sources = [info.metadata["source"] for info in reversed(await store.history("paused-0"))]
    assert sources == ["input", "node", "migration", "update", "node", "node"]


async def test_a_trace_that_stopped_mid_run_continues_where_it_was(store: Any) -> None:
    # v1 (the code of a node is not part of the fingerprint), stopped by a node that failed.
    failing: Graph[Any] = Graph("support", state=TicketV1)
    failing.add_node("classify", sv.classify).add_node("draft", _boom)
    failing.add_node("send", sv.send_v1).add_edge(START, "classify")
    failing.add_edge("classify", "draft").add_edge("draft", "send").add_edge("send", END)
    assert failing.hash_u64() == sv.V1
    with pytest.raises(RuntimeError, match="boom"):
        await Runner(failing.build(), store).run("t", TicketV1("Where is my invoice?"))
    done = await Runner(sv.graph_v2, store).resume("t")
    assert done.status == "done"
    migrated = (await store.history("t"))[-3]
    assert "interrupt" not in migrated.metadata
    assert migrated.current_node == "compose"


def _boom(ticket: TicketV1) -> None:
    raise RuntimeError("boom")


async def test_a_finished_trace_resumed_on_a_new_graph_is_done(store: Any) -> None:
    await seed(store, paused=0, finished=1)
    done = await Runner(sv.graph_v2, store).resume("done-0")
    assert done.status == "done"
    assert done.nodes_run == 0
    assert done.state.answer == "About your billing question (sent)"


# -- composition and refusal -------------------------------------------------------------


async def test_migrations_compose_from_v1_through_v2_to_v3(store: Any) -> None:
    await seed(store, paused=2, finished=0)
    await sv.runner(sv.graph_v2, store).resume("paused-1")  # v2 finished it
    await sv.runner(sv.graph_v1, store).run("on-v2", TicketV1("My invoice is wrong"))
    await sv.runner(sv.graph_v2, store).resume("on-v2", update={"language": "de"})
    # paused-0 is on v1 and on-v2 paused (again) on v2: neither has run compose yet.
    v2 = sv.runner(sv.graph_v2, store)
    await v2.run("fresh-v2", TicketV2("Where is my invoice?"))
    v3 = sv.runner(sv.graph_v3, store)
    from_v1 = await v3.resume("paused-0")
    assert from_v1.state == TicketV3(
        "Where is my invoice?", "billing", "[en] About your billing question (sent)", "en", 2
    )
    assert (await store.history("paused-0"))[-3].metadata["migration"] == (
        f"{V1_TO_V2}, {V2_TO_V3}"
    )
    from_v2 = await v3.resume("fresh-v2")
    assert from_v2.state.priority == 2
    migrated = (await store.history("fresh-v2"))[-3]
    assert migrated.metadata["migrated_from"] == f"0x{sv.V2:016x}"
    assert migrated.metadata["migration"] == V2_TO_V3


async def test_a_graph_without_a_path_refuses_and_lists_its_migrations(store: Any) -> None:
    await sv.runner(sv.graph_v2, store).run("on-v2", TicketV2("Hello"))
    before = await all_blobs(store, "on-v2")
    with pytest.raises(GraphMismatch) as refused:
        await sv.runner(sv.graph_v3_from_v1, store).resume("on-v2")
    assert refused.value.expected == sv.V3
    assert refused.value.actual == sv.V2
    assert refused.value.migrations == (sv.V1,)
    assert f"migrations from 0x{sv.V1:016x} only" in str(refused.value)
    assert f"@graph.migration(from_hash=0x{sv.V2:016x}" in str(refused.value)
    assert await all_blobs(store, "on-v2") == before


async def test_a_graph_without_migrations_refuses_as_before(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    with pytest.raises(GraphMismatch) as refused:
        await Runner(sv.graph(TicketV2, "compose").build(), store).resume("paused-0")
    assert refused.value.migrations == ()
    assert "migrations from" not in str(refused.value)


# -- forks onto a newer graph -------------------------------------------------------------


async def test_a_fork_of_an_older_graphs_checkpoint_is_migrated(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    before = await all_blobs(store, "paused-0")
    paused = (await store.history("paused-0"))[0]  # before draft, on v1
    runner = sv.runner(sv.graph_v2, store)
    forked = await runner.fork(paused.checkpoint_id, "forked")
    assert isinstance(forked.state, TicketV2)
    assert forked.state == TicketV2("Where is my invoice?", "billing", "", "en")
    assert forked.current_node == "compose"
    assert forked.parent_id == paused.checkpoint_id
    assert dict(forked.metadata) == {
        "source": "fork",
        "migrated_from": f"0x{sv.V1:016x}",
        "migration": V1_TO_V2,
        "forked_from": str(paused.checkpoint_id),
        "forked_from_step": 1,
    }
    [info] = await store.history("forked")
    assert (info.graph_hash, info.step) == (sv.V2, 0)
    # A fork pauses again before the node it stands at, as any fork does.
    assert (await runner.resume("forked")).status == "interrupted"
    done = await runner.resume("forked")
    assert done.state.answer == "[en] About your billing question (sent)"
    assert await all_blobs(store, "paused-0") == before


async def test_any_old_checkpoint_forks_through_the_whole_chain(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    first = (await store.history("paused-0"))[-1]  # the input, before classify
    v3 = Runner(sv.graph_v3, store)
    forked = await v3.fork(str(first.checkpoint_id), "from-the-start")
    assert forked.current_node == "classify"
    assert forked.metadata["migration"] == f"{V1_TO_V2}, {V2_TO_V3}"
    # Migrated as it stood, before classify: no category yet, so the lower priority.
    assert forked.state == TicketV3("Where is my invoice?", "", "", "en", 1)
    done = await v3.resume("from-the-start")
    assert done.status == "done"
    assert done.state == TicketV3(
        "Where is my invoice?", "billing", "[en] About your billing question (sent)", "en", 1
    )


async def test_a_migration_applies_to_a_fork_even_with_the_override(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    paused = (await store.history("paused-0"))[0]
    forked = await Runner(sv.graph_v2, store).fork(
        paused.checkpoint_id, "forked", allow_graph_change=True
    )
    assert isinstance(forked.state, TicketV2)
    assert forked.metadata["migration"] == V1_TO_V2


async def test_a_fork_whose_migration_fails_writes_nothing(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    paused = (await store.history("paused-0"))[0]
    runner = sv.runner(v2_with(raises).build(), store)
    with pytest.raises(MigrationFailed) as failed:
        await runner.fork(paused.checkpoint_id, "forked")
    assert failed.value.trace_id == "forked"
    assert failed.value.from_hash == sv.V1
    assert "it raised KeyError" in str(failed.value)
    assert await store.history("forked") == []


async def test_a_fork_from_a_graph_without_a_path_is_refused(store: Any) -> None:
    await sv.runner(sv.graph_v2, store).run("on-v2", TicketV2("Hello"))
    on_v2 = (await store.history("on-v2"))[0]
    with pytest.raises(GraphMismatch) as refused:
        await sv.runner(sv.graph_v3_from_v1, store).fork(on_v2.checkpoint_id, "forked")
    assert refused.value.migrations == (sv.V1,)
    assert "allow_graph_change=True" in str(refused.value)
    assert f"@graph.migration(from_hash=0x{sv.V2:016x}" in str(refused.value)
    assert await store.history("forked") == []


# -- the migration's own mistakes ------------------------------------------------------------


def v2_with(function: Any, **options: Any) -> Graph[Any]:
    g = sv.graph(TicketV2, "compose")
    options = {"from_hash": sv.V1, "state": TicketV1, "nodes": {"draft": "compose"}} | options
    g.migration(**options)(function)
    return g


def raises(old: TicketV1) -> TicketV2:
    raise KeyError("no reply")


def returns_old(old: TicketV1) -> TicketV1:
    return old


def returns_bad_field(old: TicketV1) -> TicketV2:
    return TicketV2(text=old.text, answer=5)  # type: ignore[arg-type]


@dataclass
class NotV1:
    ticket_id: int
    text: int


async def async_v1_to_v2(old: TicketV1) -> TicketV2:
    return sv.v1_to_v2(old)


@pytest.mark.parametrize(
    ("function", "options", "reason"),
    [
        (raises, {}, "it raised KeyError: 'no reply'"),
        (returns_old, {}, "does not fit TicketV2: it is a TicketV1"),
        (returns_bad_field, {}, "answer"),
        (sv.v1_to_v2, {"nodes": {}}, "continues at node 'draft', which graph 'support' does not"),
        (sv.v1_to_v2, {"state": NotV1}, "does not decode as NotV1, the migration's state"),
    ],
    ids=["raises", "wrong-type", "wrong-field", "unmapped-node", "wrong-old-state"],
)
async def test_a_failing_migration_is_reported_and_writes_nothing(
    store: Any, function: Any, options: dict[str, Any], reason: str
) -> None:
    await seed(store, paused=2, finished=0)
    before = await all_blobs(store, "paused-0")
    runner = sv.runner(v2_with(function, **options).build(), store)
    with pytest.raises(MigrationFailed) as failed:
        await runner.resume("paused-0")
    assert reason in str(failed.value)
    assert failed.value.trace_id == "paused-0"
    assert failed.value.from_hash == sv.V1
    assert await all_blobs(store, "paused-0") == before
    if function is raises:
        assert failed.value.migration == "tests.graph.test_migrations.raises"
        assert isinstance(failed.value.__cause__, KeyError)


async def test_an_async_migration(store: Any) -> None:
    await seed(store, paused=1, finished=0)
    done = await sv.runner(v2_with(async_v1_to_v2).build(), store).resume("paused-0")
    assert done.state.answer == "[en] About your billing question (sent)"


# -- hostile declarations ---------------------------------------------------------------


def test_two_migrations_from_one_hash_are_refused() -> None:
    g = v2_with(sv.v1_to_v2)
    with pytest.raises(GraphDefinitionError, match=r"has a migration from 0x.* already"):
        g.migration(from_hash=sv.V1, state=TicketV1)(sv.v1_to_v2)


def test_a_migration_from_the_graphs_own_hash_is_refused() -> None:
    g = v2_with(sv.v1_to_v2, from_hash=sv.V2)
    with pytest.raises(GraphDefinitionError, match="the graph's own hash"):
        g.build()


@pytest.mark.parametrize("bad", ["0x8bb2362380efe044", True, -1, 2**64, 1.0, None])
def test_a_from_hash_that_is_not_a_hash_is_refused(bad: Any) -> None:
    with pytest.raises(GraphDefinitionError, match="from_hash must be"):
        v2_with(sv.v1_to_v2, from_hash=bad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"to_hash": 12345}, "leads to 0x0000000000003039, which no migration"),
        ({"nodes": {"draft": "write"}}, r"maps nodes to \['write'\], which the graph does not"),
        ({"nodes": {"draft": END}}, "nodes must map node names to node names"),
        ({"nodes": ["draft"]}, "nodes must map old node names to new ones"),
        ({"state": Any}, "which flowpoint cannot decode"),
        ({"to_hash": sv.V1}, "to itself"),
    ],
)
def test_bad_declarations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphDefinitionError, match=message):
        v2_with(sv.v1_to_v2, **options).build()


def test_a_function_that_does_not_take_the_old_state_is_refused() -> None:
    def two(old: TicketV1, extra: int) -> TicketV2:
        raise AssertionError

    with pytest.raises(GraphDefinitionError, match="exactly one argument"):
        v2_with(two)
    with pytest.raises(GraphDefinitionError, match="must decorate a function"):
        v2_with(42)


def test_migrations_that_lead_in_a_circle_are_refused() -> None:
    g = sv.graph(TicketV2, "compose")
    g.migration(from_hash=1, state=TicketV1, to_hash=2)(sv.v1_to_v2)
    g.migration(from_hash=2, state=TicketV1, to_hash=1)(sv.v1_to_v2)
    with pytest.raises(GraphDefinitionError, match="in a circle"):
        g.build()


# -- pending writes, joins and Sends ----------------------------------------------------------


@dataclass
class Research:
    topic: str
    notes: Annotated[list[str], operator.add] = field(default_factory=list)


@dataclass
class ResearchV2:
    topic: str
    findings: Annotated[list[str], operator.add] = field(default_factory=list)


def research_v2(old: Research) -> ResearchV2:
    return ResearchV2(topic=old.topic, findings=list(old.notes))


class Parallel:
    """``split`` fans out to ``web`` and ``docs``; ``docs -> more``; ``[web, more] -> write``."""

    def __init__(self, fail_docs: bool = False) -> None:
        self.calls: Counter[str] = Counter()
        self.fail_docs = fail_docs

    def node(self, name: str, field_name: str) -> Any:
        def body(state: Any) -> dict[str, list[str]]:
            self.calls[name] += 1
            if name == "docs" and self.fail_docs:
                raise RuntimeError("docs failed")
            return {field_name: [name]}

        return body

    def build(self, state: Any, web: str, more: str) -> Any:
        field_name = "notes" if state is Research else "findings"
        g: Graph[Any] = Graph("research", state=state)
        for name in ("split", web, "docs", more, "write"):
            g.add_node(name, self.node(name, field_name))
        g.add_edge(START, "split").add_edge("split", web).add_edge("split", "docs")
        g.add_edge("docs", more).add_edge([web, more], "write").add_edge("write", END)
        return g


async def test_finished_branches_of_a_stopped_superstep_run_again(store: Any) -> None:
    old = Parallel(fail_docs=True)
    with pytest.raises(RuntimeError, match="docs failed"):
        await Runner(old.build(Research, "web", "more").build(), store).run("r", Research("x"))
    assert old.calls == {"split": 1, "web": 1, "docs": 1}  # web's update is a pending write
    new = Parallel()
    g = new.build(ResearchV2, "search", "more")
    g.migration(
        from_hash=Parallel().build(Research, "web", "more").hash_u64(),
        state=Research,
        nodes={"web": "search"},
    )(research_v2)
    done = await Runner(g.build(), store).resume("r")
    assert new.calls == {"search": 1, "docs": 1, "more": 1, "write": 1}
    assert done.state == ResearchV2("x", ["split", "docs", "search", "more", "write"])


async def test_a_join_under_way_is_renamed(store: Any) -> None:
    old = Parallel()
    await Runner(old.build(Research, "web", "more").build(), store, interrupt_before=["more"]).run(
        "r", Research("x")
    )
    latest = (await store.history("r"))[0]
    assert latest.current_node == "more"  # web has run: the join waits for more
    new = Parallel()
    g = new.build(ResearchV2, "search", "deeper")
    g.migration(
        from_hash=old.build(Research, "web", "more").hash_u64(),
        state=Research,
        nodes={"web": "search", "more": "deeper"},
    )(research_v2)
    done = await Runner(g.build(), store, interrupt_before=["deeper"]).resume("r")
    assert new.calls == {"deeper": 1, "write": 1}  # the join knew search had run
    assert done.state.findings == ["split", "docs", "web", "deeper", "write"]


async def test_a_join_that_the_new_graph_lacks_is_refused(store: Any) -> None:
    old = Parallel()
    await Runner(old.build(Research, "web", "more").build(), store, interrupt_before=["more"]).run(
        "r", Research("x")
    )
    g = Parallel().build(ResearchV2, "search", "more")  # web renamed, but not mapped
    g.add_node("web", Parallel().node("web", "findings")).add_edge("split", "web")
    g.add_edge("web", END)
    g.migration(from_hash=old.build(Research, "web", "more").hash_u64(), state=Research, nodes={})(
        research_v2
    )
    with pytest.raises(MigrationFailed, match=r"a join of \['more', 'web'\] into 'write'"):
        await Runner(g.build(), store).resume("r")


@dataclass
class Pages:
    urls: list[str]
    summaries: Annotated[list[str], operator.add] = field(default_factory=list)


@dataclass
class Page:
    url: str


def pages_graph(target: str, summarise: Any) -> Graph[Any]:
    def fan_out(state: Pages) -> list[Send]:
        return [Send(target, Page(url)) for url in state.urls]

    g: Graph[Any] = Graph("pages", state=Pages)
    g.add_node("split", lambda state: None).add_node(target, summarise)
    g.add_edge(START, "split").add_conditional_edges("split", fan_out, [target])
    g.add_edge(target, END)
    return g


def summarise(page: Page) -> dict[str, list[str]]:
    return {"summaries": [f"summary of {page.url}"]}


def same_pages(old: Pages) -> Pages:
    return Pages(urls=old.urls, summaries=old.summaries)


async def test_send_tasks_move_with_their_arguments(store: Any) -> None:
    old = pages_graph("summarise", summarise)
    await Runner(old.build(), store, interrupt_before=["summarise"]).run("p", Pages(["a", "b"]))
    g = pages_graph("digest", summarise)
    g.migration(from_hash=old.hash_u64(), state=Pages, nodes={"summarise": "digest"})(same_pages)
    done = await Runner(g.build(), store).resume("p")
    assert sorted(done.state.summaries) == ["summary of a", "summary of b"]
    assert (await store.history("p"))[-3].current_node == "digest x2"


async def test_a_send_argument_the_new_node_cannot_take_is_refused(store: Any) -> None:
    old = pages_graph("summarise", summarise)
    await Runner(old.build(), store, interrupt_before=["summarise"]).run("p", Pages(["a"]))

    def takes_int(page: int) -> None:
        raise AssertionError

    g = pages_graph("summarise", takes_int)
    g.add_node("x", lambda state: None).add_edge("summarise", "x").add_edge("x", END)
    g.migration(from_hash=old.hash_u64(), state=Pages)(same_pages)
    with pytest.raises(MigrationFailed, match="the Send task 'summarise#0' does not fit"):
        await Runner(g.build(), store).resume("p")


# -- chains of deltas ------------------------------------------------------------------------

DELTA_OF = "flowpoint.delta_of"


@dataclass
class Chat:
    profile: str
    messages: list[str] = field(default_factory=list)


@dataclass
class ChatV2:
    profile: str
    turns: list[str] = field(default_factory=list)


def chat_graph(state: Any, field_name: str) -> Graph[Any]:
    def say(name: str) -> Any:
        def body(chat: Any) -> dict[str, list[str]]:
            words = " ".join(f"{name}{n}{len(getattr(chat, field_name))}" for n in range(30))
            return {field_name: [*getattr(chat, field_name), f"{name} {words}"]}

        return body

    g: Graph[Any] = Graph("chat", state=state)
    for name in ("a", "b", "c", "d"):
        g.add_node(name, say(name))
    g.add_edge(START, "a").add_edge("a", "b").add_edge("b", "c").add_edge("c", "d")
    g.add_edge("d", END)
    return g


def chat_v2(old: Chat) -> ChatV2:
    return ChatV2(profile=old.profile, turns=old.messages)


async def test_a_latest_checkpoint_stored_as_changes_is_migrated(store: Any) -> None:
    old = chat_graph(Chat, "messages")
    rng = random.Random(3)
    profile = " ".join("".join(rng.choices("abcdefghij", k=6)) for _ in range(400))
    await Runner(old.build(), store, interrupt_before=["d"]).run("c", Chat(profile))
    assert DELTA_OF in (await store.history("c"))[0].metadata  # the latest is a delta
    g = chat_graph(ChatV2, "turns")
    g.migration(from_hash=old.hash_u64(), state=Chat)(chat_v2)
    runner = Runner(g.build(), store)
    done = await runner.resume("c")
    assert done.state.profile == profile
    assert [turn.split()[0] for turn in done.state.turns] == ["a", "b", "c", "d"]
    # A fresh reader reads every checkpoint after the migration back, down its chain.
    again = Runner(g.build(), store)
    for info in await store.history("c", limit=2):
        loaded = await again.store.load(info.checkpoint_id, g.hash_u64())
        assert loaded is not None
        assert loaded.state.profile == profile


# -- two writers at once -----------------------------------------------------------------------


class Racing(InMemoryBlobStore):
    """Runs ``race`` once, just after the ``when``-th read of a trace's latest checkpoint."""

    def __init__(self, when: int) -> None:
        super().__init__()
        self.when = when
        self.reads = 0
        self.race: Any = None

    async def _load_latest(self, trace_id: Any) -> CheckpointBlob | None:
        blob = await super()._load_latest(trace_id)
        self.reads += 1
        if self.reads == self.when and self.race is not None:
            race, self.race = self.race, None
            await race()
        return blob


async def test_a_trace_migrated_by_another_writer_meanwhile_is_read_again() -> None:
    store = Racing(when=0)
    await seed(store, paused=1, finished=0)
    other = sv.runner(sv.graph_v2, store)

    async def migrate_elsewhere() -> None:
        moved = await other._migrator.plan("paused-0", sv.V1)
        assert moved is not None
        await other.store.save_with_trace("paused-0", moved.checkpoint, sv.V2)

    # Just after the resume below has read the old checkpoint to migrate it.
    store.reads, store.when, store.race = 0, 2, migrate_elsewhere
    done = await sv.runner(sv.graph_v2, store).resume("paused-0")
    assert store.race is None  # the race ran
    assert done.status == "done"
    sources = [info.metadata["source"] for info in reversed(await store.history("paused-0"))]
    assert sources == ["input", "node", "migration", "node", "node"]  # migrated once


async def test_retention_after_a_migration_keeps_what_it_keeps_readable(store: Any) -> None:
    old = chat_graph(Chat, "messages")
    rng = random.Random(5)
    profile = " ".join("".join(rng.choices("abcdefghij", k=6)) for _ in range(400))
    await Runner(old.build(), store, interrupt_before=["c"]).run("c", Chat(profile))
    g = chat_graph(ChatV2, "turns")
    g.migration(from_hash=old.hash_u64(), state=Chat)(chat_v2)
    built = g.build()
    done = await Runner(built, store, retention=RetentionPolicy.keep_latest(2)).resume("c")
    assert done.status == "done"
    kept = await store.history("c")
    assert [info.graph_hash for info in kept] == [built.hash_u64()] * 2
    fresh = Runner(built, store)
    for info in kept:
        loaded = await fresh.store.load(info.checkpoint_id, built.hash_u64())
        assert loaded is not None
        assert loaded.state.profile == profile


# -- a trace paused inside a node --------------------------------------------------------


@dataclass
class AskedV1:
    text: str
    ok: str = ""


@dataclass
class AskedV2:
    text: str
    approved: str = ""
    language: str = "en"


def _ask_v1(state: AskedV1) -> dict[str, Any]:
    return {"ok": interrupt("publish?")}


def _ask_v2(state: AskedV2) -> dict[str, Any]:
    first = interrupt("publish?")
    return {"approved": f"{first}/{interrupt('when?')}"}


async def test_a_trace_paused_inside_a_node_keeps_its_question_and_answers(store: Any) -> None:
    v1 = Graph("asked", state=AskedV1).add_node("ask", _ask_v1)
    built_v1 = v1.add_edge(START, "ask").add_edge("ask", END).build()
    v2 = Graph("asked", state=AskedV2).add_node("approve", _ask_v2)
    v2.add_edge(START, "approve").add_edge("approve", END)

    @v2.migration(from_hash=built_v1.hash_u64(), state=AskedV1, nodes={"ask": "approve"})
    def forward(old: AskedV1) -> AskedV2:
        return AskedV2(text=old.text, approved=old.ok)

    paused = await Runner(built_v1, store).run("asked-1", AskedV1("hi"))
    assert (paused.status, paused.interrupt) == ("interrupted", "publish?")
    runner = Runner(v2.build(), store)
    # The question stays asked across the deploy: the answer goes to the renamed node.
    asked = await runner.resume("asked-1", value="yes")
    assert (asked.status, asked.interrupt) == ("interrupted", "when?")
    done = await runner.resume("asked-1", value="monday")
    assert done.status == "done"
    assert done.state == AskedV2(text="hi", approved="yes/monday")
