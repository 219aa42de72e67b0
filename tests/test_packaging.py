"""What the core install needs is declared: every third-party import of the core is a dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "flowpoint"
# Backends whose drivers are optional extras (they import their driver only when used), and
# the LangGraph adapter, which needs the langgraph extra.
OPTIONAL = (
    {SOURCE / "stores" / name for name in ("postgres.py", "_postgres_sql.py", "redis.py", "s3.py")}
    | {SOURCE / "queue" / "_postgres.py"}
    | set((SOURCE / "langgraph").glob("*.py"))
)


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = (re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0] for spec in project["dependencies"])
    return {name.lower().replace("_", "-") for name in names}


def test_every_third_party_import_of_the_core_is_a_declared_dependency() -> None:
    modules: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if path not in OPTIONAL:
            modules |= _top_level_imports(path)
    third_party = {m for m in modules if m not in sys.stdlib_module_names and m != "flowpoint"}
    distributions = packages_distributions()
    missing = {
        module: distributions.get(module, ["?"])
        for module in third_party
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [])} & _declared()
    }
    assert not missing, f"imported by the core but not in [project.dependencies]: {missing}"
