"""The targets of docs/workloads.md, as ratios computed from this run's medians.

Like for like: flowpoint's async API against LangGraph's async savers, its blocking facade
(``SyncCheckpointStore``) against the sync ``SqliteSaver`` and against the floors (which
are sync ``sqlite3``), all at the same durability (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    key: str
    workload: str
    text: str
    subject: str  # flowpoint's side
    peer: str  # LangGraph's saver, or a floor
    metric: tuple[str, ...]  # path into the medians, e.g. ("save_ms", "p50")
    unit: str
    direction: str  # "le": ratio <= goal; "ge": ratio >= goal
    goal: float
    invert: bool = False  # ratio = peer / flowpoint (a speed-up) instead of flowpoint / peer
    note: str = ""

    def goal_text(self) -> str:
        sign = "≤" if self.direction == "le" else "≥"
        goal = self.goal
        if goal < 1 and math.isclose(1 / goal, round(1 / goal)):
            return f"{sign} 1/{round(1 / goal)} ({goal:.3g})"
        return f"{sign} {goal:g}"


SAVE = ("save_ms", "p50")
LOAD = ("load_latest_ms", "p50")
BY_ID = ("load_by_id_ms", "p50")
COLD = ("cold_load_latest_ms", "p50")
UNTIL_DELTAS = "the target for whole-state saves, before flowpoint stored deltas"
ONCE_DELTAS = "the target now that flowpoint stores deltas"

# fmt: off
TARGETS: list[Target] = [
    Target("w1-async-save", "W1", "W1 SQLite async: save p50 vs AsyncSqliteSaver.aput",
           "fp.sqlite", "lg.AsyncSqliteSaver", SAVE, "ms", "le", 0.5),
    Target("w1-async-load", "W1", "W1 SQLite async: load_latest p50 vs AsyncSqliteSaver.aget_tuple",
           "fp.sqlite", "lg.AsyncSqliteSaver", LOAD, "ms", "le", 0.25),
    Target("w1-sync-save", "W1", "W1 SQLite blocking: save p50 vs SqliteSaver.put",
           "fp.sqlite.sync", "lg.SqliteSaver", SAVE, "ms", "le", 0.8),
    Target("w1-sync-load", "W1", "W1 SQLite blocking: load_latest p50 vs SqliteSaver.get_tuple",
           "fp.sqlite.sync", "lg.SqliteSaver", LOAD, "ms", "le", 1.0),
    Target("w1-by-id", "W1", "W1 blocking: load by id p50 vs SqliteSaver.get_tuple by id",
           "fp.sqlite.sync", "lg.SqliteSaver", BY_ID, "ms", "le", 1.0),
    Target("w1-cold", "W1", "W1 blocking: cold load_latest p50 (open + load) vs SqliteSaver's",
           "fp.sqlite.sync", "lg.SqliteSaver", COLD, "ms", "le", 1.5,
           note="a fresh store object / a fresh connection and SqliteSaver, as after a restart"),
    Target("w1-file-by-id", "W1", "W1 file store: load by id p50 vs the SQLite store's",
           "fp.file", "fp.sqlite", BY_ID, "ms", "le", 3.0, note="both async"),
    Target("w1-list20", "W1", "W1 newest-20 listing: speed-up over SqliteSaver.list(limit=20)",
           "fp.sqlite.sync", "lg.SqliteSaver", ("list_newest_20_ms", "p50"), "ms", "ge", 10.0,
           invert=True, note="ratio = SqliteSaver's p50 / flowpoint's p50"),
    Target("w1-bytes-now", "W1", "W1 bytes at rest vs SqliteSaver's database (first target)",
           "fp.sqlite.sync", "lg.SqliteSaver", ("bytes_at_rest",), "bytes", "le", 1 / 3),
    Target("w1-bytes-next", "W1", "W1 bytes at rest vs SqliteSaver's database (with deltas)",
           "fp.sqlite.sync", "lg.SqliteSaver", ("bytes_at_rest",), "bytes", "le", 1 / 50),
    Target("w1-memory-save", "W1", "W1 in memory: save p50 vs InMemorySaver.aput",
           "fp.memory", "lg.InMemorySaver", SAVE, "ms", "le", 1.0),
    Target("w1-memory-load", "W1", "W1 in memory: load_latest p50 vs InMemorySaver.aget_tuple",
           "fp.memory", "lg.InMemorySaver", LOAD, "ms", "le", 1.0),
    Target("w2-sqlite", "W2", "W2 SQLite: saves/s vs AsyncSqliteSaver",
           "fp.sqlite", "lg.AsyncSqliteSaver", ("saves_per_s",), "saves/s", "ge", 4.0),
    Target("w2-postgres", "W2", "W2 PostgreSQL: saves/s vs AsyncPostgresSaver",
           "fp.postgres", "lg.AsyncPostgresSaver", ("saves_per_s",), "saves/s", "ge", 2.0),
    Target("w3-save-floor", "W3", "W3 blocking: save p50 vs the encode+INSERT floor",
           "fp.sqlite.sync", "floor.sqlite", SAVE, "ms", "le", 1.5),
    Target("w3-save-floor-async", "W3", "W3 async: save p50 vs the encode+INSERT floor",
           "fp.sqlite", "floor.sqlite", SAVE, "ms", "le", 1.5,
           note="async API against the sync floor: includes the hop to the store's thread"),
    Target("w3-load", "W3", "W3 blocking: load MB/s vs SqliteSaver's",
           "fp.sqlite.sync", "lg.SqliteSaver", ("load_latest_mb_s",), "MB/s", "ge", 1.5),
    Target("floor-w1-full", "W1", "Floor: W1 save p50 (blocking) vs the encode+INSERT floor",
           "fp.sqlite.sync", "floor.sqlite", SAVE, "ms", "le", 1.5, note=UNTIL_DELTAS),
    Target("floor-w1-full-async", "W1", "Floor: W1 save p50 (async) vs the encode+INSERT floor",
           "fp.sqlite", "floor.sqlite", SAVE, "ms", "le", 1.5, note=UNTIL_DELTAS),
    Target("floor-w1-delta", "W1", "Floor: W1 save p50 (blocking) vs the delta-commit floor",
           "fp.sqlite.sync", "floor.delta", SAVE, "ms", "le", 1.1, note=ONCE_DELTAS),
    Target("floor-w1-delta-async", "W1", "Floor: W1 save p50 (async) vs the delta-commit floor",
           "fp.sqlite", "floor.delta", SAVE, "ms", "le", 1.1, note=ONCE_DELTAS),
    Target("w5-put", "W5", "W5 SQLite: FlowpointSaver.put p50 vs SqliteSaver.put",
           "lgfp.sqlite.sync", "lg.SqliteSaver", SAVE, "ms", "le", 1.0),
    Target("w5-aput", "W5", "W5 SQLite: FlowpointSaver.aput p50 vs AsyncSqliteSaver.aput",
           "lgfp.sqlite", "lg.AsyncSqliteSaver", SAVE, "ms", "le", 0.7),
    Target("w5-get", "W5", "W5 SQLite: get_tuple (latest) p50 vs SqliteSaver.get_tuple",
           "lgfp.sqlite.sync", "lg.SqliteSaver", LOAD, "ms", "le", 1.0),
    Target("w5-list20", "W5", "W5 SQLite: list(limit=20) p50 vs SqliteSaver.list(limit=20)",
           "lgfp.sqlite.sync", "lg.SqliteSaver", ("list_newest_20_ms", "p50"), "ms", "le", 0.2),
    Target("w5-aput-postgres", "W5", "W5 PostgreSQL: aput p50 vs AsyncPostgresSaver.aput",
           "lgfp.postgres", "lg.AsyncPostgresSaver", SAVE, "ms", "le", 0.7),
    Target("w5-agent-bytes", "W5", "W5 add_messages agent, first turns: bytes vs SqliteSaver's",
           "lgfp.sqlite.sync", "lg.SqliteSaver", ("agent_bytes_first",), "bytes", "le", 1 / 10,
           note="after the first of w5_agent_turns (60 in the full run)"),
]
# fmt: on


def _value(results: dict[str, Any], workload: str, name: str, metric: tuple[str, ...]) -> Any:
    """The median of ``metric`` for a subject or floor, or a string saying why there is none."""
    section = results.get(workload)
    if section is None:
        return f"{workload} was not run"
    entry = section["subjects"].get(name) or section["floors"].get(name)
    if entry is None:
        return f"no subject {name!r} in this run"
    if entry.get("status") != "ok":
        return f"{name} {entry.get('status')}: {entry.get('reason', '')}".strip()
    value: Any = entry["median"]
    for part in metric:
        if not isinstance(value, dict) or part not in value:
            return f"{name} has no {'.'.join(metric)}"
        value = value[part]
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return f"{name}: {'.'.join(metric)} is {value!r}"
    return value


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for target in TARGETS:
        if target.workload not in results:
            continue
        mine = _value(results, target.workload, target.subject, target.metric)
        theirs = _value(results, target.workload, target.peer, target.metric)
        row: dict[str, Any] = {
            "key": target.key,
            "workload": target.workload,
            "target": target.text,
            "flowpoint": target.subject,
            "peer": target.peer,
            "metric": ".".join(target.metric),
            "unit": target.unit,
            "flowpoint_value": mine if not isinstance(mine, str) else None,
            "peer_value": theirs if not isinstance(theirs, str) else None,
            "direction": target.direction,
            "goal": target.goal,
            "goal_text": target.goal_text(),
            "note": target.note,
            "ratio": None,
            "met": None,
        }
        if isinstance(mine, str) or isinstance(theirs, str):
            row["reason"] = "; ".join(v for v in (mine, theirs) if isinstance(v, str))
        else:
            ratio = theirs / mine if target.invert else mine / theirs
            row["ratio"] = ratio
            row["met"] = ratio <= target.goal if target.direction == "le" else ratio >= target.goal
        rows.append(row)
    return rows
