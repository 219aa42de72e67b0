from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowpoint import SyncCheckpointStore
from flowpoint.cli._app import app
from flowpoint.cli._demo import TRACE, Research


def test_demo_runs_pauses_resumes_lists_and_refuses_a_changed_graph(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(app, ["demo", "--store", url])
    assert result.exit_code == 0, result.output
    assert "interrupted after 9 nodes" in result.output
    assert "publish asks: Publish this draft?" in result.output
    assert "done after 1 more node(s)" in result.output
    # The events are printed as they stream: each node's line, then its checkpoint.
    lines = result.output.splitlines()
    plan = next(n for n, line in enumerate(lines) if "▸ plan" in line)
    assert "step 1 saved" in lines[plan + 1]
    assert "refused:" in result.output
    # The refusal says what to do; the console wraps it where it likes.
    said = " ".join(result.output.split())
    assert "declare a migration from its graph (@graph.migration(from_hash=0x" in said
    assert "or fork it onto this graph" in said
    with SyncCheckpointStore.open(url, Research) as store:
        history = store.history(TRACE)
        assert [info.step for info in history] == list(range(11, -1, -1))
        assert history[1].metadata["source"] == "resume"
        assert history[1].metadata["answer"] == "true"
        assert history[2].metadata["source"] == "interrupt"
        final = store.load_latest(TRACE, None)
        assert final is not None
        assert final.current_node is None
        assert final.state.published is True
        assert len(final.state.findings) == 3


def test_demo_runs_again_on_the_same_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    for _ in range(2):
        assert CliRunner().invoke(app, ["demo", "--store", url]).exit_code == 0


def test_the_installed_command_uses_the_default_store_in_the_current_directory(
    tmp_path: Path,
) -> None:
    command = Path(sys.executable).with_name("flowpoint")
    assert command.exists(), "the flowpoint command is not installed beside this Python"
    result = subprocess.run([str(command), "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "flowpoint.db").exists()
    assert "refused" in result.stdout


@pytest.mark.parametrize("url", ["nosuch://x", "sqlite://host/x.db", "file:///proc/nope/store"])
def test_a_bad_store_is_one_line_and_exit_1(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowpoint.cli", "demo", "--store", url],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_demo_errors_take_debug_like_every_command() -> None:
    plain = subprocess.run(
        [sys.executable, "-m", "flowpoint", "demo", "--store", "nosuch://x"],
        capture_output=True,
        text=True,
    )
    assert plain.returncode == 1
    assert plain.stderr.startswith("error: unknown store URL 'nosuch://x'")
    debug = subprocess.run(
        [sys.executable, "-m", "flowpoint", "--debug", "demo", "--store", "nosuch://x"],
        capture_output=True,
        text=True,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("flowpoint ")


def test_the_demo_prints_ids_the_commands_take(tmp_path: Path) -> None:
    """Each id in the demo's table names its checkpoint; the command it suggests runs."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(app, ["demo", "--store", url], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^│ (\d+) .*│ ([0-9a-f-]+) +│$", result.stdout, re.MULTILINE)
    assert [int(step) for step, _ in rows] == list(range(12))
    for step, printed in rows:
        shown = CliRunner().invoke(app, ["show", printed, "--json", "--store", url])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["checkpoint"]["step"] == int(step)
    (suggested,) = [line for line in result.stdout.splitlines() if "flowpoint diff" in line]
    words = shlex.split(suggested)
    assert words[:2] == ["flowpoint", "diff"]
    assert words[2:4] == [rows[10][1], rows[11][1]]  # the human's answer, then publish
    assert words[4:] == ["--store", url]
    diff = CliRunner().invoke(app, words[1:])
    assert diff.exit_code == 0, diff.output
    assert "~ $.approved: false -> true" in diff.stdout
