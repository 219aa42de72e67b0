"""``--type MODULE:CLASS`` of ``show``, ``diff`` and ``verify``: whatever it names, one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowpoint.cli._output import ExitCode
from tests.cli.conftest import Seeded, flowpoint, invoke, one_line_error

MODULES = {
    "raises_on_import": "raise RuntimeError('no\\nconfig')",
    "exits_on_import": "import sys\nsys.exit(3)",
    "bad_syntax": "def (",
    "missing_dependency": "import no_such_dependency_xyz",
    "states": (
        "import asyncio\n"
        "asyncio.run(asyncio.sleep(0))  # a module may run an event loop as it is imported\n"
        "value = 5\n"
        "def function():\n    pass\n"
        "from typing import TypedDict\n"
        "class Counted(TypedDict):\n    count: int\n    items: list[int]\n    name: str\n"
    ),
}

CASES = [
    (
        "raises_on_import:X",
        ExitCode.ERROR,
        "importing 'raises_on_import' raised RuntimeError: no config",
    ),
    ("exits_on_import:X", ExitCode.ERROR, "importing 'exits_on_import' raised SystemExit: 3"),
    ("bad_syntax:X", ExitCode.ERROR, "importing 'bad_syntax' raised SyntaxError"),
    ("missing_dependency:X", ExitCode.USAGE, "cannot import 'missing_dependency'"),
    ("no_such_module_xyz:X", ExitCode.USAGE, "cannot import 'no_such_module_xyz'"),
    ("states:Nope", ExitCode.USAGE, "module 'states' has no 'Nope'"),
    ("states:value", ExitCode.USAGE, "cannot store states of type 5"),
    ("states:function", ExitCode.USAGE, "cannot store states of type <function function"),
    ("asyncio:tasks", ExitCode.USAGE, "cannot store states of type <module"),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    return tmp_path


def _commands(seeded: Seeded, spec: str) -> list[list[str]]:
    first, last = (str(one) for one in seeded.ids["alpha"][::2])
    return [
        ["show", first, "--type", spec, "--store", seeded.url],
        ["diff", first, last, "--type", spec, "--store", seeded.url],
        ["verify", "--type", spec, "--store", seeded.url],
    ]


@pytest.mark.parametrize(("spec", "code", "fragment"), CASES)
def test_a_bad_type_is_one_line_as_a_subprocess(
    project: Path, seeded: Seeded, spec: str, code: ExitCode, fragment: str
) -> None:
    for args in _commands(seeded, spec):
        done = flowpoint(*args, cwd=project)
        assert done.returncode == code, (args, done.stderr)
        assert fragment in one_line_error(done.stderr), args
        assert done.stdout == "", args


def test_a_bad_type_is_one_line_in_process(
    project: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project))
    for spec, code, fragment in CASES:
        for args in _commands(seeded, spec):
            result = invoke(*args)
            assert result.exit_code == code, (args, result.output)
            assert fragment in one_line_error(result.stderr), args


def test_debug_shows_what_the_module_raised(project: Path, seeded: Seeded) -> None:
    args = _commands(seeded, "raises_on_import:X")[0]
    done = flowpoint("--debug", *args, cwd=project)
    assert done.returncode == ExitCode.ERROR
    assert "Traceback" in done.stderr
    assert "RuntimeError: no" in done.stderr


def test_a_module_that_runs_an_event_loop_as_it_is_imported(project: Path, seeded: Seeded) -> None:
    done = flowpoint(*_commands(seeded, "states:Counted")[0], "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    assert '"state"' in done.stdout
