"""``to_mermaid()`` and the DOT text: golden pictures, hostile names, the same text every time."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flowpoint import (
    END,
    START,
    Graph,
    GraphDefinitionError,
    InMemoryBlobStore,
    Retry,
    Runner,
    Send,
)
from flowpoint.graph._dot import RenderError, dot, find_dot, render_png
from flowpoint.graph._mermaid import escape
from flowpoint.graph._picture import picture
from tests.harnesses.base import unavailable


def golden(text: str) -> str:
    """A picture's text written as an indented block, as ``to_mermaid()`` returns it."""
    return textwrap.dedent(text).removesuffix("\n")


def nothing(state: Any) -> None:
    return None


def to_end(state: Any) -> str:
    return END


def linear() -> Graph[Any]:
    g = Graph("linear")
    g.add_node("fetch", nothing).add_node("parse", nothing, version=2)
    g.add_node("store", nothing, version="2024-05")
    g.add_edge(START, "fetch").add_edge("fetch", "parse").add_edge("parse", "store")
    return g.add_edge("store", END)


def test_a_linear_graph() -> None:
    assert linear().to_mermaid() == golden("""\
        flowchart TD
            __start__(["START"])
            n1["fetch"]
            n2["parse<br>version=2"]
            n3["store<br>version='2024-05'"]
            __end__(["END"])
            __start__ --> n1
            n1 --> n2
            n2 --> n3
            n3 --> __end__
        """)


def test_a_retry_policy_is_shown_as_its_tries() -> None:
    g = Graph("retrying").add_node("fetch", nothing, version=2, retry=Retry(max_attempts=4))
    g.add_node("once", nothing, retry=Retry(max_attempts=1))
    g.add_edge(START, "fetch").add_edge("fetch", "once").add_edge("once", END)
    text = g.to_mermaid()
    assert '    n1["fetch<br>version=2<br>up to 4 tries"]\n' in text
    assert '    n2["once"]\n' in text


def research() -> Graph[Any]:
    g = Graph("research")
    for name in ("plan", "web", "docs", "write", "check"):
        g.add_node(name, nothing)
    g.add_edge(START, "plan")
    g.add_edge("plan", "web").add_edge("plan", "docs")  # fan-out
    g.add_edge(["web", "docs"], "write")  # a join
    g.add_edge("plan", "check")  # check runs alone
    return g.add_edge("check", END).add_edge("write", END)


def test_fan_out_and_a_join() -> None:
    # write waits for both: web and docs lead into a join, one arrow leads out.
    assert research().to_mermaid() == golden("""\
        flowchart TD
            __start__(["START"])
            n1["plan"]
            n2["check"]
            n3["docs"]
            n4["web"]
            n5["write"]
            j1(("join"))
            __end__(["END"])
            __start__ --> n1
            n1 --> n2
            n1 --> n3
            n1 --> n4
            n2 --> __end__
            n5 --> __end__
            n3 --- j1
            n4 --- j1
            j1 --> n5
        """)


def test_a_join_and_a_static_edge_into_one_node_look_different() -> None:
    g = Graph("both").add_node("a", nothing).add_node("b", nothing).add_node("c", nothing)
    g.add_edge(START, "a").add_edge("a", "b").add_edge(["a", "b"], "c").add_edge("b", "c")
    text = g.add_edge("c", END).to_mermaid()
    assert "    n2 --> n3\n" in text  # b --> c: c runs after each b
    assert text.endswith("    n1 --- j1\n    n2 --- j1\n    j1 --> n3")  # and once after a and b


def test_a_router_with_a_path_map() -> None:
    g = Graph("support")
    g.add_node("classify", nothing).add_node("draft", nothing).add_node("escalate", nothing)
    g.add_edge(START, "classify")
    g.add_conditional_edges(
        "classify",
        to_end,
        {"billing": "draft", "refund": "draft", True: "escalate", None: END, "": END},
    )
    g.add_edge("draft", END).add_edge("escalate", "draft")
    assert g.to_mermaid() == golden("""\
        flowchart TD
            __start__(["START"])
            n1["classify"]
            n2["draft"]
            n3["escalate"]
            __end__(["END"])
            __start__ --> n1
            n1 -.->|"billing, refund"| n2
            n1 -.->|"True"| n3
            n1 -.->|"'', None"| __end__
            n2 --> __end__
            n3 --> n2
        """)


def test_a_router_without_a_map_draws_its_targets_dashed() -> None:
    g = Graph("loop").add_node("act", nothing).add_edge(START, "act")
    g.add_conditional_edges("act", to_end, [END, "act"])
    assert g.to_mermaid().endswith("    n1 -.-> n1\n    n1 -.-> __end__")


