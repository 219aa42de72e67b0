"""``migrate`` and ``check``: move stored traces onto a changed graph, or prove they can move.

Both survey the store the same way: each trace's latest checkpoint header, grouped
by the graph hash it was written with. A trace whose latest checkpoint has no next
node is finished and left alone. A live trace on the graph's own hash resumes as
it is; one on another hash resumes only through a chain of the graph's
migrations, and whether it does is found by doing it in memory: decoding its
latest checkpoint as the migration's old state type, migrating, type-checking and
encoding the result, and moving its position (``Migrator.plan``). ``--apply``
then saves the result as the trace's next step; a trace that some other writer
moved on meanwhile is skipped, for the next run to see. Each trace is one save,
so a run killed midway leaves every trace either as it was or migrated, and a
rerun finds the migrated ones on the graph's own hash and passes them over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import typer

from flowpoint.cli._common import (
    Access,
    DebugOption,
    JsonOption,
    KeyringOption,
    Settings,
    StoreOption,
    make_codec,
    opened_store,
    shown,
)
from flowpoint.cli._graph import built_graph
from flowpoint.cli._output import (
    ExitCode,
    emit_json,
    format_hash,
    print_error,
    progressbar,
    run,
    stdout_console,
    table,
)
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, MigrationFailed
from flowpoint.graph._builder import BuiltGraph
from flowpoint.graph._migrate import MIGRATION_SOURCE, Migrator
from flowpoint.ids import TraceId
from flowpoint.typed import TypedCheckpointStore

__all__ = ["Survey", "check", "migrate"]

Mode = Literal["dry-run", "apply", "check"]
ProblemKind = Literal["no path", "failed", "corrupt"]

_TARGET = Annotated[
    str,
    typer.Argument(
        metavar="MODULE:ATTR",
        help="The graph as it is now (a Graph, BuiltGraph or Runner), with its migrations: "
        "myapp.flows:graph.",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Problem:
    """A live trace the graph could not resume, and why."""

    kind: ProblemKind
    trace_id: str
    graph_hash: int | None
    """``None`` when the trace's latest header cannot be read."""
    reason: str

    def as_json(self) -> dict[str, Any]:
        """The problem as JSON-ready values, in a fixed key order."""
        return {
            "kind": self.kind,
            "trace_id": self.trace_id,
            "graph_hash": None if self.graph_hash is None else format_hash(self.graph_hash),
            "reason": self.reason,
        }


@dataclass(slots=True)
class Fingerprint:
    """The traces whose latest checkpoint one graph hash wrote, and what became of them.

    ``path`` names the migrations that lead from it to the graph (``None``: there
    is none; ``()``: it is the graph's own hash, or the hash of one of its
    subgraphs, named by ``subgraph``, whose child traces resume with their parent
    trace). ``checked`` live traces were migrated in memory (all of them, or
    ``--sample`` of them); ``ok`` of those fit; ``migrated`` were saved by
    ``--apply``; ``skipped`` moved on meanwhile. On the graph's own hash,
    ``earlier`` counts the live traces whose latest checkpoint a migration saved
    (by an earlier ``--apply``).
    """

    graph_hash: int
    path: tuple[str, ...] | None
    subgraph: str | None = None
    traces: int = 0
    live: int = 0
    checked: int = 0
    ok: int = 0
    migrated: int = 0
    skipped: int = 0
    earlier: int = 0

    def as_json(self) -> dict[str, Any]:
        """The fingerprint's counts as JSON-ready values, in a fixed key order."""
        return {
            "graph_hash": format_hash(self.graph_hash),
            "current": self.path == (),
            "path": None if self.path is None else list(self.path),
            "subgraph": self.subgraph,
            "traces": self.traces,
            "live": self.live,
            "finished": self.traces - self.live,
            "checked": self.checked,
            "ok": self.ok,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "earlier": self.earlier,
        }


