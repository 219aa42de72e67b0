"""Runs the workloads: every subject in every repeat, interleaved, then the medians.

For each repeat, each selected workload runs every subject that applies (and its floors)
in turn; the order rotates by one from a repeat to the next, so no subject always runs
first or last. Each run gets a fresh place (SQLite file, directory, or PostgreSQL
database) that is removed afterwards. A subject that fails is recorded with its error
and the run goes on; PostgreSQL subjects are recorded as skipped when the server is
unreachable. After the timed repeats come the untimed passes: W1's bytes at rest by step,
and W3's peak memory under tracemalloc.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from benchmarks import floors, w1, w2, w3, w4, w5
from benchmarks.config import Sizes
from benchmarks.places import Place, PostgresServer, Workspace
from benchmarks.stats import median_of_runs
from benchmarks.subjects import SubjectSpec

FLOORS = "floors"


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    run_async: Callable[..., Any]
    run_sync: Callable[..., Any] | None  # None: async subjects only
    floors: Callable[..., dict[str, Any]] | None
    params: Callable[[Sizes], dict[str, Any]]
    # A workload of whole graph runs compares engines (a runner and its store), not the
    # checkpointers of SUBJECTS: name -> (label, run(sizes, directory)).
    engines: dict[str, tuple[str, Callable[[Sizes, Path], dict[str, Any]]]] | None = None
    subjects: frozenset[str] | None = None  # None: every subject that applies

    def applies(self, spec: SubjectSpec) -> bool:
        if self.engines is not None:
            return False
        if spec.workloads is not None and self.key not in spec.workloads:
            return False
        if self.subjects is not None and spec.name not in self.subjects:
            return False
        return spec.api == "async" or self.run_sync is not None


def _w1_params(s: Sizes) -> dict[str, Any]:
    chat = w1.chat(s)
    return {
        "trace": w1.TRACE,
        "steps": s.w1_steps,
        "message_chars": s.w1_message_chars,
        "profile_chars": s.w1_profile_chars,
        "random_loads_by_id": s.w1_random_loads,
        "listing_repeats": s.w1_list_repeats,
        "cold_loads": s.w1_cold_loads,
        "bytes_every_steps": s.w1_bytes_every,
        "last_state_msgpack_bytes": len(floors.encode(chat.state(s.w1_steps - 1))),
    }


def _w2_params(s: Sizes) -> dict[str, Any]:
    return {
        "traces": s.w2_traces,
        "steps": s.w2_steps,
        "in_flight": s.w2_in_flight,
        "state_msgpack_bytes": len(floors.encode(w2.state(s, 0, 0))),
    }


def _w3_params(s: Sizes) -> dict[str, Any]:
    data = w3.large(s)
    return {
        "traces": s.w3_traces,
        "steps": s.w3_steps,
        "records": s.w3_records,
        "changed_per_step": s.w3_changed_per_step,
        "state_msgpack_bytes_mean": data.state_bytes,
        "memory_pass_steps": s.w3_memory_steps,
    }


def _w4_params(s: Sizes) -> dict[str, Any]:
    return {
        "supersteps": 2 * w4.rounds_of(s) + 1,
        "rounds": w4.rounds_of(s),
        "tools": len(w4.TOOLS),
        "message_chars": s.w4_message_chars,
    }


def _w5_params(s: Sizes) -> dict[str, Any]:
    return {**_w1_params(s), "agent_turns": list(s.w5_agent_turns)}


def _no_run(*args: Any) -> Any:
    raise AssertionError("W4 runs engines, not subjects")


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "chat-300", w1.run_async, w1.run_sync, floors.run_w1, _w1_params),
    "W2": Workload("W2", "fan-out", w2.run_async, None, None, _w2_params),
    "W3": Workload("W3", "large state", w3.run_async, w3.run_sync, floors.run_w3, _w3_params),
    "W4": Workload("W4", "fan-out agent step", _no_run, None, None, _w4_params, engines=w4.ENGINES),
    "W5": Workload(
        "W5",
        "LangGraph adapter, saver API",
        functools.partial(w1.run_async, cold=False),
        functools.partial(w1.run_sync, cold=False),
        None,
        _w5_params,
        subjects=w5.SUBJECTS,
    ),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    def __init__(
        self,
        sizes: Sizes,
        workloads: list[Workload],
        specs: list[SubjectSpec],
        workspace: Workspace,
        postgres: PostgresServer,
        engines: list[str] | None = None,
    ) -> None:
        self.sizes = sizes
        self.workloads = workloads
        self.specs = specs
        self.engines = engines  # None: every engine of a workload that has them
        self.workspace = workspace
        self.postgres = postgres

    # -- places and single runs ---------------------------------------------------------

    @contextmanager
    def _place(self, spec: SubjectSpec) -> Iterator[Place]:
        if spec.needs_postgres:
            with self.postgres.database(spec.name) as dsn:
                yield Place(dsn=dsn)
        elif spec.backend in ("sqlite", "file"):
            with self.workspace.directory(spec.name) as directory:
                yield Place(directory=directory)
        else:
            yield Place()

    def _run_subject(
        self,
        spec: SubjectSpec,
        run_async: Callable[..., Any],
        run_sync: Callable[..., Any] | None,
        *args: Any,
    ) -> dict[str, Any]:
        gc.collect()
        try:
            with self._place(spec) as place:
                subject = spec.build(place)
                if spec.api == "async":
                    result: dict[str, Any] = asyncio.run(run_async(subject, self.sizes, *args))
                else:
                    assert run_sync is not None
                    result = run_sync(subject, self.sizes, *args)
                return result
        except Exception as exc:
            _log(f"    {spec.name} failed: {type(exc).__name__}: {exc}")
            return {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
            }

    def _run_floors(self, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        gc.collect()
        try:
            with self.workspace.directory(FLOORS) as directory:
                return fn(self.sizes, directory, *args)
        except Exception as exc:
            _log(f"    floors failed: {type(exc).__name__}: {exc}")
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _run_engine(
        self, name: str, run: Callable[[Sizes, Path], dict[str, Any]]
    ) -> dict[str, Any]:
        gc.collect()
        try:
            with self.workspace.directory(name) as directory:
                return run(self.sizes, directory)
        except Exception as exc:
            _log(f"    {name} failed: {type(exc).__name__}: {exc}")
            return {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
            }

    def _engines_of(self, workload: Workload) -> list[str]:
        found = list(workload.engines or ())
        return [name for name in found if self.engines is None or name in self.engines]

    def _skip_reason(self, spec: SubjectSpec) -> str | None:
        if spec.needs_postgres and self.postgres.unavailable:
            return self.postgres.unavailable
        return None

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        sizes = self.sizes
        results: dict[str, Any] = {}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        floor_runs: dict[str, list[dict[str, Any]]] = {}
        for workload in self.workloads:
            results[workload.key] = {
                "title": workload.title,
                "params": workload.params(sizes),
                "subjects": {},
                "floors": {},
            }
            runs[workload.key] = {}
            floor_runs[workload.key] = []
            for name in self._engines_of(workload):
                assert workload.engines is not None
                label = workload.engines[name][0]
                results[workload.key]["subjects"][name] = {"label": label, "status": "pending"}
                runs[workload.key][name] = []
            for spec in self.specs:
                if not workload.applies(spec):
                    continue
                entry: dict[str, Any] = {**spec.describe(), "status": "pending"}
                reason = self._skip_reason(spec)
                if reason:
                    entry.update(status="skipped", reason=reason)
                else:
                    runs[workload.key][spec.name] = []
                results[workload.key]["subjects"][spec.name] = entry

        # The workloads' states are built (by params above) and long-lived: keep them out
        # of the garbage collector's full collections, which would otherwise walk them
        # during every subject's timed calls.
        gc.collect()
        gc.freeze()

        for repeat in range(sizes.repeat):
            for workload in self.workloads:
                order: list[SubjectSpec | str] = [
                    spec for spec in self.specs if spec.name in runs[workload.key]
                ]
                order += self._engines_of(workload)
                if workload.floors is not None:
                    order.append(FLOORS)
                shift = repeat % len(order) if order else 0
                for item in order[shift:] + order[:shift]:
                    started = perf_counter()
                    if isinstance(item, str) and workload.engines is not None:
                        name = item
                        runs[workload.key][name].append(
                            self._run_engine(name, workload.engines[name][1])
                        )
                    elif isinstance(item, str):
                        assert workload.floors is not None
                        floor_runs[workload.key].append(self._run_floors(workload.floors))
                        name = FLOORS
                    else:
                        name = item.name
                        runs[workload.key][name].append(
                            self._run_subject(item, workload.run_async, workload.run_sync)
                        )
                    _log(
                        f"[{repeat + 1}/{sizes.repeat}] {workload.key} {name:<22} "
                        f"{perf_counter() - started:7.2f} s"
                    )

        for workload in self.workloads:
            self._summarize(results[workload.key], runs[workload.key], floor_runs[workload.key])

        if "W1" in results:
            self._w1_growth(results["W1"])
        if "W3" in results:
            self._w3_memory(results["W3"])
        if "W5" in results:
            self._w5_agent(results["W5"])
        return results

    def _summarize(
        self,
        section: dict[str, Any],
        runs: dict[str, list[dict[str, Any]]],
        floor_runs: list[dict[str, Any]],
    ) -> None:
        for name, subject_runs in runs.items():
            entry = section["subjects"][name]
            good = [run for run in subject_runs if "error" not in run]
            errors = [run["error"] for run in subject_runs if "error" in run]
            entry["runs"] = len(subject_runs)
            entry["errors"] = errors
            if good:
                entry["status"] = "ok"
                entry["median"] = median_of_runs(good)
                entry["repeats"] = good
            else:
                entry["status"] = "error"
                entry["reason"] = errors[0] if errors else "no run"
                entry["tracebacks"] = [run.get("traceback") for run in subject_runs]
        good_floors = [run for run in floor_runs if "error" not in run]
        for name in sorted({key for run in good_floors for key in run}):
            these = [run[name] for run in good_floors if name in run]
            section["floors"][name] = {"status": "ok", "median": median_of_runs(these)}
        floor_errors = [run["error"] for run in floor_runs if "error" in run]
        if floor_errors:
            section["floor_errors"] = floor_errors

    def _w1_growth(self, section: dict[str, Any]) -> None:
        """Bytes at rest against step, in an untimed pass per subject that stores anything."""
        every = self.sizes.w1_bytes_every
        growth: dict[str, Any] = {}
        for spec in self.specs:
            entry = section["subjects"].get(spec.name)
            if entry is None or entry["status"] != "ok" or spec.backend == "memory":
                continue
            started = perf_counter()
            result = self._run_subject(spec, w1.run_async, w1.run_sync, every)
            _log(f"[bytes] W1 {spec.name:<22} {perf_counter() - started:7.2f} s")
            growth[spec.name] = result.get("bytes_by_step") or {"error": result.get("error")}
        floors_growth = self._run_floors(floors.run_w1, every)
        for name, value in floors_growth.items():
            if isinstance(value, dict) and "bytes_by_step" in value:
                growth[name] = value["bytes_by_step"]
        section["bytes_by_step"] = growth

    def _w5_agent(self, section: dict[str, Any]) -> None:
        """Bytes at rest of an add_messages agent's thread, untimed, on each SQLite saver.

        Recorded per subject under ``agent_bytes``, and in the subject's medians (for
        the targets) as ``agent_bytes_<turns>``.
        """
        found: dict[str, Any] = {}
        for name in w5.AGENT_SUBJECTS:
            entry = section["subjects"].get(name)
            if entry is None:
                continue
            started = perf_counter()
            try:
                with self.workspace.directory(f"agent-{name}") as directory:
                    found[name] = w5.agent_bytes(self.sizes, directory, name)
            except Exception as exc:
                _log(f"    agent {name} failed: {type(exc).__name__}: {exc}")
                found[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            _log(f"[agent] W5 {name:<22} {perf_counter() - started:7.2f} s")
            if entry.get("status") == "ok":
                entry["median"].update(found[name])
        section["agent_bytes"] = found

    def _w3_memory(self, section: dict[str, Any]) -> None:
        """Peak memory of one save and one load, under tracemalloc, per subject."""
        memory: dict[str, Any] = {}
        for spec in self.specs:
            entry = section["subjects"].get(spec.name)
            if entry is None or entry["status"] != "ok":
                continue
            started = perf_counter()
            memory[spec.name] = self._run_subject(spec, w3.memory_async, w3.memory_sync)
            _log(f"[memory] W3 {spec.name:<21} {perf_counter() - started:7.2f} s")
        try:
            memory.update(floors.memory_w3(self.sizes))
        except Exception as exc:
            memory["floor.msgspec"] = {"error": f"{type(exc).__name__}: {exc}"}
        section["memory"] = memory
