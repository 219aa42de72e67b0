"""``flowpoint graph MODULE:ATTR [--png FILE]``: the user's graph as Mermaid text or a PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowpoint.cli._graph import GRAPHVIZ_MISSING
from flowpoint.cli._output import ExitCode
from flowpoint.graph._dot import find_dot
from tests.cli.conftest import flowpoint, invoke
from tests.harnesses.base import unavailable

FLOWS = textwrap.dedent("""\
    from flowpoint import END, START, Graph, InMemoryBlobStore, Runner

    def nothing(state):
        return None

    def route(state) -> str:
        return "ok"

    g = Graph("flows")
    g.add_node("plan", nothing).add_node("web", nothing).add_node("docs", nothing)
    g.add_node("write", nothing, version=3)
    g.add_edge(START, "plan").add_edge("plan", "web").add_edge("plan", "docs")
    g.add_edge(["web", "docs"], "write")
    g.add_conditional_edges("write", route, {"ok": END, "again": "plan"})
    graph = g.build()
    runner = Runner(graph, InMemoryBlobStore(), interrupt_before=["write"])

    class Holder:
        graph = graph

    not_a_graph = 42
    broken = Graph("broken").add_node("a", nothing)
    """)

EXPECTED = textwrap.dedent("""\
    flowchart TD
        __start__(["START"])
        n1["plan"]
        n2["docs"]
        n3["web"]
        n4["write<br>version=3"]
        j1(("join"))
        __end__(["END"])
        __start__ --> n1
        n1 --> n2
        n1 --> n3
        n4 -.->|"again"| n1
        n4 -.->|"ok"| __end__
        n2 --- j1
        n3 --- j1
        j1 --> n4
    """)

INTERRUPTED = EXPECTED.replace(
    'n4["write<br>version=3"]', 'n4["write<br>version=3<br>interrupt before"]'
) + ("    classDef interrupt stroke-width:3px,stroke-dasharray:6 3\n    class n4 interrupt\n")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory holding the user's module ``flows.py``, as the current directory.

    The command imports it in this process too: it is forgotten afterwards.
    """
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [name for name in sys.modules if name in ("flows", "looping")]:
        del sys.modules[name]