def split(state: Any) -> list[Send]:
    return []


def send_or_stop(state: Any) -> list[Send | str]:
    return []


def test_send_targets_are_marked_as_maps() -> None:
    g = Graph("book").add_node("outline", nothing).add_node("summarise", nothing)
    g.add_node("blurb", nothing).add_edge(START, "outline")
    g.add_conditional_edges("outline", split, ["summarise"])
    g.add_conditional_edges("summarise", send_or_stop, {"more": "summarise", "done": "blurb"})
    g.add_conditional_edges("blurb", send_or_stop, ["blurb", END])
    assert g.to_mermaid() == golden("""\
        flowchart TD
            __start__(["START"])
            n1["outline"]
            n2["summarise"]
            n3["blurb"]
            __end__(["END"])
            __start__ --> n1
            n1 -.->|"Send (map)"| n2
            n2 -.->|"more, Send (map)"| n2
            n2 -.->|"done, Send (map)"| n3
            n3 -.->|"Send (map)"| n3
            n3 -.-> __end__
        """)


def test_a_send_annotation_is_read_as_text_when_it_does_not_resolve(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lazy_router.py").write_text(
        textwrap.dedent("""\
            from __future__ import annotations

            def split(state: Unknown) -> list[Send]:
                return []

            def plain(state) -> list[str]:
                return []
            """),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from lazy_router import plain, split  # type: ignore[import-not-found]

    for router, marked in ((split, True), (plain, False), (lambda state: [], False)):
        g = Graph("g").add_node("a", nothing).add_node("b", nothing).add_edge(START, "a")
        g.add_conditional_edges("a", router, ["b"]).add_edge("b", END)
        assert ('|"Send (map)"|' in g.to_mermaid()) is marked, router


def commands_and_subgraphs() -> Graph[Any]:
    child = Graph("deep research").add_node("search", nothing)
    child.add_edge(START, "search").add_edge("search", END)
    g = Graph("support").add_node("triage", nothing, goto=["refund", END])
    g.add_node("refund", nothing).add_node("research", child, version=2)
    g.add_edge(START, "triage").add_edge("triage", "research")
    return g.add_edge("research", END).add_edge("refund", END)


def test_goto_targets_are_dashed_and_subgraphs_are_marked() -> None:
    assert commands_and_subgraphs().to_mermaid(interrupt_before=["research"]) == golden("""\
        flowchart TD
            __start__(["START"])
            n1["triage"]
            n2["refund"]
            n3[["research<br>version=2<br>subgraph: deep research<br>interrupt before"]]
            __end__(["END"])
            __start__ --> n1
            n1 --> n3
            n1 -.->|"goto"| n2
            n1 -.->|"goto"| __end__
            n2 --> __end__
            n3 --> __end__
            classDef interrupt stroke-width:3px,stroke-dasharray:6 3
            class n3 interrupt
        """)
    text = dot(picture(commands_and_subgraphs().build()))
    assert 'n1 -> n2 [style=dashed, label="goto"];' in text
    assert (
        'n3 [label="research\\nversion=2\\nsubgraph: deep research", shape=box, '
        "style=rounded, peripheries=2];"
    ) in text


def test_a_node_reached_only_by_goto_is_drawn() -> None:
    g = Graph("g").add_node("a", nothing, goto=["b"]).add_node("b", nothing)
    g.add_edge(START, "a").add_edge("b", END)
    assert g.to_mermaid().splitlines()[2:4] == ['    n1["a"]', '    n2["b"]']


def test_interrupts_are_marked() -> None:
    text = linear().to_mermaid(interrupt_before=["store", "fetch"], interrupt_after=["store"])
    assert text == golden("""\
        flowchart TD
            __start__(["START"])
            n1["fetch<br>interrupt before"]
            n2["parse<br>version=2"]
            n3["store<br>version='2024-05'<br>interrupt before<br>interrupt after"]
            __end__(["END"])
            __start__ --> n1
            n1 --> n2
            n2 --> n3
            n3 --> __end__
            classDef interrupt stroke-width:3px,stroke-dasharray:6 3
            class n1,n3 interrupt
        """)


def test_a_runners_interrupts_are_its_options() -> None:
    runner = Runner(linear(), InMemoryBlobStore(), interrupt_after=["parse"])
    text = runner.graph.to_mermaid(
        interrupt_before=runner.interrupt_before, interrupt_after=runner.interrupt_after
    )
    assert '    n2["parse<br>version=2<br>interrupt after"]\n' in text
    assert text.endswith("    class n2 interrupt")


def test_interrupts_must_name_nodes() -> None:
    with pytest.raises(GraphDefinitionError, match=r"interrupt_before names unknown node\(s\)"):
        linear().to_mermaid(interrupt_before=["nope"])
    with pytest.raises(TypeError, match="list of node names"):
        linear().build().to_mermaid(interrupt_after="fetch")


def test_a_graph_that_does_not_build_has_no_picture() -> None:
    with pytest.raises(GraphDefinitionError, match="no edge from START"):
        Graph("empty").add_node("a", nothing).to_mermaid()


HOSTILE = [
    "end",
    "END",
    "graph",
    "subgraph",
    "classDef",
    "click a call alert()",
    'say "hi"',
    "a[b]{c}(d)",
    "x#y",
    "#quot;",
    "a|b",
    "<b>bold</b>",
    "a&amp;b",
    "`markdown`",
    "%% comment",
    "-->",
    "a;b",
    "o",
    "n1",
    "j1",
    "é日本🙂",
    "tab\there",
    "new\nline",
    "\u202eevil",
    "\x00",
    "back\\slash",
]

_ENTITY = re.compile(r"#(\d+);")
# What a label may hold once escaped: letters, digits, harmless signs, entity codes, <br>.
_SAFE_LABEL = re.compile(r"(?:[^\W_]|[ _\-.,:/=()']|#\d+;|<br>)*")


def _label_lines(text: str) -> dict[str, list[str]]:
    """Each box's key and the lines of its label, with Mermaid's entity codes decoded."""
    boxes = re.findall(r'^    (\w+)[(\[]+"(.*)"[)\]]+$', text, re.MULTILINE)
    for _, label in boxes:
        assert _SAFE_LABEL.fullmatch(label), label
    return {
        key: [_ENTITY.sub(lambda m: chr(int(m.group(1))), line) for line in label.split("<br>")]
        for key, label in boxes
    }


def test_hostile_names_are_shown_and_never_parsed() -> None:
    g = Graph("hostile")
    for name in HOSTILE:
        g.add_node(name, nothing, version='v"1#')
    g.add_edge(START, HOSTILE[0])
    g.add_conditional_edges(HOSTILE[0], split, HOSTILE[1:])
    for name in HOSTILE[1:]:
        g.add_conditional_edges(name, to_end, {'k"|#': END, "<br>": END})
    text = g.to_mermaid(interrupt_before=HOSTILE)
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert len(lines) == 1 + (len(HOSTILE) + 2) + (1 + len(HOSTILE) - 1 + len(HOSTILE) - 1) + 2
    labels = _label_lines(text)
    shown = {key: lines[0] for key, lines in labels.items() if key.startswith("n")}
    printable = [
        name.encode("unicode_escape").decode() if not name.isprintable() else name
        for name in HOSTILE
    ]
    assert sorted(shown.values()) == sorted(printable)
    assert all(
        lines[1:] == ["version='v\"1#'", "interrupt before"]
        for lines in (labels[key] for key in shown)
    )
    # Identifiers are the picture's own, never a name.
    statements = [re.match(r"    (\w+)", line).group(1) for line in lines[1:]]  # type: ignore[union-attr]
    assert set(statements) <= {*shown, "__start__", "__end__", "classDef", "class"}
    arrows = re.findall(r'^    (\w+) -\.->\|"(.*)"\| (\w+)$', text, re.MULTILINE)
    edge_labels = {_ENTITY.sub(lambda m: chr(int(m.group(1))), label) for _, label, _ in arrows}
    assert edge_labels == {"Send (map)", '<br>, k"|#'}
    assert "\t" not in text
    assert "\u202e" not in text
    assert "\x00" not in text
    assert text.count("\n") == len(lines) - 1


def test_escape_keeps_letters_of_any_script_and_codes_the_rest() -> None:
    assert escape("Größe_日本-1.2, a:b/c=(d)'e") == "Größe_日本-1.2, a:b/c=(d)'e"
    assert escape('"#|<>&`;[]{}') == "#34;#35;#124;#60;#62;#38;#96;#59;#91;#93;#123;#125;"


def _shuffled_research(seed: int) -> Graph[Any]:
    """``research()`` declared in another order."""
    rng = random.Random(seed)
    names = ["plan", "web", "docs", "write", "check"]
    rng.shuffle(names)
    edges: list[tuple[Any, str]] = [
        (START, "plan"),
        ("plan", "web"),
        ("plan", "docs"),
        (["docs", "web"] if rng.random() < 0.5 else ["web", "docs"], "write"),
        ("plan", "check"),
        ("check", END),
        ("write", END),
    ]
    rng.shuffle(edges)
    g = Graph("research")
    for name in names:
        g.add_node(name, nothing)
    for source, target in edges:
        g.add_edge(source, target)
    return g


def test_the_order_of_declarations_does_not_change_the_text() -> None:
    expected = research().to_mermaid()
    for seed in range(20):
        shuffled = _shuffled_research(seed)
        assert shuffled.hash_u64() == research().hash_u64()
        assert shuffled.to_mermaid() == expected


def test_the_text_is_the_same_in_every_process() -> None:
    script = "from tests.graph.test_picture import research; print(research().to_mermaid(), end='')"
    texts = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PYTHONPATH": ":".join(sys.path)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert texts == {research().to_mermaid()}


def test_the_dot_text_draws_the_same_picture() -> None:
    g = research().add_node("done?", nothing, version=1)
    g.add_conditional_edges("write", lambda state: "x", {"x": "done?"})
    g.add_edge("done?", END)
    drawing = picture(g.build(), interrupt_before=["write"])
    assert dot(drawing) == textwrap.dedent("""\
        digraph flowpoint {
            graph [label="research", labelloc=t, fontname="Helvetica"];
            node [fontname="Helvetica"];
            edge [fontname="Helvetica", fontsize=10];
            __start__ [label="START", shape=oval, style=filled, fillcolor="#e8e8e8"];
            n1 [label="plan", shape=box, style=rounded];
            n2 [label="check", shape=box, style=rounded];
            n3 [label="docs", shape=box, style=rounded];
            n4 [label="web", shape=box, style=rounded];
            n5 [label="write\\ninterrupt before", shape=box, style="rounded,dashed", penwidth=3];
            n6 [label="done?\\nversion=1", shape=box, style=rounded];
            j1 [label="join", shape=circle, fontsize=10, margin=0];
            __end__ [label="END", shape=oval, style=filled, fillcolor="#e8e8e8"];
            __start__ -> n1;
            n1 -> n2;
            n1 -> n3;
            n1 -> n4;
            n2 -> __end__;
            n5 -> __end__;
            n5 -> n6 [style=dashed, label="x"];
            n6 -> __end__;
            n3 -> j1 [arrowhead=none];
            n4 -> j1 [arrowhead=none];
            j1 -> n5;
        }
        """)


def test_dot_labels_escape_what_dot_would_read() -> None:
    g = Graph('a "graph" \\N').add_node('say "hi" & \\G', nothing).add_node("new\nline", nothing)
    g.add_edge(START, 'say "hi" & \\G').add_edge('say "hi" & \\G', "new\nline")
    text = dot(picture(g.add_edge("new\nline", END).build()))
    assert 'graph [label="a \\"graph\\" \\\\N",' in text
    assert 'n1 [label="say \\"hi\\" &amp; \\\\G",' in text
    assert 'n2 [label="new\\\\nline",' in text


def _dot_program() -> str:
    program = find_dot()
    if program is None:
        unavailable("Graphviz's dot is not installed (apt-get install graphviz)")
    return program


def test_dot_renders_a_png_of_hostile_names() -> None:
    program = _dot_program()
    g = Graph("hostile")
    for name in HOSTILE:
        g.add_node(name, nothing)
    g.add_edge(START, HOSTILE[0]).add_conditional_edges(HOSTILE[0], split, HOSTILE[1:])
    for name in HOSTILE[1:]:
        g.add_edge(name, END)
    source = dot(picture(g.build()))
    for form in ("plain", "png"):  # no warning either: Pango complains of some characters
        done = subprocess.run([program, f"-T{form}"], input=source.encode(), capture_output=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr == b""
    image = render_png(source, program)
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")
    assert width > 1000
    assert height > 100


def test_a_failing_dot_is_a_render_error(tmp_path: Any) -> None:
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RenderError, match="syntax error in line 1") as caught:
        render_png("digraph {}", str(fake))
    assert caught.value.reason == "Error: <stdin>: syntax error in line 1"
    with pytest.raises(RenderError, match="cannot run"):
        render_png("digraph {}", str(tmp_path / "missing"))
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\ncat >/dev/null\n")
    silent.chmod(0o755)
    with pytest.raises(RenderError, match="exited with 0"):
        render_png("digraph {}", str(silent))


def test_the_readme_shows_what_its_example_prints(tmp_path: Any) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("```mermaid\n")
    shown = readme[start + len("```mermaid\n") : readme.index("```", start + 3)]
    opening = readme.rindex("```python\n", 0, start) + len("```python\n")
    example = readme[opening : readme.index("```", opening)]
    assert "to_mermaid(" in example
    (tmp_path / "example.py").write_text(example, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n" + shown), done.stdout  # print() ends the text
