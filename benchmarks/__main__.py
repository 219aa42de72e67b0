"""``python -m benchmarks [--smoke] [--out DIR] [--repeat N] [--only W1,W2,...]``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from benchmarks import report
from benchmarks.config import FULL, SMOKE
from benchmarks.machine import machine_info, source_state
from benchmarks.places import DEFAULT_PG_DSN, PostgresServer, Workspace
from benchmarks.runner import WORKLOADS, Runner
from benchmarks.subjects import SUBJECTS
from benchmarks.targets import evaluate
from benchmarks.text import compression_ratio

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="flowpoint against LangGraph's checkpointers (W1, W2, W3) and LangGraph's "
        "runtime (W4): the workloads of docs/workloads.md, same machine, same run.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one repeat: a few seconds"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per subject (default 3; 1 with --smoke)"
    )
    parser.add_argument(
        "--only", type=_csv, default=None, help="workloads to run, e.g. W1,W3 (default all)"
    )
    parser.add_argument(
        "--subjects", type=_csv, default=None, help="subjects to run, e.g. fp.sqlite,lg.SqliteSaver"
    )
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("FLOWPOINT_BENCH_PG", DEFAULT_PG_DSN),
        help="PostgreSQL server to create scratch databases on "
        "(default $FLOWPOINT_BENCH_PG or %(default)s)",
    )
    parser.add_argument(
        "--workdir", default=None, help="where the temp files go (default: the system temp dir)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="run nothing: write results.md and the charts again from this results.json",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.only is not None:
        unknown = [key for key in args.only if key.upper() not in WORKLOADS]
        if unknown or not args.only:
            parser.error(f"--only takes workloads among {', '.join(WORKLOADS)}, not {unknown}")
        args.only = [key.upper() for key in args.only]
    known = {spec.name for spec in SUBJECTS} | {
        name for workload in WORKLOADS.values() for name in workload.engines or ()
    }
    if args.subjects is not None:
        unknown = [name for name in args.subjects if name not in known]
        if unknown or not args.subjects:
            parser.error(f"--subjects takes names among {', '.join(sorted(known))}, not {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        document = json.loads(args.from_json.read_text(encoding="utf-8"))
        for path in report.write_all(args.out, document):
            print(path)
        return 0
    sizes = (SMOKE if args.smoke else FULL).with_repeat(args.repeat)
    workloads = [WORKLOADS[key] for key in (args.only or list(WORKLOADS))]
    specs = [spec for spec in SUBJECTS if args.subjects is None or spec.name in args.subjects]
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)

    started_at = datetime.now(UTC)
    started = perf_counter()
    workspace = Workspace(args.workdir)
    try:
        postgres = PostgresServer(args.pg_dsn)
        if postgres.unavailable:
            print(f"PostgreSQL subjects skipped: {postgres.unavailable}", file=sys.stderr)
        meta: dict[str, Any] = {
            "command": command.strip(),
            "started": started_at.isoformat(timespec="seconds"),
            "smoke": args.smoke,
            "sizes": sizes.as_dict(),
            "machine": machine_info(workspace.root),
            "source": source_state(Path(__file__).resolve().parents[1]),
            "postgres": postgres.info(),
            "text": compression_ratio(sizes.seed),
            "workdir": str(workspace.root),
        }
        engines = None if args.subjects is None else list(args.subjects)
        results = Runner(sizes, workloads, specs, workspace, postgres, engines).run()
    finally:
        workspace.cleanup()
    meta["duration_s"] = perf_counter() - started

    subjects: dict[str, Any] = {}
    for spec in specs:
        entry: dict[str, Any] = dict(spec.describe())
        for section in results.values():
            found = section["subjects"].get(spec.name)
            if found is None:
                continue
            if found.get("status") == "skipped":
                entry.setdefault("skipped", found.get("reason"))
            settings = (found.get("median") or {}).get("settings")
            if settings and "settings" not in entry:
                entry["settings"] = settings
        subjects[spec.name] = entry
    for workload in workloads:
        for name, (label, _) in (workload.engines or {}).items():
            found = results[workload.key]["subjects"].get(name)
            if found is None:
                continue
            entry = {"label": label, "family": name.split(".")[0], "backend": "sqlite"}
            settings = (found.get("median") or {}).get("settings")
            if settings:
                entry["settings"] = settings
            subjects[name] = entry

    document = {
        "meta": meta,
        "subjects": subjects,
        "workloads": results,
        "targets": evaluate(results),
    }
    written = report.write_all(args.out, document)
    for path in written:
        print(path)
    failed = [
        f"{key} {name}"
        for key, section in results.items()
        for name, entry in section["subjects"].items()
        if entry.get("status") == "error"
    ]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