def _installed(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``flowpoint`` command, which does not put the current directory on sys.path."""
    command = Path(sys.executable).with_name("flowpoint")
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("attr", "expected"),
    [("g", EXPECTED), ("graph", EXPECTED), ("Holder.graph", EXPECTED), ("runner", INTERRUPTED)],
)
def test_prints_a_graph_built_graph_or_runner(project: Path, attr: str, expected: str) -> None:
    result = invoke("graph", f"flows:{attr}")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


def test_the_installed_command_finds_modules_in_the_current_directory(project: Path) -> None:
    done = _installed("graph", "flows:runner", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == INTERRUPTED
    assert done.stderr == ""


def test_a_module_may_run_an_event_loop_as_it_is_imported(project: Path) -> None:
    (project / "looping.py").write_text(
        "import asyncio\nfrom flows import graph\nasyncio.run(asyncio.sleep(0))\n",
        encoding="utf-8",
    )
    result = invoke("graph", "looping:graph")
    assert result.exit_code == 0, result.output
    assert result.stdout == EXPECTED


def test_goto_targets_and_subgraphs_are_drawn(project: Path) -> None:
    (project / "routed.py").write_text(
        textwrap.dedent("""\
            from flowpoint import END, START, Graph
            from flows import g as child

            def nothing(state):
                return None

            g = Graph("routed").add_node("triage", nothing, goto=["flows", END])
            g.add_node("flows", child).add_edge(START, "triage").add_edge("flows", END)
            """),
        encoding="utf-8",
    )
    try:
        result = invoke("graph", "routed:g")
    finally:
        sys.modules.pop("routed", None)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2:] == [
        '    n1["triage"]',
        '    n2[["flows<br>subgraph: flows"]]',
        '    __end__(["END"])',
        "    __start__ --> n1",
        '    n1 -.->|"goto"| n2',
        '    n1 -.->|"goto"| __end__',
        "    n2 --> __end__",
    ]


def test_json(project: Path) -> None:
    result = invoke("--json", "graph", "flows:graph")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["graph"] == "flows"
    assert document["mermaid"] + "\n" == EXPECTED
    assert document["graph_hash"].startswith("0x")
    assert len(document["graph_hash"]) == 18
    assert "png" not in document


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("flows", "expected MODULE:ATTR (such as 'myapp.flows:graph'), not 'flows'"),
        (":graph", "expected MODULE:ATTR"),
        ("no_such_module_xyz:graph", "cannot import 'no_such_module_xyz'"),
        ("flows:nope", "module 'flows' has no 'nope'"),
        ("flows:Holder.nope", "module 'flows' has no 'Holder.nope'"),
        ("flows:not_a_graph", "flows:not_a_graph is an int, not a Graph, BuiltGraph or Runner"),
        ("flows:nothing", "is a function, not a Graph"),
    ],
)
def test_a_bad_target_is_a_usage_error(project: Path, spec: str, fragment: str) -> None:
    done = flowpoint("graph", spec, cwd=project)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.startswith("error: Invalid value for 'MODULE:ATTR': ")
    assert fragment in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("module", "fragment"),
    [
        (
            "raise RuntimeError('no\\nconfig')",
            "importing 'broken_flows' raised RuntimeError: no config",
        ),
        ("def (", "importing 'broken_flows' raised SyntaxError: invalid syntax"),
        ("import sys\nsys.exit(3)", "importing 'broken_flows' raised SystemExit: 3"),
        ("import no_such_dependency_xyz", "cannot import 'broken_flows': No module named 'no_such"),
    ],
)
def test_a_module_that_does_not_import_is_one_line(
    project: Path, module: str, fragment: str
) -> None:
    (project / "broken_flows.py").write_text(module, encoding="utf-8")
    done = flowpoint("graph", "broken_flows:graph", cwd=project)
    code = ExitCode.USAGE if "cannot import" in fragment else ExitCode.ERROR
    assert done.returncode == code, done.stderr
    assert fragment in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    debugged = flowpoint("graph", "broken_flows:graph", "--debug", cwd=project)
    assert debugged.returncode == code
    if code == ExitCode.ERROR:
        assert "Traceback" in debugged.stderr


def test_a_graph_that_does_not_build_is_one_line(project: Path) -> None:
    done = flowpoint("graph", "flows:broken", cwd=project)
    assert done.returncode == ExitCode.ERROR
    assert done.stderr == (
        "error: graph 'broken' (flows:broken) does not build: the graph has no edge from START\n"
    )
    assert done.stdout == ""


def _dot_program() -> str:
    program = find_dot()
    if program is None:
        unavailable("Graphviz's dot is not installed (apt-get install graphviz)")
    return program


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_png(project: Path) -> None:
    _dot_program()
    target = project / "out.png"
    target.write_bytes(b"an older picture")
    done = _installed("graph", "flows:runner", "--png", "out.png", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wrote out.png: graph 'flows', 4 node(s)\n"
    width, height = _png_size(target.read_bytes())
    assert 100 < width < height  # top to bottom
    assert sorted(path.name for path in project.iterdir() if path.name != "__pycache__") == [
        "flows.py",
        "out.png",
    ]


def test_png_in_process_with_json(project: Path) -> None:
    _dot_program()
    result = invoke("graph", "flows:graph", "--png", "picture.png", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["png"] == "picture.png"
    assert document["mermaid"] + "\n" == EXPECTED
    _png_size((project / "picture.png").read_bytes())


def test_png_without_graphviz_says_what_to_install(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-programs"
    empty.mkdir()
    done = _installed("graph", "flows:graph", "--png", "out.png", cwd=project, path=str(empty))
    assert done.returncode == ExitCode.ERROR
    assert done.stderr == f"error: {GRAPHVIZ_MISSING}\n"
    assert "apt-get install graphviz" in done.stderr
    assert done.stdout == ""
    assert not (project / "out.png").exists()
    result = invoke("graph", "flows:graph", "--png", "out.png", env={"PATH": str(empty)})
    assert result.exit_code == ExitCode.ERROR
    assert result.stdout == ""
    assert not (project / "out.png").exists()


def test_png_into_a_directory_or_nowhere(project: Path) -> None:
    _dot_program()
    (project / "pictures").mkdir()
    into_directory = flowpoint("graph", "flows:graph", "--png", "pictures", cwd=project)
    assert into_directory.returncode == ExitCode.ERROR
    assert into_directory.stderr == "error: cannot write the picture pictures: it is a directory\n"
    nowhere = flowpoint("graph", "flows:graph", "--png", "missing/out.png", cwd=project)
    assert nowhere.returncode == ExitCode.ERROR
    assert nowhere.stderr == (
        "error: cannot write the picture missing/out.png: No such file or directory\n"
    )
    assert into_directory.stdout == nowhere.stdout == ""
    assert list((project / "pictures").iterdir()) == []


def test_a_failing_dot_leaves_no_file(project: Path, tmp_path: Path) -> None:
    programs = tmp_path / "programs"
    programs.mkdir()
    fake = programs / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: out of memory' >&2\nexit 2\n")
    fake.chmod(0o755)
    result = invoke("graph", "flows:graph", "--png", "out.png", env={"PATH": str(programs)})
    assert result.exit_code == ExitCode.ERROR
    assert "Graphviz's dot could not render the graph: Error: out of memory" in result.stderr
    assert not (project / "out.png").exists()
