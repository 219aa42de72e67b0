"""``graph``: print a graph as a Mermaid flowchart, or render it as a PNG with Graphviz."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowpoint.cli._common import DebugOption, JsonOption, Settings, import_object
from flowpoint.cli._files import file_output
from flowpoint.cli._output import emit_json, fail, format_hash, run
from flowpoint.errors import GraphDefinitionError
from flowpoint.graph._builder import BuiltGraph, Graph
from flowpoint.graph._dot import RenderError, dot, find_dot, render_png
from flowpoint.graph._mermaid import mermaid
from flowpoint.graph._picture import Picture, picture
from flowpoint.graph._runner import Runner

__all__ = ["GRAPHVIZ_MISSING", "built_graph", "graph", "load_graph"]

GRAPHVIZ_MISSING = (
    "--png needs Graphviz's dot program, which is not on PATH: install Graphviz "
    "(Debian, Ubuntu: apt-get install graphviz; macOS: brew install graphviz) and run again, "
    "or leave out --png for the Mermaid text"
)
"""What ``graph --png`` says when it cannot render."""

_PARAMETER = "'MODULE:ATTR'"


def graph(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:ATTR",
            help="The module (imported from the current directory first, as python -m does) "
            "and its Graph, BuiltGraph or Runner (whose interrupts are marked): myapp.flows:graph.",
            show_default=False,
        ),
    ],
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            metavar="FILE",
            help="Render the graph into this PNG file with Graphviz's dot instead of printing it.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Print a graph as a Mermaid flowchart, or render it as a PNG (--png, with Graphviz)."""
    settings = Settings.of(ctx, json=as_json, debug=debug)
    run(lambda: _graph(settings, target, png), debug=settings.debug)


def _graph(settings: Settings, target: str, png: Path | None) -> None:
    built, drawing = _load(target)
    document: dict[str, Any] = {
        "graph": built.name,
        "graph_hash": format_hash(built.hash_u64()),
        "mermaid": mermaid(drawing),
    }
    if png is not None:
        program = find_dot()
        if program is None:
            fail(GRAPHVIZ_MISSING)
        try:
            image = render_png(dot(drawing), program)
        except RenderError as exc:
            fail(str(exc))
        try:
            with file_output(str(png), "the picture") as file:
                file.write(image)
        except OSError as exc:
            fail(f"cannot write the picture {png}: {exc.strerror or exc}")
        document["png"] = str(png)
    if settings.json:
        emit_json(document)
    elif png is None:
        typer.echo(document["mermaid"])
    else:
        typer.echo(f"wrote {png}: graph {built.name!r}, {len(built.nodes)} node(s)")


def built_graph(target: str) -> BuiltGraph[Any]:
    """The graph ``target`` (``MODULE:ATTR``) names, built; errors as ``graph`` reports them."""
    return load_graph(target)[0]


def _load(target: str) -> tuple[BuiltGraph[Any], Picture]:
    """The graph ``target`` names, built, and its picture with a runner's interrupts marked."""
    found, before, after = load_graph(target)
    return found, picture(found, interrupt_before=before, interrupt_after=after)


def load_graph(target: str) -> tuple[BuiltGraph[Any], frozenset[str], frozenset[str]]:
    """The graph ``target`` names, built, with the interrupts of a runner it names.

    The module is imported from the current directory first, as ``python -m`` does.
    """
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    found = import_object(target, _PARAMETER, "MODULE:ATTR (such as 'myapp.flows:graph')")
    before: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()
    if isinstance(found, Runner):
        before, after = found.interrupt_before, found.interrupt_after
        found = found.graph
    if isinstance(found, Graph):
        try:
            found = found.build()
        except GraphDefinitionError as exc:
            fail(f"graph {found.name!r} ({target}) does not build: {exc}")
    if not isinstance(found, BuiltGraph):
        raise typer.BadParameter(
            f"{target} is {_a(found)}, not a Graph, BuiltGraph or Runner", param_hint=_PARAMETER
        )
    return found, before, after


def _a(value: object) -> str:
    """``value``'s type for a message: ``a function``, ``an int``."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
