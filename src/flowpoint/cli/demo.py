"""``flowpoint demo``: a research run checkpointed step by step, interrupted and resumed."""

from __future__ import annotations

import msgspec
from rich.console import Console
from rich.table import Table

from flowpoint.checkpoint import Checkpoint
from flowpoint.errors import GraphMismatch
from flowpoint.sync import SyncCheckpointStore

TRACE = "demo/research"
GRAPH_V1 = 0x7E57_0001_D3E0_0001
GRAPH_V2 = 0x7E57_0001_D3E0_0002


class Research(msgspec.Struct):
    """The demo's state: what a small research agent keeps between steps."""

    question: str
    plan: list[str] = []
    findings: list[str] = []
    draft: str = ""


STEPS: list[tuple[str, str | None]] = [
    ("plan", "search"),
    ("search", "read"),
    ("read", "draft"),
    ("draft", "review"),
    ("review", None),
]


def _advance(node: str, state: Research) -> Research:
    """What each step of the pretend agent does to the state (no network, no model)."""
    if node == "plan":
        return msgspec.structs.replace(state, plan=["search the archive", "read two papers"])
    if node == "search":
        return msgspec.structs.replace(state, findings=[*state.findings, "found 2 papers"])
    if node == "read":
        return msgspec.structs.replace(state, findings=[*state.findings, "papers agree on WAL"])
    if node == "draft":
        return msgspec.structs.replace(state, draft="Use write-ahead logging.")
    return msgspec.structs.replace(state, draft=state.draft + " (reviewed)")


def _run_until(
    store: SyncCheckpointStore[Research],
    console: Console,
    checkpoint: Checkpoint[Research],
    stop_before: str | None,
) -> Checkpoint[Research]:
    node = checkpoint.current_node
    while node is not None and node != stop_before:
        following = dict(STEPS)[node]
        checkpoint = checkpoint.child(following, _advance(node, checkpoint.state))
        info = store.save_with_trace(TRACE, checkpoint, GRAPH_V1)
        console.print(
            f"  [green]✓[/] step {info.step}: ran [bold]{node}[/], saved {info.size} bytes"
            f" → next: {following or 'done'}"
        )
        node = following
    return checkpoint


def run_demo(url: str, console: Console | None = None) -> None:
    """Run the demo against the store at ``url`` (its demo trace is started afresh)."""
    console = console or Console()
    with SyncCheckpointStore.open(url, Research) as store:
        store.delete_trace(TRACE)
        console.print(f"[bold]flowpoint demo[/] · store {url} · trace {TRACE!r}\n")

        console.print("[bold]1. Run until the process stops before 'draft'[/]")
        first = Checkpoint.first("plan", Research(question="How do databases survive a crash?"))
        store.save_with_trace(TRACE, first, GRAPH_V1)
        _run_until(store, console, first, stop_before="draft")
        console.print("  [yellow]✗ process stopped[/] (nothing kept in memory)\n")

        console.print("[bold]2. Resume from the latest checkpoint[/]")
        latest = store.load_latest(TRACE, GRAPH_V1)
        assert latest is not None
        console.print(f"  loaded step {latest.step}, continuing at [bold]{latest.current_node}[/]")
        final = _run_until(store, console, latest, stop_before=None)

        console.print("\n[bold]3. History, newest first (headers only, no state decoded)[/]")
        table = Table("step", "checkpoint id", "next node", "bytes", "created (UTC)")
        for info in store.history(TRACE):
            table.add_row(
                str(info.step),
                str(info.checkpoint_id),
                info.current_node or "—",
                str(info.size),
                info.created_at.strftime("%H:%M:%S.%f")[:-3],
            )
        console.print(table)
        console.print("[bold]Final state[/]")
        console.print_json(msgspec.json.encode(final.state).decode())

        console.print("\n[bold]4. Resume on a changed graph[/]")
        try:
            store.load_latest(TRACE, GRAPH_V2)
        except GraphMismatch as refusal:
            console.print(f"  [red]refused:[/] {refusal}")
        else:
            raise AssertionError("a changed graph was not refused")
