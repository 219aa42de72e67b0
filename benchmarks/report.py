"""The outputs: results.json (everything), results.md (tables), latency.png and bytes.png."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from benchmarks.w1 import OPERATIONS

FLOOR_LABELS = {
    "floor.msgspec": "floor: msgspec encode only",
    "floor.sqlite": "floor: encode + raw INSERT (sync sqlite3)",
    "floor.delta": "floor: delta commit (new message only)",
}


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.2f}"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.3f}"


def _get(entry: dict[str, Any], *path: str) -> Any:
    value: Any = entry.get("median", {})
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out.extend("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)
    return out


def _status_line(name: str, entry: dict[str, Any]) -> str | None:
    if entry.get("status") == "ok":
        return None
    return f"- `{name}`: {entry.get('status')}: {_cell(entry.get('reason', ''))}"


# -- JSON ------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any]) -> None:
    def default(value: Any) -> Any:
        return str(value)

    text = json.dumps(document, indent=2, default=default, allow_nan=True)
    path.write_text(text + "\n", encoding="utf-8")


# -- Markdown --------------------------------------------------------------------------


def _latency_rows(section: dict[str, Any]) -> list[list[str]]:
    """p50, p90 and p99 of each W1 operation, a row per subject and operation."""
    rows: list[list[str]] = []
    for name, entry in section["subjects"].items():
        if entry.get("status") != "ok":
            rows.append([f"`{name}`", entry.get("status", ""), "-", "-", "-"])
            continue
        for op in OPERATIONS:
            stats = _get(entry, f"{op}_ms")
            if not stats:
                continue  # not measured for this subject (a cold load in memory)
            rows.append([f"`{name}`", op, *(_num(stats.get(q)) for q in ("p50", "p90", "p99"))])
    return rows


def _w1_tables(section: dict[str, Any]) -> list[str]:
    p = section["params"]
    lines = [
        f"## W1 chat-300 ({p['steps']} steps, one trace; the last state is "
        f"{p['last_state_msgpack_bytes']:,} B of MessagePack)",
        "",
        "Latency of one call, in ms: save and load_latest per step; load_by_id over "
        f"{p['random_loads_by_id']} random checkpoints; cold_load_latest (a fresh store "
        f"object opened, then load_latest) {p.get('cold_loads', '-')} times, on SQLite and "
        f"files only; each listing timed {p['listing_repeats']} times.",
        "",
    ]
    rows = _latency_rows(section)
    floor_ops = [
        ("floor.msgspec", "save_ms", "encode (msgspec alone)"),
        ("floor.sqlite", "save_ms", "encode + INSERT"),
        ("floor.sqlite", "insert_ms", "INSERT only"),
        ("floor.sqlite", "load_latest_ms", "SELECT latest + decode"),
        ("floor.delta", "save_ms", "delta: encode + INSERT of the new message"),
    ]
    for name, key, op in floor_ops:
        entry = section["floors"].get(name)
        if entry is None:
            continue
        stats = _get(entry, key) or {}
        rows.append(
            [
                f"`{name}`",
                op,
                _num(stats.get("p50")),
                _num(stats.get("p90")),
                _num(stats.get("p99")),
            ]
        )
    lines += _table(["subject", "operation", "p50 ms", "p90 ms", "p99 ms"], rows)

    peer = _get(section["subjects"].get("lg.SqliteSaver", {}), "bytes_at_rest")
    rows = []
    for name, entry in [*section["subjects"].items(), *section["floors"].items()]:
        value = _get(entry, "bytes_at_rest")
        if value is None:
            continue
        share = f"{value / peer:.3f}" if peer else "-"
        rows.append([f"`{name}`", f"{value:,}", _mb(value), share])
    if rows:
        lines += [
            "",
            "Bytes at rest after the run (SQLite: database + WAL after "
            "`PRAGMA wal_checkpoint(TRUNCATE)`; files: sum of regular file sizes; PostgreSQL: "
            "`pg_total_relation_size` of the saver's tables; in memory: not applicable).",
            "",
        ]
        lines += _table(["subject", "bytes", "MB", "÷ lg.SqliteSaver"], rows)
    return lines


def _w2_tables(section: dict[str, Any]) -> list[str]:
    p = section["params"]
    lines = [
        f"## W2 fan-out ({p['traces']:,} traces x {p['steps']} steps, a "
        f"{p['state_msgpack_bytes']:,} B state, {p['in_flight']} saves in flight)",
        "",
    ]
    rows: list[list[str]] = []
    for name, entry in section["subjects"].items():
        if entry.get("status") != "ok":
            rows.append([f"`{name}`", entry.get("status", ""), "-", "-", "-"])
            continue
        rows.append(
            [
                f"`{name}`",
                _num(_get(entry, "saves_per_s")),
                _num(_get(entry, "loads_per_s")),
                _num(_get(entry, "save_wall_s")),
                _num(_get(entry, "load_wall_s")),
            ]
        )
    return lines + _table(["subject", "saves/s", "loads/s", "save phase s", "load phase s"], rows)


def _w3_tables(section: dict[str, Any]) -> list[str]:
    p = section["params"]
    lines = [
        f"## W3 large state ({p['traces']} traces x {p['steps']} steps, "
        f"{p['records']:,} records, {p['state_msgpack_bytes_mean'] / 1e6:.3f} MB of MessagePack)",
        "",
        "MB/s = state MB / p50 latency. Peak MB: the largest tracemalloc peak above the level "
        f"before one call, in a separate pass of {p['memory_pass_steps']} steps.",
        "",
    ]
    memory = section.get("memory", {})
    rows: list[list[str]] = []
    entries = [*section["subjects"].items(), *section["floors"].items()]
    for name, entry in entries:
        if entry.get("status") != "ok":
            rows.append([f"`{name}`", entry.get("status", ""), *["-"] * 7])
            continue
        peaks = memory.get(name, {})
        rows.append(
            [
                f"`{name}`",
                _num(_get(entry, "save_ms", "p50")),
                _num(_get(entry, "save_ms", "p99")),
                _num(_get(entry, "save_mb_s")),
                _num(_get(entry, "load_latest_ms", "p50")),
                _num(_get(entry, "load_latest_ms", "p99")),
                _num(_get(entry, "load_latest_mb_s")),
                _num(peaks.get("save_peak_mb")),
                _num(peaks.get("load_peak_mb")),
            ]
        )
    header = [
        "subject",
        "save p50 ms",
        "save p99 ms",
        "save MB/s",
        "load p50 ms",
        "load p99 ms",
        "load MB/s",
        "save peak MB",
        "load peak MB",
    ]
    return [*lines, *_table(header, rows)]


def _w5_tables(section: dict[str, Any]) -> list[str]:
    p = section["params"]
    lines = [
        f"## W5 LangGraph adapter, saver API ({p['steps']} steps of W1's chat through "
        "put, get_tuple and list)",
        "",
        "Latency of one call, in ms, as for W1: FlowpointSaver (`lgfp.*`) and LangGraph's "
        "savers driven by the same code.",
        "",
    ]
    lines += _table(["subject", "operation", "p50", "p90", "p99"], _latency_rows(section))
    agent = section.get("agent_bytes") or {}
    peer = agent.get("lg.SqliteSaver") or {}
    lines += [
        "",
        "Bytes at rest of an `add_messages` agent's thread (a compiled `StateGraph`, one human "
        "message and one reply per turn), on SQLite, after each number of turns:",
        "",
    ]
    rows = []
    for name, found in agent.items():
        for turns in p["agent_turns"]:
            value = found.get(f"agent_bytes_{turns}")
            theirs = peer.get(f"agent_bytes_{turns}")
            ratio = f"1/{theirs / value:.1f}" if value and theirs else "-"
            rows.append([f"`{name}`", str(turns), _mb(value), ratio])
    return lines + _table(["subject", "turns", "MB at rest", "÷ SqliteSaver"], rows)


def _w4_tables(section: dict[str, Any]) -> list[str]:
    p = section["params"]
    lines = [
        f"## W4 fan-out agent step (1 node -> {p['tools']} parallel tool nodes -> join, "
        f"{p['supersteps']} supersteps; messages of {p['message_chars']} characters)",
        "",
        "The same graph run whole by each engine on SQLite (WAL, synchronous=FULL). A round "
        "is one agent superstep and one superstep of the tools: the time between two calls "
        "of the agent.",
        "",
    ]
    peer = _get(section["subjects"].get("lg.StateGraph.SqliteSaver", {}), "bytes_at_rest")
    rows: list[list[str]] = []
    for name, entry in section["subjects"].items():
        if entry.get("status") != "ok":
            rows.append([f"`{name}`", entry.get("status", ""), *["-"] * 5])
            continue
        value = _get(entry, "bytes_at_rest")
        rows.append(
            [
                f"`{name}`",
                _num(_get(entry, "superstep_ms")),
                _num(_get(entry, "round_ms", "p50")),
                _num(_get(entry, "round_ms", "p90")),
                _num(_get(entry, "wall_s")),
                _mb(value),
                f"{value / peer:.3f}" if value and peer else "-",
            ]
        )
    header = [
        "engine",
        "ms per superstep",
        "round p50 ms",
        "round p90 ms",
        "run s",
        "MB at rest",
        "÷ LangGraph",
    ]
    return lines + _table(header, rows)


def _targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Ratios of this run's medians (flowpoint ÷ peer, except where noted). "
        "Like for like: async against async, blocking against sync, same durability.",
        "",
    ]
    table: list[list[str]] = []
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3g}"
        met = {True: "yes", False: "no", None: "n/a"}[row["met"]]
        note = row.get("reason") or row.get("note") or ""
        table.append(
            [
                row["target"],
                f"`{row['flowpoint']}`",
                f"`{row['peer']}`",
                _num(row["flowpoint_value"]),
                _num(row["peer_value"]),
                ratio,
                row["goal_text"],
                met,
                note,
            ]
        )
    header = ["target", "flowpoint", "peer", "flowpoint", "peer", "ratio", "target", "met", "note"]
    return lines + _table(header, table)


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    machine = meta["machine"]
    fsync = machine["fsync"]["write_4k_then_fsync_ms"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        "# flowpoint benchmark results",
        "",
        f"- Command: `{meta['command']}`",
        f"- Started {meta['started']}, took {meta['duration_s']:.0f} s; every figure is the "
        f"median of {meta['sizes']['repeat']} run(s) per subject, subjects interleaved.",
        f"- Machine: {machine['platform']}, {machine['cpu_model']}, {machine['cpu_count']} CPUs, "
        f"{_num(machine['memory_mb'])} MB RAM; Python {machine['python'].split()[0]}; "
        f"SQLite {machine['sqlite_library']}; one 4 KB write + fsync: p50 "
        f"{fsync['p50']:.3f} ms.",
        f"- Versions: {versions}.",
        f"- PostgreSQL: {_postgres_line(meta['postgres'])}",
        "",
    ]
    workloads = document["workloads"]
    writers = {
        "W1": _w1_tables,
        "W2": _w2_tables,
        "W3": _w3_tables,
        "W4": _w4_tables,
        "W5": _w5_tables,
    }
    for key, writer in writers.items():
        if key in workloads:
            lines += writer(workloads[key])
            lines.append("")
    lines += _targets_table(document["targets"])
    lines.append("")
    problems = [
        line
        for key, section in workloads.items()
        for name, entry in section["subjects"].items()
        if (line := _status_line(f"{key} {name}", entry))
    ]
    if problems:
        lines += ["## Skipped or failed", "", *problems, ""]
    lines += ["## Durability as read back", ""]
    rows = []
    for name, entry in document["subjects"].items():
        settings = entry.get("settings") or {}
        shown = ", ".join(
            f"{k}={v}"
            for k, v in settings.items()
            if k in ("journal_mode", "synchronous", "durability", "synchronous_commit")
        )
        rows.append([f"`{name}`", entry.get("label", ""), shown or "-"])
    lines += _table(["subject", "what", "settings"], rows)
    return "\n".join(lines) + "\n"


def _postgres_line(info: dict[str, Any]) -> str:
    if not info.get("available"):
        return f"not available ({info.get('reason')})"
    return (
        f"{info.get('server_version')}, synchronous_commit={info.get('synchronous_commit')}, "
        f"fsync={info.get('fsync')}"
    )


# -- charts ----------------------------------------------------------------------------


def _colors(section: dict[str, Any]) -> dict[str, Any]:
    """One colour per subject or floor, the same in both charts."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    palette = [cmap(index) for index in (0, 1, 2, 3, 4, 5, 6, 8, 9)]  # 7 is grey: floors'
    colors: dict[str, Any] = {
        name: palette[index % len(palette)] for index, name in enumerate(section["subjects"])
    }
    greys = {"floor.sqlite": "0.25", "floor.delta": "0.55", "floor.msgspec": "0.8"}
    colors.update({name: greys.get(name, "0.4") for name in section["floors"]})
    return colors


