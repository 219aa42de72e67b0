"""The benchmark harness runs end to end at smoke size and writes what it promises.

No timing is asserted here: the numbers are the benchmark's business, not a test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.report import charts_available
from benchmarks.subjects import SUBJECTS
from benchmarks.w4 import ENGINES
from benchmarks.w5 import SUBJECTS as W5_SUBJECTS

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("W1", "W2", "W3")


@pytest.fixture(scope="module")
def smoke_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out, result


def test_smoke_run_succeeds(smoke_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = smoke_run
    assert result.returncode == 0, result.stdout + result.stderr
    for noise in ("Traceback", "Warning", "Error"):
        assert noise not in result.stderr, result.stderr


def test_smoke_run_writes_every_file(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke_run
    names = ["results.json", "results.md"]
    if charts_available():  # matplotlib comes with the bench extra, not the test extra
        names += ["latency.png", "bytes.png"]
    for name in names:
        path = out / name
        assert path.is_file(), name
        assert path.stat().st_size > 0, name
    if charts_available():
        assert (out / "latency.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert not (out / "latency.png").exists()


def test_json_has_every_workload_and_subject(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke_run
    document = json.loads((out / "results.json").read_text())
    assert {"platform", "cpu_count", "python", "packages"} <= document["meta"]["machine"].keys()
    assert set(WORKLOADS) <= document["workloads"].keys()
    for workload in WORKLOADS:
        section = document["workloads"][workload]
        for spec in SUBJECTS:
            if spec.workloads is not None and workload not in spec.workloads:
                assert spec.name not in section["subjects"]
                continue
            if workload == "W2" and spec.api == "sync":  # W2 runs async subjects only
                assert spec.name not in section["subjects"]
                continue
            entry = section["subjects"].get(spec.name)
            assert entry is not None, f"{workload}: {spec.name} missing"
            if entry["status"] == "skipped":
                assert entry["reason"], f"{workload}: {spec.name} skipped without a reason"
                # CI has every server the subjects need: nothing may skip there.
                assert os.environ.get("CI") != "true", (workload, spec.name, entry["reason"])
            else:
                assert entry["status"] == "ok", (workload, spec.name, entry.get("reason"))
                assert entry["median"], (workload, spec.name)
    w1 = document["workloads"]["W1"]
    assert {"floor.msgspec", "floor.sqlite", "floor.delta"} <= w1["floors"].keys()
    assert {"floor.msgspec", "floor.sqlite"} <= document["workloads"]["W3"]["floors"].keys()
    assert w1["bytes_by_step"], "bytes at rest by step are missing"
    assert document["targets"], "no targets were evaluated"
    # Cold loads (a fresh store object, then load_latest) on SQLite and files, not in memory.
    for name in ("fp.sqlite", "fp.sqlite.sync", "fp.file", "lg.SqliteSaver", "lg.AsyncSqliteSaver"):
        assert w1["subjects"][name]["median"]["cold_load_latest_ms"]["n"] > 0, name
    assert w1["subjects"]["fp.memory"]["median"]["cold_load_latest_ms"] is None
    rows = {row["key"]: row for row in document["targets"]}
    for key in ("w1-by-id", "w1-cold", "w1-file-by-id"):
        assert rows[key]["met"] in (True, False), rows[key]


def test_w4_runs_the_same_graph_on_both_engines(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke_run
    document = json.loads((out / "results.json").read_text())
    section = document["workloads"]["W4"]
    assert set(section["subjects"]) == set(ENGINES)
    for name, entry in section["subjects"].items():
        assert entry["status"] == "ok", (name, entry.get("reason"))
        median = entry["median"]
        assert median["supersteps"] == section["params"]["supersteps"]
        assert median["superstep_ms"] > 0
        assert median["bytes_at_rest"] > 0
        assert median["settings"]["synchronous_full"], name
    assert "## W4 " in (out / "results.md").read_text()


def test_w5_drives_langgraphs_savers_and_flowpoints_alike(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke_run
    document = json.loads((out / "results.json").read_text())
    section = document["workloads"]["W5"]
    assert set(section["subjects"]) == set(W5_SUBJECTS)
    for name, entry in section["subjects"].items():
        if entry["status"] == "skipped":
            assert os.environ.get("CI") != "true", (name, entry["reason"])
            continue
        assert entry["status"] == "ok", (name, entry.get("reason"))
        assert entry["median"]["save_ms"]["p50"] > 0
    for name, found in section["agent_bytes"].items():
        assert found["agent_bytes_first"] > 0, name
    keys = {row["key"] for row in document["targets"]}
    assert {"w5-put", "w5-aput", "w5-get", "w5-list20", "w5-agent-bytes"} <= keys
    assert "## W5 " in (out / "results.md").read_text()


def test_markdown_has_the_targets_table(
    smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke_run
    text = (out / "results.md").read_text()
    assert "## Targets" in text
    targets = text.split("## Targets", 1)[1]
    assert "| target | flowpoint | peer |" in targets
    assert "| ratio | target | met |" in targets
    for workload in WORKLOADS:
        assert f"## {workload} " in text
