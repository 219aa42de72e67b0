"""``traces``, ``history``, ``show`` and ``diff``, in-process and as subprocesses."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowpoint.cli._demo import TRACE
from flowpoint.cli._inspect import summarize
from flowpoint.cli._output import format_size, format_time, to_plain
from tests.cli.conftest import (
    GRAPH,
    TRACES,
    Seeded,
    flowpoint,
    invoke,
    make_store,
    one_line_error,
    run_demo_quietly,
    sqlite_url,
    unique_start,
    usage_error,
)

# -- traces --------------------------------------------------------------------------------


def test_traces_summarizes_each_trace_from_headers(seeded: Seeded) -> None:
    result = invoke("traces", "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["store"] == seeded.url
    rows = {row["trace_id"]: row for row in document["traces"]}
    assert list(rows) == sorted(TRACES)
    alpha = rows["alpha"]
    assert alpha["checkpoints"] == 3
    assert alpha["latest_step"] == 2
    assert alpha["latest_checkpoint_id"] == str(seeded.ids["alpha"][-1])
    assert alpha["next_node"] is None
    assert alpha["graph_hash"] == f"0x{GRAPH:016x}"
    assert alpha["updated_at"].endswith("Z")
    assert alpha["size"] > 0
    assert rows["beta/one"]["checkpoints"] == 2


def test_traces_table_names_every_trace(seeded: Seeded) -> None:
    result = invoke("traces", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    assert "2 trace(s)" in result.stdout
    for trace in TRACES:
        assert trace in result.stdout
    assert f"0x{GRAPH:016x}" in result.stdout


def test_global_options_go_before_the_command_or_after_it(seeded: Seeded) -> None:
    before = invoke("--store", seeded.url, "--json", "traces")
    after = invoke("traces", "--store", seeded.url, "--json")
    assert before.exit_code == after.exit_code == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)


def test_the_store_comes_from_flowpoint_store(seeded: Seeded) -> None:
    result = invoke("traces", "--json", env={"FLOWPOINT_STORE": seeded.url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["store"] == seeded.url


def test_an_empty_store_lists_no_traces(tmp_path: Path) -> None:
    result = invoke("traces", "--store", "memory://", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["traces"] == []


def test_traces_as_a_subprocess_on_the_default_store(tmp_path: Path) -> None:
    run_demo_quietly(sqlite_url(tmp_path / "flowpoint.db"))
    done = flowpoint("--json", "traces", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["traces"]
    assert row["trace_id"] == TRACE
    assert row["checkpoints"] == 12


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nosuch://x", "unknown store URL"),
        ("sqlite://host/x.db", "SQLite URL"),
        ("file:///proc/nope/store", "no store at"),
    ],
)
def test_a_bad_store_url_is_one_line_and_exit_1(url: str, fragment: str) -> None:
    done = flowpoint("traces", "--store", url)
    assert done.returncode == 1
    assert fragment in one_line_error(done.stderr)


def test_a_missing_sqlite_file_is_not_created_by_a_listing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = invoke("traces", "--store", sqlite_url(path))
    assert result.exit_code == 1
    assert "does not exist" in one_line_error(result.stderr)
    assert not path.exists()


def test_summarize_counts_sizes_and_takes_the_newest_time() -> None:
    from datetime import UTC, datetime, timedelta

    from flowpoint.blob import CheckpointInfo
    from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def info(step: int, created: datetime, size: int) -> CheckpointInfo:
        return CheckpointInfo(
            CheckpointId(new_checkpoint_id()), TraceId("t"), step, None, 7, created, "n", {}, size
        )

    # The latest step need not be the newest write (a fork, a clock step back).
    newest_first = [info(2, now, 10), info(1, now + timedelta(seconds=5), 20), info(0, now, 30)]
    summary = summarize(TraceId("t"), newest_first)
    assert summary.checkpoints == 3
    assert summary.latest.step == 2
    assert summary.size == 60
    assert summary.updated_at == now + timedelta(seconds=5)
    assert summary.as_json()["graph_hash"] == "0x0000000000000007"


# -- history -------------------------------------------------------------------------------


def test_history_pages_newest_first(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "demo.db")
    run_demo_quietly(url)
    first = invoke("history", TRACE, "--limit", "4", "--store", url, "--json")
    assert first.exit_code == 0, first.output
    page = json.loads(first.stdout)
    assert [row["step"] for row in page["checkpoints"]] == [11, 10, 9, 8]
    assert page["next_before"] == 8
    rest = invoke("history", TRACE, "--before", "8", "--limit", "50", "--store", url, "--json")
    page = json.loads(rest.stdout)
    assert [row["step"] for row in page["checkpoints"]] == list(range(7, -1, -1))
    assert page["next_before"] is None
    row = page["checkpoints"][0]
    assert set(row) == {
        "checkpoint_id",
        "trace_id",
        "step",
        "parent_id",
        "graph_hash",
        "created_at",
        "current_node",
        "metadata",
        "size",
    }


def _older(stdout: str) -> list[str]:
    """The command the ``older:`` hint of a history page gives, as its words."""
    (hint,) = [line for line in stdout.splitlines() if line.startswith("older: ")]
    words = shlex.split(hint.removeprefix("older: "))
    assert words[0] == "flowpoint"
    return words[1:]


def test_history_table_says_how_to_see_older_checkpoints(seeded: Seeded, tmp_path: Path) -> None:
    result = invoke("history", "alpha", "--limit", "2", "--store", seeded.url)
    assert result.exit_code == 0, result.output
    assert str(seeded.ids["alpha"][2]) in result.stdout
    assert str(seeded.ids["alpha"][0]) not in result.stdout
    older = _older(result.stdout)
    assert older == ["history", "alpha", "--limit", "2", "--before", "1", "--store", seeded.url]
    # Run as printed, from anywhere, it shows the next page of the same store.
    (tmp_path / "elsewhere").mkdir()
    done = flowpoint(*older, cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stderr
    assert str(seeded.ids["alpha"][0]) in done.stdout
    assert "older:" not in done.stdout


def test_the_history_hint_keeps_the_global_store_and_quotes_the_trace(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "odd.db")
    make_store(url, {"user 42's $HOME": 3})
    result = invoke("--store", url, "history", "user 42's $HOME", "--limit", "1")
    assert result.exit_code == 0, result.output
    older = _older(result.stdout)
    assert older[:2] == ["history", "user 42's $HOME"]
    assert older[-2:] == ["--store", url]
    page = flowpoint(*older, cwd=tmp_path)
    assert page.returncode == 0, page.stderr
    assert _older(page.stdout)[-4:] == ["--before", "1", "--store", url]


def test_the_history_hint_leaves_out_what_the_environment_gives(seeded: Seeded) -> None:
    """A store from FLOWPOINT_STORE stays there: the hint works in the same environment."""
    environment = {"FLOWPOINT_STORE": seeded.url}
    result = invoke("history", "alpha", "--limit", "1", env=environment)
    assert result.exit_code == 0, result.output
    assert _older(result.stdout) == ["history", "alpha", "--limit", "1", "--before", "2"]


def test_the_history_hint_masks_a_password() -> None:
    from flowpoint.cli._common import Settings, command_line

    settings = Settings(store="postgresql://app:hunter2@db/runs", keyring=Path("ring.json"))
    line = command_line(settings, "history", "t", "--before", "3")
    assert line == (
        "flowpoint history t --before 3 --store 'postgresql://app:***@db/runs' --keyring ring.json"
    )


def test_history_of_a_missing_trace_exits_4(seeded: Seeded) -> None:
    done = flowpoint("history", "nope", "--store", seeded.url)
    assert done.returncode == 4
    assert "no trace 'nope'" in one_line_error(done.stderr)


def test_history_past_the_first_step_of_a_trace_is_empty_not_missing(seeded: Seeded) -> None:
    result = invoke("history", "alpha", "--before", "0", "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoints"] == []


def test_an_invalid_trace_id_is_one_line(seeded: Seeded) -> None:
    result = invoke("history", "bad\x00trace", "--store", seeded.url)
    assert result.exit_code == 1
    assert "invalid trace id" in one_line_error(result.stderr)


# -- show ----------------------------------------------------------------------------------


def test_show_decodes_the_state_generically(seeded: Seeded) -> None:
    checkpoint_id = seeded.ids["alpha"][2]
    result = invoke("show", str(checkpoint_id), "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["checkpoint"]["checkpoint_id"] == str(checkpoint_id)
    assert document["checkpoint"]["parent_id"] == str(seeded.ids["alpha"][1])
    assert document["checkpoint"]["metadata"] == {"source": "test", "n": 2}
    assert document["encoding"] == {
        "format": "msgpack",
        "compression": None,
        "key_id": None,
        "delta_of": None,
    }
    assert document["state"] == {"count": 2, "items": [0, 1], "name": "alpha"}


def test_show_prints_header_and_state_for_people(seeded: Seeded) -> None:
    result = invoke("show", str(seeded.ids["beta/one"][0]), "--store", seeded.url)
    assert result.exit_code == 0, result.output
    assert "trace id" in result.stdout
    assert "beta/one" in result.stdout
    assert "not encrypted" in result.stdout
    assert '"name": "beta/one"' in result.stdout


@dataclass
class Research:
    question: str
    plan: list[str]


def test_show_with_type_decodes_into_the_named_class(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "demo.db")
    run_demo_quietly(url)
    latest = json.loads(invoke("history", TRACE, "--limit", "1", "--store", url, "--json").stdout)
    checkpoint_id = latest["checkpoints"][0]["checkpoint_id"]
    typed = invoke(
        "show", checkpoint_id, "--type", "flowpoint.cli._demo:Research", "--store", url, "--json"
    )
    assert typed.exit_code == 0, typed.output
    assert json.loads(typed.stdout)["state"]["published"] is True
    # A class the stored state does not fit: the codec says so, exit 1.
    misfit = invoke("show", checkpoint_id, "--type", "uuid:UUID", "--store", url)
    assert misfit.exit_code == 1
    assert "does not fit" in one_line_error(misfit.stderr)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("nomodule", "MODULE:CLASS"), ("no_such_module_xyz:C", "cannot import"), ("json:Nope", "no")],
)
def test_a_bad_type_is_a_usage_error(seeded: Seeded, spec: str, fragment: str) -> None:
    result = invoke("show", str(seeded.ids["alpha"][0]), "--type", spec, "--store", seeded.url)
    assert result.exit_code == 2
    assert fragment in usage_error(result.stderr)


def test_show_a_missing_checkpoint_exits_4(seeded: Seeded) -> None:
    missing = "01a219c6-c3ee-74c4-9917-b9fd04568000"
    done = flowpoint("show", missing, "--store", seeded.url)
    assert done.returncode == 4
    assert f"no checkpoint {missing}" in one_line_error(done.stderr)


@pytest.mark.parametrize("text", ["not-a-uuid", "01a2x", "01a219cbc63a", "01a219cb--c63a", " "])
def test_show_a_malformed_id_is_a_usage_error(seeded: Seeded, text: str) -> None:
    result = invoke("show", text, "--store", seeded.url)
    assert result.exit_code == 2
    assert "not a checkpoint id or the start of one" in usage_error(result.stderr)


def test_show_and_diff_take_the_start_of_an_id(seeded: Seeded) -> None:
    everything = [one for ids in seeded.ids.values() for one in ids]
    old, new = seeded.ids["alpha"][1], seeded.ids["alpha"][2]
    whole = invoke("show", str(new), "--store", seeded.url, "--json")
    start = unique_start(new, everything)
    for text in (start, start.upper(), f"  {start}"):
        by_start = invoke("show", text, "--store", seeded.url, "--json")
        assert by_start.exit_code == 0, by_start.output
        assert json.loads(by_start.stdout) == json.loads(whole.stdout)
    changed = invoke("diff", unique_start(old, everything), start, "--store", seeded.url, "--json")
    assert changed.exit_code == 0, changed.output
    document = json.loads(changed.stdout)
    assert (document["from"]["checkpoint_id"], document["to"]["checkpoint_id"]) == (
        str(old),
        str(new),
    )


def test_an_ambiguous_start_is_a_usage_error_naming_the_ids(seeded: Seeded) -> None:
    alpha = seeded.ids["alpha"]
    start = str(alpha[0])[:8]
    assert all(str(one).startswith(start) for one in alpha)
    for args in (["show", start], ["diff", start, str(alpha[0])]):
        done = flowpoint(*args, "--store", seeded.url)
        assert done.returncode == 2, done.stderr
        line = usage_error(done.stderr)
        assert f"'{start}' starts more than one checkpoint id" in line
        assert str(alpha[0]) in line
        assert str(alpha[1]) in line


def test_a_start_no_id_has_exits_4(seeded: Seeded) -> None:
    done = flowpoint("show", "ffffffff-ff", "--store", seeded.url)
    assert done.returncode == 4, done.stderr
    assert "no checkpoint id starts with 'ffffffff-ff'" in one_line_error(done.stderr)
    other = flowpoint("diff", str(seeded.ids["alpha"][0]), "fff", "--store", seeded.url)
    assert other.returncode == 4, other.stderr


def test_show_as_a_subprocess(seeded: Seeded) -> None:
    done = flowpoint("show", str(seeded.ids["alpha"][1]), "--json", "--store", seeded.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"]["items"] == [0]


# -- diff ----------------------------------------------------------------------------------


def test_diff_lists_the_changes_in_the_state(seeded: Seeded) -> None:
    old, new = seeded.ids["alpha"][1], seeded.ids["alpha"][2]
    result = invoke("diff", str(old), str(new), "--store", seeded.url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["from"]["step"] == 1
    assert document["to"]["step"] == 2
    assert document["changes"] == [
        {"path": "$.count", "change": "changed", "old": 1, "new": 2},
        {"path": "$.items[1]", "change": "added", "new": 1},
    ]


def test_diff_for_people_and_across_traces(seeded: Seeded) -> None:
    result = invoke(
        "diff", str(seeded.ids["alpha"][0]), str(seeded.ids["beta/one"][0]), "--store", seeded.url
    )
    assert result.exit_code == 0, result.output
    assert '~ $.name: "alpha" -> "beta/one"' in result.stdout
    same = invoke(
        "diff", str(seeded.ids["alpha"][0]), str(seeded.ids["alpha"][0]), "--store", seeded.url
    )
    assert "no changes in the state" in same.stdout


def test_diff_with_a_missing_side_exits_4(seeded: Seeded) -> None:
    done = flowpoint(
        "diff",
        str(seeded.ids["alpha"][0]),
        "01a219c6-c3ee-74c4-9917-b9fd04568000",
        "--store",
        seeded.url,
    )
    assert done.returncode == 4
    assert "no checkpoint" in one_line_error(done.stderr)


# -- formatting ----------------------------------------------------------------------------


def test_formatting_helpers() -> None:
    from datetime import UTC, datetime, timedelta, timezone
    from uuid import UUID

    moment = datetime(2026, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2026-05-01T12:00:00.123456Z"
    assert format_time(moment, precise=False) == "2026-05-01T12:00:00Z"
    assert format_time(datetime(2026, 5, 1, tzinfo=UTC)) == "2026-05-01T00:00:00Z"
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]
    assert to_plain({"at": moment, "id": UUID(int=1), "raw": b"\x00", 3: [Research("q", [])]}) == {
        "at": "2026-05-01T14:00:00.123456+02:00",
        "id": "00000000-0000-0000-0000-000000000001",
        "raw": "AA==",
        "3": [{"question": "q", "plan": []}],
    }


# -- metadata ------------------------------------------------------------------------------


def test_metadata_is_shown_sorted_by_key_whatever_order_it_was_saved_in(tmp_path: Path) -> None:
    from flowpoint import Checkpoint, SyncCheckpointStore

    url = sqlite_url(tmp_path / "meta.db")
    saved = {"zeta": 1, "alpha": "x", "mid": True, "beta": None}
    with SyncCheckpointStore.open(url, dict) as store:
        checkpoint = Checkpoint.first("a", {"n": 1}, metadata=saved)
        store.save_with_trace("t", checkpoint, GRAPH)
    keys = sorted(saved)
    listed = json.loads(invoke("history", "t", "--store", url, "--json").stdout)
    assert list(listed["checkpoints"][0]["metadata"]) == keys
    shown = json.loads(
        invoke("show", str(checkpoint.checkpoint_id), "--store", url, "--json").stdout
    )
    assert list(shown["checkpoint"]["metadata"]) == keys
    expected = "alpha=x beta=null mid=true zeta=1"
    assert expected in invoke("history", "t", "--store", url).stdout
    assert expected in invoke("show", str(checkpoint.checkpoint_id), "--store", url).stdout