def latency_chart(path: Path, section: dict[str, Any]) -> None:
    """W1 p50 per subject and operation, grouped bars, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: list[tuple[str, list[float | None]]] = []
    for name, entry in section["subjects"].items():
        if entry.get("status") == "ok":
            series.append((name, [_get(entry, f"{op}_ms", "p50") for op in OPERATIONS]))
    floor_sqlite = section["floors"].get("floor.sqlite", {})
    floor_delta = section["floors"].get("floor.delta", {})
    if floor_sqlite:
        timed = ("save", "load_latest")
        series.append(
            (
                "floor.sqlite",
                [
                    _get(floor_sqlite, f"{op}_ms", "p50") if op in timed else None
                    for op in OPERATIONS
                ],
            )
        )
    if floor_delta:
        series.append(
            (
                "floor.delta",
                [
                    _get(floor_delta, "save_ms", "p50") if op == "save" else None
                    for op in OPERATIONS
                ],
            )
        )

    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / max(1, len(series))
    colors = _colors(section)
    for index, (name, values) in enumerate(series):
        xs = [op + (index - (len(series) - 1) / 2) * width for op in range(len(OPERATIONS))]
        heights = [v if v is not None else 0 for v in values]
        hatch = "//" if name.startswith("floor.") else None
        ax.bar(xs, heights, width, label=name, color=colors.get(name), hatch=hatch)
    ax.set_xticks(range(len(OPERATIONS)), list(OPERATIONS))
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency, ms (log scale)")
    ax.set_title(f"W1 chat-300: p50 per operation ({section['params']['steps']} steps)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bytes_chart(path: Path, section: dict[str, Any]) -> None:
    """Bytes at rest against step, for every subject that stores bytes, and the floors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = _colors(section)
    markers = "os^vD<>px*"
    for index, (name, points) in enumerate(section.get("bytes_by_step", {}).items()):
        if not isinstance(points, list) or not points:
            continue
        steps = [p[0] for p in points]
        megabytes = [p[1] / 1e6 for p in points]
        style = "--" if name.startswith("floor.") else "-"
        ax.plot(
            steps,
            megabytes,
            style,
            marker=markers[index % len(markers)],
            markersize=4,
            color=colors.get(name),
            label=name,
        )
    ax.set_yscale("log")
    ax.set_xlabel("checkpoints saved (steps)")
    ax.set_ylabel("bytes at rest, MB (log scale)")
    ax.set_title("W1 chat-300: bytes at rest against step")
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def charts_available() -> bool:
    """Whether matplotlib (the ``bench`` extra) is installed: without it, no charts."""
    return importlib.util.find_spec("matplotlib") is not None


def write_all(out: Path, document: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    write_json(written[0], document)
    written[1].write_text(markdown(document), encoding="utf-8")
    w1 = document["workloads"].get("W1")
    if w1 is not None and charts_available():
        latency_chart(out / "latency.png", w1)
        bytes_chart(out / "bytes.png", w1)
        written += [out / "latency.png", out / "bytes.png"]
    return written
