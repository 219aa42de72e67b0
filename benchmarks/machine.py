"""What the numbers were measured on: machine, Python, package versions, one fsync's cost."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from benchmarks.stats import latency_ms

PACKAGES = (
    "flowpoint",
    "msgspec",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "langchain-core",
    "ormsgpack",
    "aiosqlite",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def memory_total_mb() -> float | None:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fsync_probe(directory: Path, rounds: int = 100) -> dict[str, Any]:
    """The cost of writing 4 KB and fsyncing it, in the directory the subjects use."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    samples: list[int] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(rounds):
            os.pwrite(fd, block, 0)
            t0 = perf_counter_ns()
            os.fsync(fd)
            samples.append(perf_counter_ns() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return {"write_4k_then_fsync_ms": latency_ms(samples), "directory": str(directory)}


def source_state(repo: Path) -> dict[str, Any]:
    """The git commit of the code measured, and the files changed since (src/ is shared)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD"),
        "changed_in_src": None if status is None else [line for line in status.splitlines()],
    }


def machine_info(workdir: Path) -> dict[str, Any]:
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "memory_mb": memory_total_mb(),
        "python": sys.version,
        "python_implementation": platform.python_implementation(),
        "sqlite_library": sqlite3.sqlite_version,
        "packages": package_versions(),
        "fsync": fsync_probe(workdir),
    }
