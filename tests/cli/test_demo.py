from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowpoint import SyncCheckpointStore
from flowpoint.cli.app import app
from flowpoint.cli.demo import TRACE, Research


def test_demo_runs_pauses_resumes_lists_and_refuses_a_changed_graph(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(app, ["demo", "--store", url])
    assert result.exit_code == 0, result.output
    assert "interrupted after 8 nodes" in result.output
    assert "done after 1 more node(s)" in result.output
    assert "refused:" in result.output
    assert "fork it onto this graph" in result.output
    with SyncCheckpointStore.open(url, Research) as store:
        history = store.history(TRACE)
        assert [info.step for info in history] == list(range(10, -1, -1))
        assert history[1].metadata["source"] == "update"
        assert history[1].metadata["update"] == '{"approved":true}'
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


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("flowpoint ")
