"""``python -m benchmarks.queue``: run queue throughput, in runs per second, with 1 and 3 workers.

N runs of a five-node graph (nodes that do nothing, so the queue and its saves are
what is measured: a claim, six fenced saves and a settle per run) are submitted,
then W worker processes (each ``concurrency`` runs at once) are started, wait until
all are ready, and run until the queue is empty. The time is from "go" to the last
worker's exit. SQLite at its default durability (``synchronous=FULL``) and
PostgreSQL on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import subprocess
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from time import perf_counter
from typing import Any

from flowpoint import END, START, BuiltGraph, Graph, RunQueue, Worker

ROOT = Path(__file__).resolve().parents[1]
NODES = ("n1", "n2", "n3", "n4", "n5")
PG_ADMIN = os.environ.get("FLOWPOINT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def graph() -> BuiltGraph[dict[str, Any]]:
    g = Graph("bench-queue", state=dict)
    for name in NODES:
        g.add_node(name, lambda state, name=name: {"last": name})
    g.add_edge(START, NODES[0])
    for before, after in itertools.pairwise(NODES):
        g.add_edge(before, after)
    g.add_edge(NODES[-1], END)
    return g.build()


def serve(url: str, concurrency: int) -> None:
    """A worker process: say ready, wait for "go" on stdin, run until the queue is empty."""
    worker = Worker(RunQueue.open(url), graphs=[graph()], concurrency=concurrency)
    print("ready", flush=True)
    sys.stdin.readline()
    worker.run(until_idle=True)


async def submit(url: str, runs: int) -> None:
    async with RunQueue.open(url) as queue:
        for n in range(runs):
            await queue.submit(graph(), f"run-{n}", {"n": n})


async def count_done(url: str) -> int:
    async with RunQueue.open(url) as queue:
        return len(await queue.runs(status="done", limit=1_000_000))


def measure(url: str, runs: int, workers: int, concurrency: int) -> float:
    """Runs per second of ``workers`` processes draining ``runs`` runs from ``url``."""
    asyncio.run(submit(url, runs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    command = [sys.executable, "-m", "benchmarks.queue", "--serve", url, "--concurrency"]
    children = [
        subprocess.Popen(
            [*command, str(concurrency)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    started = perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        child.wait(timeout=600)
        assert child.returncode == 0
    elapsed = perf_counter() - started
    done = asyncio.run(count_done(url))
    assert done == runs, f"{done} of {runs} runs done"
    return runs / elapsed


def _postgres_database() -> tuple[str, str]:
    import psycopg
    from psycopg import sql

    name = f"flowpoint_bench_queue_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    head, _, _ = PG_ADMIN.rpartition("/")
    return name, f"{head}/{name}"


def _drop(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue", description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", default="1,3", help="worker counts to measure")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--smoke", action="store_true", help="20 runs: a few seconds")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.concurrency)
        return
    runs = 20 if args.smoke else args.runs
    for store in args.stores.split(","):
        for count in (int(n) for n in args.workers.split(",")):
            with TemporaryDirectory() as scratch:
                if store == "sqlite":
                    name, url = "", f"sqlite:///{Path(scratch) / 'runs.db'}"
                else:
                    name, url = _postgres_database()
                try:
                    rate = measure(url, runs, count, args.concurrency)
                finally:
                    if name:
                        _drop(name)
            print(
                f"{store:8} {count} worker(s) x {args.concurrency}: {rate:7.1f} runs/s "
                f"({runs} runs of {len(NODES)} nodes)",
                flush=True,
            )


if __name__ == "__main__":
    main()
