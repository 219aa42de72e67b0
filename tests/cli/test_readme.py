"""The README's command-line walkthrough prints what the commands print.

Checkpoint ids and times differ from run to run; everything else (sizes, hashes,
columns, hints, counts) must be as the README shows it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from flowpoint import SyncCheckpointStore
from flowpoint.cli._demo import TRACE
from tests.cli.conftest import flowpoint, run_demo_quietly

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
_SECTION = README[README.index("## Command line\n") : README.index("## Development\n")]
(_WALKTHROUGH,) = re.findall(r"After `flowpoint demo`:\n\n```text\n(.*?)```", _SECTION, re.DOTALL)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_ID_START = re.compile(r"[0-9a-f]{8}-[0-9a-f-]*")


def _steps() -> list[tuple[str, str]]:
    """The walkthrough as (command line, what it prints)."""
    steps: list[tuple[str, str]] = []
    for line in _WALKTHROUGH.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        else:
            command, printed = steps[-1]
            steps[-1] = (command, printed + line + "\n")
    return steps


def _alike(text: str) -> str:
    """``text`` with what differs from run to run (ids, times) made the same."""
    return _TIME.sub("YYYY-MM-DDTHH:MM:SSZ", _UUID.sub("<" + "-" * 34 + ">", text))


def test_the_walkthrough_is_what_the_commands_print(tmp_path: Path, postgres_url: str) -> None:
    steps = _steps()
    assert [shlex.split(command)[1] for command, _ in steps] == [
        "traces",
        "history",
        "diff",
        "copy",
        "verify",
    ]
    default_store = f"sqlite:///{tmp_path / 'flowpoint.db'}"  # the commands run in tmp_path
    run_demo_quietly(default_store)
    with SyncCheckpointStore.open(default_store) as store:
        real = {info.step: str(info.checkpoint_id) for info in store.history(TRACE)}
    listed = re.findall(rf"^(\d+) +({_UUID.pattern})", _WALKTHROUGH, re.MULTILINE)
    shown = {full: int(step) for step, full in listed}
    readme_url = re.search(r"postgresql://\S+", _WALKTHROUGH)
    assert readme_url is not None
    for command, printed in steps:
        words = shlex.split(command)
        assert words[0] == "flowpoint"
        args = []
        for word in words[1:]:
            if _ID_START.fullmatch(word):  # the start of an id the history above shows
                (step,) = [step for full, step in shown.items() if full.startswith(word)]
                word = real[step]
            args.append(word.replace(readme_url.group(), postgres_url))
        done = flowpoint(*args, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        assert _alike(done.stdout) == _alike(printed), f"$ {command}\n{done.stdout}"
