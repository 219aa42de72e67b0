"""``flowpoint demo``: a research agent, checkpointed step by step.

It plans, acts and reviews with its events streamed as they happen, asks a human
for approval with ``interrupt()`` inside its publish node, resumes with the
answer, and is refused when its graph changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from flowpoint.cli._common import Settings, command_line, shown, unique_prefixes
from flowpoint.errors import GraphMismatch
from flowpoint.graph import (
    END,
    START,
    BuiltGraph,
    CheckpointSaved,
    Graph,
    Interrupted,
    RunFinished,
    Runner,
    RunResult,
    interrupt,
)
from flowpoint.typed import TypedCheckpointStore

TRACE = "demo/research"

# Canned sources: the demo needs no network and no model.
SOURCES = {
    "what a write-ahead log is": "a WAL appends each change before applying it",
    "how fsync makes a commit durable": "fsync returns once the bytes are on stable storage",
    "what a crash leaves behind": "replaying the WAL after a crash restores every commit",
}


class Research(msgspec.Struct):
    """What the research agent carries from step to step."""

    question: str
    plan: list[str] = []
    findings: list[str] = []
    draft: str = ""
    approved: bool = False
    published: bool = False


def build_graph(console: Console, *, changed: bool = False) -> BuiltGraph[Research]:
    """The agent's graph; ``changed`` adds a fact-checking step, as a new release might."""

    def say(node: str, text: str) -> None:
        console.print(f"  [cyan]▸ {node:<8}[/] {text}")

    def plan(state: Research) -> dict[str, Any]:
        say("plan", f"{len(SOURCES)} things to look up")
        return {"plan": list(SOURCES)}

    async def act(state: Research) -> dict[str, Any]:
        topic = state.plan[len(state.findings)]
        await asyncio.sleep(0.05)  # stands for a tool call
        say("act", f"looked up {topic!r}")
        return {"findings": [*state.findings, SOURCES[topic]]}

    def review(state: Research) -> None:
        say("review", f"{len(state.findings)} of {len(state.plan)} findings in")

    def more_to_do(state: Research) -> str:
        return "act" if len(state.findings) < len(state.plan) else "write"

    def write(state: Research) -> dict[str, Any]:
        say("write", "drafted the answer")
        text = "; ".join(state.findings)
        return {"draft": text[:1].upper() + text[1:] + "."}

    def publish(state: Research) -> dict[str, Any]:
        # The first time, this pauses the run; on resume the node runs again and
        # interrupt() returns the human's answer.
        approved = interrupt({"question": "Publish this draft?", "draft": state.draft[:40]})
        say("publish", "published, with the reviewer's approval" if approved else "held back")
        return {"approved": bool(approved), "published": bool(approved)}

    graph: Graph[Research] = Graph("research", state=Research)
    graph.add_node("plan", plan)
    graph.add_node("act", act)
    graph.add_node("review", review)
    graph.add_node("write", write)
    graph.add_node("publish", publish)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "act")
    graph.add_edge("act", "review")
    graph.add_conditional_edges("review", more_to_do, ["act", "write"])
    if changed:
        graph.add_node("fact_check", lambda state: None)
        graph.add_edge("write", "fact_check")
        graph.add_edge("fact_check", "publish")
    else:
        graph.add_edge("write", "publish")
    graph.add_edge("publish", END)
    return graph.build()


async def run_demo(url: str, console: Console | None = None) -> None:
    """Run the demo against the store at ``url`` (its demo trace is started afresh)."""
    console = console or Console(highlight=False)
    async with TypedCheckpointStore.open(url, Research) as store:
        await store.delete_trace(TRACE)
        graph = build_graph(console)
        runner = Runner(graph, store)
        console.print(
            f"[bold]flowpoint demo[/] · store {shown(url)} · trace {TRACE!r} · "
            f"graph {graph.name!r} 0x{graph.hash_u64():016x}\n"
        )

        console.print(
            "[bold]1. Run the agent, streaming its events; 'publish' asks a human with "
            "interrupt()[/]"
        )
        question = Research(question="How does a database survive a crash?")
        paused = await _streamed(console, runner.stream(TRACE, question))
        console.print(
            f"  [yellow]⏸ {paused.status}[/] after {paused.nodes_run} nodes, at step "
            f"{paused.checkpoint.step}; next: {paused.next_node!r}. The process may exit now.\n"
        )

        console.print("[bold]2. Later, maybe in another process: resume with the answer[/]")
        runner = Runner(build_graph(console), store)
        done = await _streamed(console, runner.stream_resume(TRACE, value=True))
        console.print(f"  [green]✓ {done.status}[/] after {done.nodes_run} more node(s)\n")

        console.print(
            "[bold]3. The trace's history, oldest first (headers only: no state decoded)[/]"
        )
        table = Table("step", "after", "next", "saved because", "bytes", "checkpoint id")
        infos = list(reversed(await store.history(TRACE, limit=50)))
        short = await unique_prefixes(store.store, [info.checkpoint_id for info in infos])
        for info in infos:
            source = str(info.metadata.get("source"))
            reason = {
                "input": "the run started",
                "node": "a node finished",
                "interrupt": "interrupt() asked",
            }.get(source, f"the human's answer {info.metadata.get('answer')}")
            table.add_row(
                str(info.step),
                str(info.metadata.get("node", "—")),
                info.current_node or "END",
                reason,
                str(info.size),
                short[info.checkpoint_id],
            )
        console.print(table)
        answer = next(info for info in infos if info.metadata.get("source") == "resume")
        after = next(info for info in infos if info.step == answer.step + 1)
        look = command_line(
            Settings(store=url),
            "diff",
            short[answer.checkpoint_id],
            short[after.checkpoint_id],
        )
        console.print("  flowpoint's commands take these ids. What publishing, approved, changed:")
        console.print(f"    {look}\n", markup=False, style="bold", soft_wrap=True)
        console.print("[bold]Final state[/]")
        console.print_json(msgspec.json.encode(done.state).decode())

        console.print("\n[bold]4. A new release adds a 'fact_check' node: resuming is refused[/]")
        changed = build_graph(console, changed=True)
        try:
            await Runner(changed, store).resume(TRACE)
        except GraphMismatch as refusal:
            console.print(f"  [red]✗ refused:[/] {refusal}")
        else:  # pragma: no cover - the demo's point
            raise AssertionError("a changed graph was not refused")


async def _streamed(console: Console, events: Any) -> RunResult[Research]:
    """Print a run's events as they come (the nodes say what they do); return its result."""
    async for event in events:
        if isinstance(event, CheckpointSaved):
            console.print(f"    [dim]↳ step {event.step} saved ({event.info.size} bytes)[/]")
        elif isinstance(event, Interrupted):
            console.print(f"  [yellow]? {event.node} asks:[/] {event.payload['question']}")
        elif isinstance(event, RunFinished):
            result: RunResult[Research] = event.result
            return result
    raise AssertionError("a stream ends with RunFinished")  # pragma: no cover
