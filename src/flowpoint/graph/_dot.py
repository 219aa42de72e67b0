"""A :class:`~flowpoint.graph._picture.Picture` in Graphviz's DOT language, and as a PNG.

The DOT text draws what the Mermaid text does (see :mod:`._mermaid`): the same
boxes, keys and arrows, in the same order. Rendering runs Graphviz's ``dot``
program, found on ``PATH`` (Debian and Ubuntu: ``apt-get install graphviz``;
macOS: ``brew install graphviz``); flowpoint needs no Python package for it.
"""

from __future__ import annotations

import shutil
import subprocess

from flowpoint.graph._picture import Arrow, ArrowKind, Box, BoxKind, Picture

__all__ = ["DOT_TIMEOUT", "RenderError", "dot", "find_dot", "render_png"]

DOT_TIMEOUT = 60.0
"""Seconds ``dot`` may take; a graph a person can read renders in well under one."""

_SHAPES: dict[BoxKind, dict[str, str]] = {
    "start": {"shape": "oval", "style": "filled", "fillcolor": '"#e8e8e8"'},
    "end": {"shape": "oval", "style": "filled", "fillcolor": '"#e8e8e8"'},
    "node": {"shape": "box", "style": "rounded"},
    "subgraph": {"shape": "box", "style": "rounded", "peripheries": "2"},
    "join": {"shape": "circle", "fontsize": "10", "margin": "0"},
}

_LINKS: dict[ArrowKind, dict[str, str]] = {
    "static": {},
    "conditional": {"style": "dashed"},
    "goto": {"style": "dashed"},
    "into_join": {"arrowhead": "none"},
    "out_of_join": {},
}

_INTERRUPT = {"penwidth": "3", "style": '"rounded,dashed"'}


class RenderError(RuntimeError):
    """``dot`` failed or took too long; ``reason`` says how (its first line of errors)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Graphviz's dot could not render the graph: {reason}")
        self.reason = reason


def dot(drawing: Picture) -> str:
    """The DOT text of ``drawing``: a ``digraph`` titled with the graph's name."""
    lines = [
        "digraph flowpoint {",
        f'    graph [label="{escape(drawing.name)}", labelloc=t, fontname="Helvetica"];',
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    lines.extend(f"    {_box(box)}" for box in drawing.boxes)
    lines.extend(f"    {_arrow(arrow)}" for arrow in drawing.arrows)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _box(box: Box) -> str:
    text = "\\n".join(escape(line) for line in (box.text, *box.notes))
    attributes = {"label": f'"{text}"'} | _SHAPES[box.kind] | (_INTERRUPT if box.interrupt else {})
    return f"{box.key} [{_listed(attributes)}];"


def _arrow(arrow: Arrow) -> str:
    attributes = dict(_LINKS[arrow.kind])
    if arrow.label:
        attributes["label"] = f'"{escape(arrow.label)}"'
    return f"{arrow.source} -> {arrow.target}{f' [{_listed(attributes)}]' if attributes else ''};"


def _listed(attributes: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in attributes.items())


def escape(text: str) -> str:
    r"""``text`` (printable, see :func:`~flowpoint.graph._picture.shown`) for a DOT label.

    Backslashes and quotes are escaped, and ``&``, which Graphviz would read as
    the start of an HTML entity, is one.

    >>> escape('a "b" \\N & c')
    'a \\"b\\" \\\\N &amp; c'
    """
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")


def find_dot() -> str | None:
    """Where Graphviz's ``dot`` is on ``PATH``; ``None`` if it is not installed."""
    return shutil.which("dot")


def render_png(source: str, program: str) -> bytes:
    """The PNG that ``program`` (a ``dot``, see :func:`find_dot`) makes of ``source``.

    Raises :class:`RenderError` if it fails, prints no PNG, or runs longer than
    :data:`DOT_TIMEOUT`.
    """
    try:
        done = subprocess.run(
            [program, "-Tpng"],
            input=source.encode(),
            capture_output=True,
            timeout=DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(f"it ran longer than {DOT_TIMEOUT:g} seconds") from None
    except OSError as exc:
        raise RenderError(f"cannot run {program}: {exc.strerror or exc}") from None
    errors = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not done.stdout.startswith(b"\x89PNG\r\n\x1a\n"):
        raise RenderError(errors[0] if errors else f"{program} exited with {done.returncode}")
    return done.stdout
