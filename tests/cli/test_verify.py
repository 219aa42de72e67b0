"""``verify``: intact stores pass; damage is named, with exit code 3."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from rich.console import Console

from flowpoint import KeyRing
from flowpoint.cli._output import progressbar
from flowpoint.ids import CheckpointId
from tests.cli.conftest import (
    Seeded,
    damage_sqlite,
    flowpoint,
    invoke,
    make_store,
    one_line_error,
    seeded_file_store,
    write_keyring,
)


def test_an_intact_store_verifies(seeded: Seeded) -> None:
    result = invoke("verify", "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["checked"] == document["ok"] == 5
    assert document["traces"] == 2
    assert document["corrupt"] == document["undecodable"] == 0
    assert document["problems"] == []
    people = invoke("verify", "--store", seeded.url)
    assert "5 checkpoint(s) in 2 trace(s): 5 ok, 0 corrupt, 0 undecodable" in people.stdout


def test_verify_one_trace(seeded: Seeded) -> None:
    result = invoke("verify", "beta/one", "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checked"] == 2


def test_verify_a_missing_trace_exits_4(seeded: Seeded) -> None:
    result = invoke("verify", "nope", "--store", seeded.url)
    assert result.exit_code == 4
    assert "no trace 'nope'" in one_line_error(result.stderr)


def test_a_damaged_sqlite_checkpoint_is_named_and_exits_3(seeded: Seeded) -> None:
    bad = seeded.ids["alpha"][1]
    damage_sqlite(seeded.path, bad)
    result = invoke("verify", "--store", seeded.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert (document["ok"], document["corrupt"]) == (4, 1)
    (problem,) = document["problems"]
    assert problem["kind"] == "corrupt"
    assert problem["checkpoint_id"] == str(bad)
    assert (problem["trace_id"], problem["step"]) == ("alpha", 1)
    assert "checksum" in problem["reason"]
    # As a subprocess, for people: the table names it, stderr says why the exit code.
    done = flowpoint("verify", "--store", seeded.url)
    assert done.returncode == 3
    assert str(bad) in done.stdout
    assert "1 corrupt" in one_line_error(done.stderr)
    # Other commands that meet it also exit 3.
    shown = invoke("show", str(bad), "--store", seeded.url)
    assert shown.exit_code == 3
    assert str(bad) in one_line_error(shown.stderr)


def test_a_damaged_header_row_is_corrupt_too(seeded: Seeded) -> None:
    bad = seeded.ids["beta/one"][0]
    with closing(sqlite3.connect(seeded.path)) as conn, conn:
        conn.execute(
            "UPDATE flowpoint_checkpoints SET created_at = 'yesterday' WHERE checkpoint_id = ?",
            (bad.bytes,),
        )
    result = invoke("verify", "--store", seeded.url, "--json")
    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert document["corrupt"] >= 1
    assert any(problem["trace_id"] == "beta/one" for problem in document["problems"])


def test_a_damaged_file_store_checkpoint_is_named(tmp_path: Path) -> None:
    url, ids, harness = seeded_file_store(tmp_path)
    bad = CheckpointId(ids["beta/one"][1])
    data = asyncio.run(harness.read_data(bad))
    asyncio.run(harness.write_data(bad, data[:-1] + bytes([data[-1] ^ 1])))
    done = flowpoint("verify", "--json", "--store", url)
    assert done.returncode == 3, done.stderr
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["checkpoint_id"] == str(bad)


def test_an_encrypted_store_needs_its_key_ring(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'secret.db'}"
    key = os.urandom(32)
    make_store(url, {"private": 2}, ring=KeyRing({"k1": key}, primary="k1"))
    without = invoke("verify", "--store", url, "--json")
    assert without.exit_code == 1
    document = json.loads(without.stdout)
    assert (document["undecodable"], document["corrupt"]) == (2, 0)
    assert "'k1'" in document["problems"][0]["reason"]
    assert "could not be decoded" in one_line_error(without.stderr)
    ring = write_keyring(tmp_path / "ring.json", {"k1": key}, "k1")
    with_ring = invoke("verify", "--store", url, "--keyring", str(ring))
    assert with_ring.exit_code == 0, with_ring.output
    # A wrong key under the right id: authentication fails, which is corruption.
    wrong = write_keyring(tmp_path / "wrong.json", {"k1": os.urandom(32)}, "k1")
    forged = invoke("verify", "--store", url, "--keyring", str(wrong), "--json")
    assert forged.exit_code == 3
    assert "authentication" in json.loads(forged.stdout)["problems"][0]["reason"]


def test_verify_with_a_type_reports_states_that_do_not_fit(seeded: Seeded) -> None:
    result = invoke("verify", "alpha", "--type", "builtins:list", "--store", seeded.url, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["undecodable"] == 3


def test_no_progress_bar_off_a_terminal(seeded: Seeded) -> None:
    done = flowpoint("verify", "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("enabled", "shown"), [(True, True), (False, False)])
def test_progress_bar_on_a_terminal(enabled: bool, shown: bool) -> None:
    console = Console(force_terminal=True, width=60, record=True)
    with progressbar(3, "verifying", enabled=enabled, console=console) as bar:
        for _ in range(3):
            bar.advance()
    assert ("verifying" in console.export_text()) is shown