@dataclass(slots=True)
class Survey:
    """What ``migrate`` or ``check`` found in the store, per stored graph hash."""

    graph: BuiltGraph[Any]
    mode: Mode
    fingerprints: dict[int, Fingerprint] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        """3 if a checkpoint is corrupt; else 1 if a live trace cannot resume; else 0."""
        if any(problem.kind == "corrupt" for problem in self.problems):
            return ExitCode.CORRUPT
        return ExitCode.ERROR if self.problems else ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """The survey as JSON-ready values, in a fixed key order."""
        return {
            "graph": self.graph.name,
            "graph_hash": format_hash(self.graph.hash_u64()),
            "mode": self.mode,
            "fingerprints": [
                one.as_json()
                for one in sorted(self.fingerprints.values(), key=lambda f: f.graph_hash)
            ],
            "problems": [problem.as_json() for problem in self.problems],
        }


def migrate(
    ctx: typer.Context,
    target: _TARGET,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Migrate every live trace in memory and report; write nothing."
        ),
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="Save each live trace's migrated checkpoint.")
    ] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Move live traces of older versions of a graph onto it, with its migrations.

    Per stored graph hash: how many traces are live (not finished), whether a chain
    of migrations leads to the graph, and the result of decoding, migrating and
    type-checking each live trace's latest checkpoint. --apply saves those results
    as new steps (safe to run again). Exits 1 if some live trace cannot be moved,
    3 if a checkpoint is corrupt.
    """
    if dry_run == apply:
        raise typer.BadParameter("give exactly one of --dry-run and --apply")
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    mode: Mode = "apply" if apply else "dry-run"
    run(lambda: _run(settings, target, mode, None), debug=settings.debug)


def check(
    ctx: typer.Context,
    target: _TARGET,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            metavar="N",
            min=1,
            help="Migrate at most N live traces per older graph hash in memory (the first N "
            "by trace id); the others count as their hash's path says.",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
    keyring: KeyringOption = None,
) -> None:
    """Exit non-zero if some live trace could not be resumed by the graph: a gate before a deploy.

    A live trace resumes if it is on the graph's own hash, or if the graph's
    migrations lead from its hash and migrating its latest checkpoint in memory
    succeeds. Writes nothing. Exits 1 if some live trace cannot resume, 3 if a
    checkpoint is corrupt.
    """
    settings = Settings.of(ctx, store=store, json=as_json, debug=debug, keyring=keyring)
    run(lambda: _run(settings, target, "check", sample), debug=settings.debug)


async def _run(settings: Settings, target: str, mode: Mode, sample: int | None) -> ExitCode:
    graph = built_graph(target)
    codec = make_codec(settings, graph.state_type)
    survey = Survey(graph, mode)
    # Only --apply writes: a dry run and check open the store read-only.
    access: Access = "change" if mode == "apply" else "read"
    async with opened_store(settings.store, access) as store:
        migrator = Migrator(TypedCheckpointStore(store, codec), graph)
        subgraphs = _subgraphs(graph)
        live: dict[int, list[TraceId]] = {}
        for trace in sorted(await store.traces()):
            try:
                latest = await store.history(trace, 1)
            except CorruptCheckpoint as exc:  # a damaged header row: the trace cannot be listed
                survey.problems.append(Problem("corrupt", trace, None, str(exc)))
                continue
            if not latest:
                continue  # deleted since the listing
            info = latest[0]
            found = survey.fingerprints.get(info.graph_hash)
            if found is None and info.graph_hash in subgraphs:
                found = Fingerprint(info.graph_hash, (), subgraphs[info.graph_hash])
                survey.fingerprints[info.graph_hash] = found
            elif found is None:
                path = graph.migrations.path(info.graph_hash)
                names = None if path is None else tuple(one.name for one in path)
                found = Fingerprint(
                    info.graph_hash, () if info.graph_hash == migrator.graph_hash else names
                )
                survey.fingerprints[info.graph_hash] = found
            found.traces += 1
            if info.current_node is None:
                continue  # finished: nothing resumes it
            found.live += 1
            if found.path == ():
                if info.metadata.get("source") == MIGRATION_SOURCE:
                    found.earlier += 1
            elif found.path is None:
                survey.problems.append(
                    Problem("no path", trace, info.graph_hash, _no_path(graph, info.graph_hash))
                )
            else:
                live.setdefault(info.graph_hash, []).append(trace)
        total = sum(len(traces[:sample]) for traces in live.values())
        with progressbar(total, _VERBS[mode], enabled=not settings.json) as bar:
            for graph_hash, traces in live.items():
                for trace in traces[:sample]:
                    await _move(migrator, survey, survey.fingerprints[graph_hash], trace, mode)
                    bar.advance()
    survey.problems.sort(key=lambda problem: problem.trace_id)
    _print(settings, survey)
    return survey.exit_code


_VERBS: dict[Mode, str] = {"dry-run": "migrating", "apply": "migrating", "check": "checking"}


async def _move(
    migrator: Migrator[Any], survey: Survey, found: Fingerprint, trace: TraceId, mode: Mode
) -> None:
    """Migrate one live trace of an older graph in memory, and save it under ``apply``."""
    found.checked += 1
    try:
        moved = await migrator.plan(trace, found.graph_hash)
    except MigrationFailed as exc:
        survey.problems.append(Problem("failed", trace, found.graph_hash, str(exc)))
        return
    except CorruptCheckpoint as exc:
        survey.problems.append(Problem("corrupt", trace, found.graph_hash, str(exc)))
        return
    if moved is None:
        found.skipped += 1  # moved on (or deleted) since the listing
        return
    found.ok += 1
    if mode != "apply":
        return
    try:
        await migrator.store.save_with_trace(trace, moved.checkpoint, migrator.graph_hash)
    except CheckpointConflict:
        found.skipped += 1  # another writer moved it on: a rerun sees where it is
        return
    found.migrated += 1


def _subgraphs(graph: BuiltGraph[Any]) -> dict[int, str]:
    """The names of the graph's subgraphs, at any depth, by hash (the graph's own left out)."""
    found: dict[int, str] = {}
    pending = [graph]
    while pending:
        for node in pending.pop().nodes.values():
            if node.subgraph is None:
                continue
            child = node.subgraph.graph
            if child.hash_u64() not in found and child.hash_u64() != graph.hash_u64():
                found[child.hash_u64()] = child.name
                pending.append(child)
    return found


def _path_label(found: Fingerprint) -> str:
    """How the table names the way from a stored hash to the graph."""
    if found.subgraph is not None:
        return f"subgraph {found.subgraph}"
    if found.path is None:
        return "none"
    return " > ".join(found.path) if found.path else "current"


def _no_path(graph: BuiltGraph[Any], graph_hash: int) -> str:
    hashes = graph.migrations.hashes
    has = ", ".join(format_hash(one) for one in hashes) if hashes else "none"
    return (
        f"no chain of migrations leads from graph {format_hash(graph_hash)} to graph "
        f"{graph.name!r} {format_hash(graph.hash_u64())} (it has migrations from: {has})"
    )


def _print(settings: Settings, survey: Survey) -> None:
    if settings.json:
        emit_json({"store": shown(settings.store), **survey.as_json()})
    else:
        _print_tables(settings, survey)
    unresumable = len(survey.problems)
    if unresumable:
        print_error(
            f"{unresumable} live trace(s) could not be resumed by graph {survey.graph.name!r} "
            f"{format_hash(survey.graph.hash_u64())}"
        )


def _print_tables(settings: Settings, survey: Survey) -> None:
    console = stdout_console()
    graph = survey.graph
    console.print(
        f"graph {graph.name!r} {format_hash(graph.hash_u64())}, store {shown(settings.store)}",
        markup=False,
    )
    grid = table(
        "graph", "path", "traces", "live", "checked", "ok", "migrated", "skipped", "earlier"
    )
    for one in sorted(survey.fingerprints.values(), key=lambda f: f.graph_hash):
        grid.add_row(
            format_hash(one.graph_hash),
            _path_label(one),
            *map(
                str,
                (one.traces, one.live, one.checked, one.ok, one.migrated, one.skipped, one.earlier),
            ),
        )
    console.print(grid)
    if survey.problems:
        problems = table("problem", "trace", "graph", "reason")
        for problem in survey.problems:
            graph_hash = "—" if problem.graph_hash is None else format_hash(problem.graph_hash)
            problems.add_row(problem.kind, problem.trace_id, graph_hash, problem.reason)
        console.print(problems)
    live = sum(one.live for one in survey.fingerprints.values())
    summary = f"{live} live trace(s), {len(survey.problems)} of them cannot resume on this graph"
    if survey.mode == "apply":
        summary += f"; {sum(one.migrated for one in survey.fingerprints.values())} migrated"
    console.print(summary, markup=False, style=None if survey.problems else "green")
