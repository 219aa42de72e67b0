"""``prune``: rules, dry runs, and the refusals."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from flowpoint import SyncCheckpointStore
from flowpoint.cli.maintain import parse_duration
from tests.cli.conftest import TRACES, Seeded, flowpoint, invoke, one_line_error, usage_error


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
