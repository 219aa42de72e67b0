"""The operator commands on stores the adapter wrote: threads and namespaces readable, states
shown as JSON, damage found, prunes and copies that LangGraph then reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from flowpoint.langgraph import FlowpointSaver
from tests.cli.conftest import invoke
from tests.langgraph.checkpoints import checkpoint, config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _write(url: str) -> list[str]:
    """A thread of four checkpoints and a subgraph namespace; their ids, oldest first."""
    ids = []
    with FlowpointSaver.from_url(url) as saver:
        parent = config("user#42")
        messages: list[Any] = []
        for turn in range(4):
            messages = [*messages, HumanMessage(f"q{turn}", id=f"h{turn}"), AIMessage(f"a{turn}")]
            made = checkpoint(
                {"messages": messages, "turn": turn, "branch:to:agent": None},
                {"messages": turn + 1, "turn": turn + 1, "branch:to:agent": turn + 1},
            )
            parent = saver.put(
                parent, made, {"source": "loop", "step": turn}, made["channel_versions"]
            )
            ids.append(made["id"])
        saver.put(config("user#42", "tools:9f"), checkpoint({"x": 1}), {"step": 0}, {"x": 1})
    return ids


def test_threads_and_namespaces_read_in_listings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    ids = _write(url)
    traces = invoke("traces", "--store", url, "--json")
    assert traces.exit_code == 0, traces.output
    names = [t["trace_id"] for t in json.loads(traces.output)["traces"]]
    assert names == ["user%2342", "user%2342#tools:9f"]
    history = invoke("history", "user%2342", "--store", url)
    assert history.exit_code == 0, history.output
    assert "agent" in history.output  # the next node
    assert ids[-1] in history.output
    shown = invoke("show", ids[-1], "--store", url, "--json")
    assert shown.exit_code == 0, shown.output
    state = json.loads(shown.output)["state"]
    assert state["turn"] == 3
    assert state["messages"][0] == {
        "$type": "HumanMessage",
        "$value": {
            "content": "q0",
            "additional_kwargs": {},
            "response_metadata": {},
            "type": "human",
            "name": None,
            "id": "h0",
        },
    }
    diff = invoke("diff", ids[0], ids[1], "--store", url)
    assert diff.exit_code == 0, diff.output
    assert "+ $.messages[2]" in diff.output
    verified = invoke("verify", "--store", url)
    assert verified.exit_code == 0, verified.output


def test_prune_copy_and_export_leave_what_langgraph_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    ids = _write(url)
    with FlowpointSaver.from_url(url) as saver:
        before = saver.get_tuple(config("user#42"))
    assert invoke("prune", "user%2342", "--keep-latest", "1", "--store", url).exit_code == 0
    copied = f"sqlite:///{tmp_path}/b.db"
    assert invoke("copy", url, copied).exit_code == 0
    archive = tmp_path / "export.fpx"
    assert invoke("export", str(archive), "--store", copied).exit_code == 0
    restored = f"sqlite:///{tmp_path}/c.db"
    assert invoke("import", str(archive), "--store", restored).exit_code == 0
    for where in (url, copied, restored):
        with FlowpointSaver.from_url(where) as saver:
            latest = saver.get_tuple(config("user#42"))
            assert latest is not None
            assert before is not None
            assert latest.checkpoint == before.checkpoint
            assert [t.checkpoint["id"] for t in saver.list(config("user#42"))] == [ids[-1]]
            assert saver.get_tuple(config("user#42", "tools:9f")) is not None
