"""The app as a whole: help, exit codes, one-line errors, ``--debug``, and the JSON differ."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from types import ModuleType

import pytest
import typer

from flowpoint.cli import _common, _jsondiff, _maintain
from flowpoint.cli._app import app
from flowpoint.cli._common import shown
from flowpoint.cli._jsondiff import Change, diff_values, same_value
from flowpoint.cli._output import ExitCode, exit_code_of
from flowpoint.errors import CheckpointConflict, CodecError, CorruptCheckpoint, StorageError
from tests.cli.conftest import Seeded, flowpoint, invoke, one_line_error, usage_error

COMMANDS = [
    "demo",
    "traces",
    "history",
    "show",
    "diff",
    "verify",
    "prune",
    "delete",
    "copy",
    "export",
    "import",
    "graph",
]


def test_help_lists_every_command_and_the_exit_codes() -> None:
    done = flowpoint("--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.replace("│", " ").split())
    for command in COMMANDS:
        assert f" {command} " in text
    assert "Exit codes: 0 success; 1 error" in text
    assert "3 corruption found; 4 trace or checkpoint not found" in text
    for option in (
        "--store",
        "FLOWPOINT_STORE",
        "--json",
        "--debug",
        "--keyring",
        "FLOWPOINT_KEYRING",
    ):
        assert option in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_no_command_shows_help() -> None:
    result = invoke()
    assert result.exit_code == ExitCode.USAGE
    assert "Usage: flowpoint [OPTIONS] COMMAND" in result.stdout


def test_python_dash_m_flowpoint_is_the_command(seeded: Seeded) -> None:
    """``python -m flowpoint`` runs the same app, under the same name."""
    version = subprocess.run(
        [sys.executable, "-m", "flowpoint", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("flowpoint ")
    listed = subprocess.run(
        [sys.executable, "-m", "flowpoint", "traces", "--json", "--store", seeded.url],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert [row["trace_id"] for row in json.loads(listed.stdout)["traces"]] == ["alpha", "beta/one"]
    helped = subprocess.run(
        [sys.executable, "-m", "flowpoint", "show", "--help"], capture_output=True, text=True
    )
    assert helped.stdout.startswith("Usage: flowpoint show ")


def _flags(command: str | None) -> list[str]:
    """The boolean flags of ``flowpoint [COMMAND]``, as the app declares them."""
    group = typer.main.get_command(app)
    target = group if command is None else group.commands[command]  # type: ignore[attr-defined]
    return [
        name for param in target.params if getattr(param, "is_flag", False) for name in param.opts
    ]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_boolean_flags_show_as_flags_in_help(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    flags = _flags(command)
    assert "--json" in flags or command is None or command == "demo"
    assert "--debug" in flags or command == "demo"
    assert "<bool>" not in result.stdout
    assert "--no-" not in result.stdout
    for flag in [*flags, "--help"]:
        # The flag alone, then its help: no value, no "/ --no-flag", no type.
        assert re.search(rf"^  {flag}(  +\S|$)", result.stdout, re.MULTILINE), (flag, result.stdout)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["--bogus", "traces"], "No such option: --bogus"),
        (["traces", "--limit", "3"], "No such option: --limit"),
        (["history"], "Missing argument 'TRACE'"),
        (["history", "t", "--limit", "0"], "Invalid value for '--limit'"),
        (["history", "t", "--limit", "many"], "Invalid value for '--limit'"),
        (["show", "not-an-id"], "not a checkpoint id or the start of one"),
        (["diff", "01a219cb"], "Missing argument 'ID2'"),
        (["prune", "t"], "give --keep-latest N, --older-than AGE, or both"),
        (["prune", "t", "--all", "--keep-latest", "1"], "give a TRACE or --all (not both)"),
        (["prune", "--all", "--older-than", "soon"], "whole number and a unit"),
        (["copy", "memory://"], "Missing argument 'DST_URL'"),
        (["export"], "Missing argument 'FILE'"),
        (["delete"], "Missing argument 'CHECKPOINT_ID'"),
        (["show", "01a219cb", "--type", "nomodule"], "MODULE:CLASS"),
        (["graph"], "Missing argument 'MODULE:ATTR'"),
        (["graph", "nomodule"], "expected MODULE:ATTR"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    done = flowpoint("--store", "memory://", *args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    line = usage_error(done.stderr)
    assert fragment in line
    assert re.search(r"\(see 'flowpoint( [a-z]+)? --help'\)$", line), line
    assert done.stdout == ""


def test_a_type_the_codec_cannot_hold_is_a_usage_error(seeded: Seeded) -> None:
    done = flowpoint(
        "show", str(seeded.ids["alpha"][0]), "--type", "json:loads", "--store", seeded.url
    )
    assert done.returncode == ExitCode.USAGE, done.stderr
    line = usage_error(done.stderr)
    assert "--type" in line
    assert "cannot store states of type" in line


def test_debug_prints_the_traceback(seeded: Seeded) -> None:
    plain = flowpoint("history", "nope", "--store", seeded.url)
    assert plain.returncode == 4
    one_line_error(plain.stderr)
    debug = flowpoint("--debug", "history", "nope", "--store", seeded.url)
    assert debug.returncode == 4
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == "error: no trace 'nope' in " + seeded.url


def test_an_unknown_command_is_a_usage_error() -> None:
    assert invoke("frobnicate").exit_code == ExitCode.USAGE


def test_exit_codes_of_errors() -> None:
    assert exit_code_of(CorruptCheckpoint(None, "bad")) == ExitCode.CORRUPT
    assert exit_code_of(CheckpointConflict("t", 1)) == ExitCode.ERROR
    assert exit_code_of(StorageError("down")) == ExitCode.ERROR
    assert exit_code_of(CodecError("no key")) == ExitCode.ERROR
    assert exit_code_of(ValueError("bad url")) == ExitCode.ERROR
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4]


# -- the JSON differ -----------------------------------------------------------------------


def test_diff_values_walks_dicts_and_lists() -> None:
    old = {"a": 1, "gone": True, "nested": {"list": [1, 2, 3], "x": "y"}}
    new = {"a": 2, "nested": {"list": [1, 5], "x": "y"}, "new key": None}
    assert [change.as_json() for change in diff_values(old, new)] == [
        {"path": "$.a", "change": "changed", "old": 1, "new": 2},
        {"path": "$.gone", "change": "removed", "old": True},
        {"path": "$.nested.list[1]", "change": "changed", "old": 2, "new": 5},
        {"path": "$.nested.list[2]", "change": "removed", "old": 3},
        {"path": '$["new key"]', "change": "added", "new": None},
    ]


def test_diff_values_sees_kinds_json_cannot_confuse() -> None:
    assert diff_values(1, 1.0) == [Change("$", "changed", old=1, new=1.0)]
    assert diff_values({"f": True}, {"f": 1}) == [Change("$.f", "changed", old=True, new=1)]
    assert diff_values([1], {"0": 1}) == [Change("$", "changed", old=[1], new={"0": 1})]
    assert diff_values({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []
    assert same_value({"a": [1.0]}, {"a": [1.0]})
    assert not same_value({"a": [1.0]}, {"a": [1]})


def test_change_descriptions_are_one_line() -> None:
    long = "x" * 500
    line = Change("$.draft", "changed", old="", new=long).describe(width=40)
    assert line.startswith('~ $.draft: "" -> "xxx')
    assert len(line) < 80
    assert Change("$.k", "added", new={"a": 1}).describe() == '+ $.k: {"a":1}'
    assert Change("$.k", "removed", old=[1]).describe() == "- $.k: [1]"
    assert json.loads(json.dumps(Change("$", "added", new=1).as_json())) == {
        "path": "$",
        "change": "added",
        "new": 1,
    }


@pytest.mark.parametrize("module", [_common, _jsondiff, _maintain])
def test_docstring_examples(module: ModuleType) -> None:
    failures, tried = doctest.testmod(module, raise_on_error=False)
    assert tried > 0
    assert failures == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///flowpoint.db", "sqlite:///flowpoint.db"),
        ("postgresql://app@db/runs", "postgresql://app@db/runs"),
        ("postgresql://app:pw@db:5432/runs", "postgresql://app:***@db:5432/runs"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "s3://bucket/p?endpoint=http://x&secret_access_key=abc",
            "s3://bucket/p?endpoint=http%3A%2F%2Fx&secret_access_key=***",
        ),
    ],
)
def test_shown_masks_secrets_in_urls(url: str, expected: str) -> None:
    assert shown(url) == expected


def test_a_password_in_a_store_url_is_never_printed() -> None:
    done = flowpoint("traces", "--store", "nosuch://app:hunter2@db/x")
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert "hunter2" not in line
    assert "app:***@db" in line
