"""``prune`` and ``delete``: rules, dry runs, chains kept whole, keys, and the refusals."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from flowpoint import KeyRing, SyncCheckpointStore
from flowpoint.cli._maintain import parse_duration
from tests.cli.conftest import (
    TRACES,
    Chain,
    Seeded,
    flowpoint,
    invoke,
    make_chain,
    one_line_error,
    sqlite_url,
    unique_start,
    usage_error,
    write_keyring,
)


def steps(url: str, trace: str) -> list[int]:
    with SyncCheckpointStore.open(url) as store:
        return [info.step for info in store.history(trace)]


def test_a_dry_run_lists_what_would_go_and_deletes_nothing(seeded: Seeded) -> None:
    result = invoke("prune", "--all", "--keep-latest", "1", "--dry-run", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    assert "would delete 3 checkpoint(s) in 2 trace(s) (dry run: nothing deleted)" in result.stdout
    for doomed in (*seeded.ids["alpha"][:2], seeded.ids["beta/one"][0]):
        assert str(doomed) in result.stdout
    assert steps(seeded.url, "alpha") == [2, 1, 0]
    assert steps(seeded.url, "beta/one") == [1, 0]


def test_a_dry_run_in_json(seeded: Seeded) -> None:
    result = invoke(
        "prune", "alpha", "--keep-latest", "2", "--dry-run", "--json", "--store", seeded.url
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert document["deleted"] == 1
    (row,) = document["traces"]
    assert (row["trace_id"], row["checkpoints"], row["deleted"], row["kept"]) == ("alpha", 3, 1, 2)
    assert [info["checkpoint_id"] for info in row["would_delete"]] == [str(seeded.ids["alpha"][0])]
    assert steps(seeded.url, "alpha") == [2, 1, 0]


def test_prune_one_trace_keeps_the_latest(seeded: Seeded) -> None:
    done = flowpoint("prune", "alpha", "--keep-latest", "1", "--json", "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["deleted"] == 2
    assert steps(seeded.url, "alpha") == [2]
    assert steps(seeded.url, "beta/one") == [1, 0]


def test_prune_every_trace_by_age(seeded: Seeded) -> None:
    # Nothing is a week old: nothing goes.
    young = invoke("prune", "--all", "--older-than", "7d", "--json", "--store", seeded.url)
    assert young.exit_code == 0, young.output
    assert json.loads(young.stdout)["deleted"] == 0
    # Everything is older than 0 seconds; the latest of each trace is kept.
    old = invoke(
        "prune", "--all", "--older-than", "0s", "--keep-latest", "1", "--store", seeded.url
    )
    assert old.exit_code == 0, old.output
    assert "deleted 3 checkpoint(s) in 2 trace(s)" in old.stdout
    assert {trace: steps(seeded.url, trace) for trace in TRACES} == {"alpha": [2], "beta/one": [1]}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["alpha"], "--keep-latest N, --older-than AGE, or both"),
        (["--keep-latest", "1"], "a TRACE or --all"),
        (["alpha", "--all", "--keep-latest", "1"], "a TRACE or --all"),
        (["alpha", "--older-than", "7 days"], "whole number and a unit"),
        (["alpha", "--keep-latest", "-1"], "--keep-latest"),
    ],
)
def test_refusals_are_usage_errors_and_delete_nothing(
    seeded: Seeded, args: list[str], fragment: str
) -> None:
    result = invoke("prune", *args, "--store", seeded.url)
    assert result.exit_code == 2
    assert fragment in usage_error(result.stderr)
    assert steps(seeded.url, "alpha") == [2, 1, 0]


def test_prune_a_missing_trace_exits_4(seeded: Seeded) -> None:
    result = invoke("prune", "nope", "--keep-latest", "1", "--store", seeded.url)
    assert result.exit_code == 4
    assert "no trace 'nope'" in one_line_error(result.stderr)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 7D ", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "1.5h", "-1d", "7 d", "3y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="whole number and a unit"):
        parse_duration(text)


# -- delete --------------------------------------------------------------------------------


def test_delete_one_checkpoint_by_its_id(seeded: Seeded) -> None:
    doomed = seeded.ids["alpha"][1]
    done = flowpoint("delete", str(doomed), "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"deleted checkpoint {doomed} (trace 'alpha', step 1) from {seeded.url}"
    )
    assert steps(seeded.url, "alpha") == [2, 0]
    assert steps(seeded.url, "beta/one") == [1, 0]


def test_delete_by_the_start_of_an_id_in_json(seeded: Seeded) -> None:
    everything = [one for ids in seeded.ids.values() for one in ids]
    doomed = seeded.ids["alpha"][2]
    result = invoke("delete", unique_start(doomed, everything), "--json", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["store"] == seeded.url
    assert document["deleted"]["checkpoint_id"] == str(doomed)
    assert (document["deleted"]["trace_id"], document["deleted"]["step"]) == ("alpha", 2)
    # Deleting the newest made the one below it the latest.
    with SyncCheckpointStore.open(seeded.url) as store:
        latest = store.load_latest("alpha", None)
        assert latest is not None
        assert latest.checkpoint_id == seeded.ids["alpha"][1]


def test_delete_what_is_not_there_exits_4(seeded: Seeded) -> None:
    for missing in ("01a219c6-c3ee-74c4-9917-b9fd04568000", "ffff"):
        done = flowpoint("delete", missing, "--store", seeded.url)
        assert done.returncode == 4, done.stderr
        assert missing in one_line_error(done.stderr)
    assert steps(seeded.url, "alpha") == [2, 1, 0]


def test_delete_refuses_an_ambiguous_start_and_names_the_ids(seeded: Seeded) -> None:
    first, second = seeded.ids["alpha"][:2]
    common = str(first)[:8]  # ids made within a minute start alike
    assert str(second).startswith(common)
    done = flowpoint("delete", common, "--store", seeded.url)
    assert done.returncode == 2, done.stderr
    line = usage_error(done.stderr)
    assert str(first) in line
    assert str(second) in line
    assert steps(seeded.url, "alpha") == [2, 1, 0]


def test_delete_keeps_what_is_stored_as_changes_to_it(tmp_path: Path) -> None:
    chain = make_chain(sqlite_url(tmp_path / "chat.db"))
    dependent, base = next(iter(chain.delta_of.items()))
    done = flowpoint("delete", str(base), "--store", chain.url)
    assert done.returncode == 0, done.stderr
    with SyncCheckpointStore.open(chain.url, dict) as store:
        assert store.load(base, None) is None
        loaded = store.load(dependent, None)
        assert loaded is not None
        assert loaded.state == chain.states[dependent]
        assert len(store.history("chat")) == len(chain.ids) - 1
    shown = json.loads(flowpoint("show", str(dependent), "--json", "--store", chain.url).stdout)
    assert shown["encoding"]["delta_of"] != str(base)  # its data no longer needs the base
    verified = flowpoint("verify", "--store", chain.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@dataclass
class Encrypted:
    chain: Chain
    ring: KeyRing
    ring_file: Path

    def stored(self) -> dict[UUID, object]:
        """The state of each checkpoint the store holds, newest first."""
        with SyncCheckpointStore.open(self.chain.url, dict, encryption=self.ring) as store:
            found = {}
            for info in store.history("chat"):
                loaded = store.load(info.checkpoint_id, None)
                assert loaded is not None
                found[info.checkpoint_id] = loaded.state
            return found


@pytest.fixture
def encrypted(tmp_path: Path) -> Encrypted:
    key = os.urandom(32)
    ring = KeyRing({"k1": key}, primary="k1")
    chain = make_chain(sqlite_url(tmp_path / "secret.db"), ring)
    return Encrypted(chain, ring, write_keyring(tmp_path / "ring.json", {"k1": key}, "k1"))


def test_delete_in_an_encrypted_store_takes_the_key_ring(encrypted: Encrypted) -> None:
    chain = encrypted.chain
    dependent, base = next(iter(chain.delta_of.items()))
    refused = flowpoint("delete", str(base), "--store", chain.url)
    assert refused.returncode == 1, refused.stderr
    line = one_line_error(refused.stderr)
    assert "'k1'" in line
    assert "--keyring FILE" in line
    assert base in encrypted.stored()  # nothing was deleted
    ring = str(encrypted.ring_file)
    done = flowpoint("delete", str(base), "--store", chain.url, "--keyring", ring)
    assert done.returncode == 0, done.stderr
    stored = encrypted.stored()
    assert base not in stored
    assert stored[dependent] == chain.states[dependent]


def test_prune_takes_the_key_ring_after_the_command(encrypted: Encrypted) -> None:
    chain = encrypted.chain
    newest_base = max(chain.delta_of.values(), key=chain.ids.index)
    keep = len(chain.ids) - chain.ids.index(newest_base) - 1  # the base goes, its delta stays
    prune = ["prune", "chat", "--keep-latest", str(keep), "--store", chain.url]
    refused = flowpoint(*prune)
    assert refused.returncode == 1, refused.stderr
    assert "--keyring FILE" in one_line_error(refused.stderr)
    assert len(encrypted.stored()) == len(chain.ids)
    done = flowpoint(*prune, "--keyring", str(encrypted.ring_file))
    assert done.returncode == 0, done.stderr
    stored = encrypted.stored()
    assert list(stored) == chain.ids[::-1][:keep]
    assert all(stored[one] == chain.states[one] for one in stored)
