"""A :class:`~flowpoint.graph._picture.Picture` as a Mermaid flowchart.

Boxes are named by their keys (``n1``, ``j1``: never a node's own name, which
could be a Mermaid keyword such as ``end``) and show their text in double
quotes, where every character Mermaid could read as syntax (quotes, brackets,
``#``, ``|``, ``<``, a backtick, control and invisible characters...) is written
as an entity code (``#35;``), which Mermaid shows as the character itself.

Shapes: ``START`` and ``END`` are stadiums, nodes rectangles, subgraph nodes
subroutines (a rectangle with double sides), joins circles.
Arrows: static ``-->``, a router's ``-.->`` (labelled with its path map's keys
and ``Send (map)`` where the router returns ``Send``), a node's ``goto``
targets ``-.->`` labelled ``goto``, lines into a join ``---`` and one arrow out
of it. A node the run pauses at has a thick dashed border.
"""

from __future__ import annotations

from flowpoint.graph._picture import Arrow, ArrowKind, Box, BoxKind, Picture

__all__ = ["mermaid"]

_SHAPES: dict[BoxKind, tuple[str, str]] = {
    "start": ('(["', '"])'),
    "end": ('(["', '"])'),
    "node": ('["', '"]'),
    "subgraph": ('[["', '"]]'),
    "join": ('(("', '"))'),
}

_LINKS: dict[ArrowKind, str] = {
    "static": "-->",
    "conditional": "-.->",
    "goto": "-.->",
    "into_join": "---",
    "out_of_join": "-->",
}

# Characters shown as they are; everything else becomes an entity code.
_PLAIN = frozenset(" _-.,:/=()'")

INTERRUPT_STYLE = "stroke-width:3px,stroke-dasharray:6 3"


def mermaid(drawing: Picture) -> str:
    """The flowchart's text, one statement a line (no newline at the end, as ``print`` adds one)."""
    lines = ["flowchart TD"]
    lines.extend(f"    {_box(box)}" for box in drawing.boxes)
    lines.extend(f"    {_arrow(arrow)}" for arrow in drawing.arrows)
    paused = [box.key for box in drawing.boxes if box.interrupt]
    if paused:
        lines.append(f"    classDef interrupt {INTERRUPT_STYLE}")
        lines.append(f"    class {','.join(paused)} interrupt")
    return "\n".join(lines)


def _box(box: Box) -> str:
    opening, closing = _SHAPES[box.kind]
    text = "<br>".join(escape(line) for line in (box.text, *box.notes))
    return f"{box.key}{opening}{text}{closing}"


def _arrow(arrow: Arrow) -> str:
    link = _LINKS[arrow.kind]
    label = f'|"{escape(arrow.label)}"|' if arrow.label else ""
    return f"{arrow.source} {link}{label} {arrow.target}"


def escape(text: str) -> str:
    """``text`` as it may stand between double quotes in a Mermaid label.

    Letters and digits of any script stay as they are, and so do a few harmless
    signs; anything else becomes ``#<code point>;``, which Mermaid shows as the
    character.

    >>> escape('say "hi" #1 <b>')
    'say #34;hi#34; #35;1 #60;b#62;'
    """
    return "".join(char if char.isalnum() or char in _PLAIN else f"#{ord(char)};" for char in text)
