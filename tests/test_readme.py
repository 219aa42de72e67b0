"""The README's commands and examples are the ones that work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)


def test_the_readme_opens_with_the_demo_and_the_test_commands() -> None:
    demo, tests = (block.strip() for block in BASH_BLOCKS[:2])
    assert README.index("```bash") < README.index("```python")
    assert demo.endswith("pip install . && flowpoint demo")
    assert tests.endswith("pip install -e '.[test]' && pytest")


def test_ci_runs_the_readmes_test_command() -> None:
    command = BASH_BLOCKS[1].strip().split(" && ", 3)[-2:]
    assert " && ".join(command) in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[f"example-{n}" for n, _ in enumerate(PYTHON_BLOCKS)]
)
def test_python_examples_run(block: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout
