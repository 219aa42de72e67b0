"""``flowpoint migrate`` and ``flowpoint check``: exact counts, writes, failures, kills, reruns."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flowpoint import (
    CheckpointBlob,
    KeyRing,
    Runner,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
    open_store,
)
from tests.cli.conftest import (
    blobs_of,
    damage_sqlite,
    damage_sqlite_metadata,
    flowpoint,
    invoke,
    one_line_error,
)
from tests.graph import support_versions as sv
from tests.graph.support_versions import TicketV1, TicketV2

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
MODULE = "tests.graph.support_versions"
V1, V2, V3 = (f"0x{one:016x}" for one in (sv.V1, sv.V2, sv.V3))


def seed(url: str, paused: int, finished: int, on_v2: int = 0) -> None:
    """v1 traces (see ``support_versions.seed``), and ``on_v2`` v2 traces paused at compose."""

    async def more() -> None:
        async with open_store(url) as store:
            for n in range(on_v2):
                await sv.runner(sv.graph_v2, store).run(f"v2-{n}", TicketV2("Where is my invoice?"))

    asyncio.run(sv.seed(url, paused, finished))
    asyncio.run(more())


def survey(*args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def fingerprint(document: dict[str, Any], graph_hash: str) -> dict[str, Any]:
    (found,) = [one for one in document["fingerprints"] if one["graph_hash"] == graph_hash]
    return {key: value for key, value in found.items() if key != "graph_hash"}


def latest_headers(url: str) -> dict[str, CheckpointBlob]:
    latest: dict[str, CheckpointBlob] = {}
    for blob in blobs_of(url).values():
        if blob.trace_id not in latest or blob.step > latest[blob.trace_id].step:
            latest[blob.trace_id] = blob
    return latest


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_a_dry_run_counts_exactly_and_writes_nothing(url: str) -> None:
    seed(url, paused=5, finished=5, on_v2=2)
    before = blobs_of(url)
    code, document = survey("migrate", f"{MODULE}:graph_v2", "--store", url, "--dry-run")
    assert code == 0
    assert document["graph_hash"] == V2
    assert document["mode"] == "dry-run"
    assert fingerprint(document, V1) == {
        "current": False,
        "path": [f"{MODULE}.v1_to_v2"],
        "subgraph": None,
        "traces": 10,
        "live": 5,
        "finished": 5,
        "checked": 5,
        "ok": 5,
        "migrated": 0,
        "skipped": 0,
        "earlier": 0,
    }
    assert fingerprint(document, V2) == {
        "current": True,
        "path": [],
        "subgraph": None,
        "traces": 2,
        "live": 2,
        "finished": 0,
        "checked": 0,
        "ok": 0,
        "migrated": 0,
        "skipped": 0,
        "earlier": 0,
    }
    assert document["problems"] == []
    assert blobs_of(url) == before


def test_apply_migrates_the_live_traces_only_and_a_rerun_writes_nothing(url: str) -> None:
    seed(url, paused=5, finished=5)
    before = blobs_of(url)
    code, document = survey("migrate", f"{MODULE}:graph_v2", "--store", url, "--apply")
    assert code == 0
    assert fingerprint(document, V1)["migrated"] == 5
    after = blobs_of(url)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    added = [blob for key, blob in after.items() if key not in before]
    assert sorted(blob.trace_id for blob in added) == [f"paused-{n}" for n in range(5)]
    assert all(blob.graph_hash == sv.V2 and blob.step == 2 for blob in added)
    assert all(blob.metadata["source"] == "migration" for blob in added)
    code, again = survey("migrate", f"{MODULE}:graph_v2", "--store", url, "--apply")
    assert code == 0
    assert fingerprint(again, V1)["live"] == 0
    assert fingerprint(again, V2)["earlier"] == 5
    assert blobs_of(url) == after

    async def resume_all() -> list[Any]:
        async with open_store(url) as store:
            runner = sv.runner(sv.graph_v2, store)
            return [(await runner.resume(f"paused-{n}")).state for n in range(5)]

    states = asyncio.run(resume_all())
    assert [state.answer.endswith("question (sent)") for state in states] == [True] * 5


def test_a_failing_migration_is_reported_per_trace(url: str) -> None:
    seed(url, paused=4, finished=0)  # tickets 0 and 2 are about billing
    before = blobs_of(url)
    code, document = survey("migrate", f"{MODULE}:graph_v2_picky", "--store", url, "--apply")
    assert code == 1
    assert fingerprint(document, V1)["migrated"] == 2
    problems = {problem["trace_id"]: problem for problem in document["problems"]}
    assert sorted(problems) == ["paused-1", "paused-3"]
    assert problems["paused-1"]["kind"] == "failed"
    assert "it raised ValueError: no answer for a 'other' ticket" in problems["paused-1"]["reason"]
    after = blobs_of(url)
    for trace in problems:  # untouched
        assert [k for k, v in after.items() if v.trace_id == trace] == [
            k for k, v in before.items() if v.trace_id == trace
        ]
    latest = latest_headers(url)
    assert latest["paused-0"].graph_hash == latest["paused-2"].graph_hash == sv.V2


def test_check_fails_on_a_trace_no_migration_leads_from(url: str) -> None:
    seed(url, paused=1, finished=1, on_v2=2)
    done = flowpoint("check", f"{MODULE}:graph_v3_from_v1", "--store", url, env=ENV)
    assert done.returncode == 1
    assert one_line_error(done.stderr) == (
        f"error: 2 live trace(s) could not be resumed by graph 'support' {V3}"
    )
    assert "no path" in done.stdout
    assert f"no chain of migrations leads from graph {V2}" in done.stdout
    assert flowpoint("check", f"{MODULE}:graph_v3", "--store", url, env=ENV).returncode == 0


def test_check_resumes_a_subgraphs_child_traces_with_their_parent(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli import subgraph_graphs as sg

    async def crash_inside_the_subgraph() -> None:
        async with open_store(url) as store:
            with pytest.raises(RuntimeError, match="the reader fails"):
                await Runner(sg.outer, store).run("q-1", sg.Report("WAL"))

    monkeypatch.setenv("FLOWPOINT_TEST_FAIL_READ", "1")
    asyncio.run(crash_inside_the_subgraph())
    live = {trace: blob for trace, blob in latest_headers(url).items() if blob.current_node}
    assert sorted(live) == ["q-1", "q-1/research@0"]
    assert live["q-1/research@0"].graph_hash == sg.inner.hash_u64()

    code, document = survey("check", "tests.cli.subgraph_graphs:outer", "--store", url)
    assert (code, document["problems"]) == (0, [])
    child = fingerprint(document, f"0x{sg.inner.hash_u64():016x}")
    assert (child["subgraph"], child["current"], child["live"]) == ("research", True, 1)
    assert fingerprint(document, f"0x{sg.outer.hash_u64():016x}")["subgraph"] is None
    shown = flowpoint("check", "tests.cli.subgraph_graphs:outer", "--store", url, env=ENV)
    assert shown.returncode == 0
    assert "subgraph research" in shown.stdout
    # The inner graph alone does not know the outer one: the parent trace has no path.
    code, document = survey("check", "tests.cli.subgraph_graphs:inner", "--store", url)
    assert code == 1
    assert [problem["trace_id"] for problem in document["problems"]] == ["q-1"]


def test_check_samples_n_traces_per_hash(url: str) -> None:
    seed(url, paused=4, finished=0)
    code, document = survey("check", f"{MODULE}:graph_v2_picky", "--store", url, "--sample", "1")
    assert code == 0  # paused-0, the first by id, migrates
    assert fingerprint(document, V1)["checked"] == 1
    code, document = survey("check", f"{MODULE}:graph_v2_picky", "--store", url, "--sample", "2")
    assert code == 1
    assert [problem["trace_id"] for problem in document["problems"]] == ["paused-1"]


def test_check_reports_a_corrupt_checkpoint(url: str, tmp_path: Path) -> None:
    seed(url, paused=3, finished=0)
    latest = latest_headers(url)
    damage_sqlite(tmp_path / "runs.db", UUID(str(latest["paused-1"].checkpoint_id)))
    damage_sqlite_metadata(tmp_path / "runs.db", UUID(str(latest["paused-2"].checkpoint_id)))
    code, document = survey("check", f"{MODULE}:graph_v2", "--store", url)
    assert code == 3
    assert [(p["kind"], p["trace_id"], p["graph_hash"]) for p in document["problems"]] == [
        ("corrupt", "paused-1", V1),
        ("corrupt", "paused-2", None),
    ]
    assert fingerprint(document, V1)["ok"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["migrate", f"{MODULE}:graph_v2"],
        ["migrate", f"{MODULE}:graph_v2", "--dry-run", "--apply"],
        ["check", f"{MODULE}:graph_v2", "--sample", "0"],
        ["check", f"{MODULE}:TicketV1"],
        ["check", "tests.graph.nothing_here:graph"],
    ],
)
def test_usage_errors(url: str, args: list[str]) -> None:
    seed(url, paused=1, finished=0)
    result = invoke(*args, "--store", url)
    assert result.exit_code == 2, result.output


def test_an_encrypted_store_is_migrated_with_its_key_ring(url: str, tmp_path: Path) -> None:
    ring = KeyRing({"k1": bytes(range(32))}, primary="k1")

    async def seed_encrypted() -> None:
        async with open_store(url) as blobs:
            store = TypedCheckpointStore(blobs, SerdeCheckpointCodec(TicketV1, encryption=ring))
            await sv.runner(sv.graph_v1, store).run("secret", TicketV1("Where is my invoice?"))

    asyncio.run(seed_encrypted())
    keyring = tmp_path / "ring.json"
    keyring.write_text(
        json.dumps(
            {"primary": "k1", "keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}
        )
    )
    code, _ = survey("migrate", f"{MODULE}:graph_v2", "--store", url, "--dry-run")
    assert code == 1  # without the key ring the state cannot be read
    code, document = survey(
        "migrate", f"{MODULE}:graph_v2", "--store", url, "--keyring", str(keyring), "--apply"
    )
    assert code == 0, document
    assert fingerprint(document, V1)["migrated"] == 1

    async def resume() -> Any:
        async with open_store(url) as blobs:
            store = TypedCheckpointStore(blobs, SerdeCheckpointCodec(TicketV2, encryption=ring))
            return await Runner(sv.graph_v2, store).resume("secret")

    assert asyncio.run(resume()).status == "done"


@pytest.mark.slow
def test_apply_killed_midway_and_rerun_leaves_every_trace_consistent(url: str) -> None:
    traces = 40
    seed(url, paused=traces, finished=3)
    original = blobs_of(url)
    command = [
        sys.executable,
        "-m",
        "flowpoint.cli",
        "migrate",
        f"{MODULE}:graph_v2_slow",
        "--store",
        url,
        "--apply",
    ]
    child = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            migrated = sum(1 for blob in latest_headers(url).values() if blob.graph_hash == sv.V2)
            if migrated >= 3:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    latest = latest_headers(url)
    moved = [trace for trace, blob in latest.items() if blob.graph_hash == sv.V2]
    assert 3 <= len(moved) < traces  # killed in the middle
    after_kill = blobs_of(url)
    assert {k: v for k, v in after_kill.items() if k in original} == original
    for blob in after_kill.values():
        if blob.checkpoint_id not in original:  # each one a whole migrated step
            assert blob.step == 2
            assert blob.metadata["source"] == "migration"
    done = flowpoint("migrate", f"{MODULE}:graph_v2", "--store", url, "--apply", env=ENV)
    assert done.returncode == 0, done.stderr
    final = blobs_of(url)
    added = [blob for key, blob in final.items() if key not in original]
    assert sorted(blob.trace_id for blob in added) == sorted(f"paused-{n}" for n in range(traces))
    assert {k: v for k, v in final.items() if k in after_kill} == after_kill

    async def resume_all() -> set[str]:
        async with open_store(url) as store:
            runner = sv.runner(sv.graph_v2, store)
            return {(await runner.resume(f"paused-{n}")).status for n in range(traces)}

    assert asyncio.run(resume_all()) == {"done"}


# -- the README's section "Changing a graph" runs as written --------------------------------

README = (ROOT / "README.md").read_text(encoding="utf-8")
_START = README.index("## Changing a graph\n")
SECTION = README[_START : README.index("\n## ", _START) + 1]  # up to the next section


def test_the_readme_deploy_story_prints_what_it_shows(tmp_path: Path) -> None:
    (program,) = re.findall(r"```python\n(.*?)```", SECTION, re.DOTALL)
    history, walkthrough = re.findall(r"```text\n(.*?)```", SECTION, re.DOTALL)
    (tmp_path / "support.py").write_text(program, encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, "support.py"],
        cwd=tmp_path,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:2] == [
        "refused: written by 0x841c1130146dd8a5",
        "done [en] About your billing question.",
    ]
    assert "\n".join(lines[2:]) + "\n" == history
    steps: list[tuple[str, str]] = []
    for line in walkthrough.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        else:
            steps[-1] = (steps[-1][0], steps[-1][1] + line + "\n")
    assert [command.split()[1:3] for command, _ in steps] == [
        ["check", "support:unmigrated"],
        ["migrate", "support:graph"],
        ["migrate", "support:graph"],
    ]
    for (command, printed), code in zip(steps, [1, 0, 0], strict=True):
        done = flowpoint(*shlex.split(command)[1:], cwd=tmp_path, env=ENV)
        assert done.returncode == code, (command, done.stderr)
        assert done.stdout == printed, f"$ {command}\n{done.stdout}"
