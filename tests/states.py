"""State types of every supported kind, with a realistic sample of each."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypedDict
from uuid import UUID

import msgspec
import pydantic


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Level(enum.IntEnum):
    ONE = 1
    TWO = 2


@dataclasses.dataclass
class Note:
    written_at: datetime
    text: str
    raw: bytes


@dataclasses.dataclass
class DataclassState:
    run_id: UUID
    priority: Priority
    budget: Decimal
    notes: list[Note]
    scores: dict[str, float]
    done: bool = False
    parent: str | None = None


class TypedDictNote(TypedDict):
    text: str
    at: datetime


class TypedDictState(TypedDict):
    run_id: UUID
    level: Level
    notes: list[TypedDictNote]
    blob: bytes


class StructNote(msgspec.Struct):
    text: str
    at: datetime
    tags: tuple[str, ...] = ()


class StructState(msgspec.Struct):
    run_id: UUID
    priority: Priority
    cost: Decimal
    notes: list[StructNote]
    extra: dict[str, int] = msgspec.field(default_factory=dict)


class PydanticNote(pydantic.BaseModel):
    text: str
    at: datetime
    raw: bytes


class PydanticState(pydantic.BaseModel):
    run_id: UUID
    priority: Priority
    cost: Decimal
    notes: list[PydanticNote]
    nested: dict[str, list[PydanticNote]] = {}
    label: str = pydantic.Field(default="", alias="Label")
    expires: timedelta | None = None


NOW = datetime(2026, 11, 26, 12, 30, 15, 123456, tzinfo=UTC)
LATER = datetime(2026, 11, 27, 8, 0, tzinfo=timezone(timedelta(hours=2)))
RUN = UUID("01935f3c-7a51-7c4e-9a0b-2b7f9c1d0e11")


def samples() -> dict[str, tuple[Any, Any]]:
    """``{kind: (state_type, state)}`` for every kind of state the codec supports."""
    return {
        "dict": (
            dict,
            {"messages": [{"role": "user", "content": "héllo"}], "turn": 3, "ok": None},
        ),
        "dataclass": (
            DataclassState,
            DataclassState(
                run_id=RUN,
                priority=Priority.HIGH,
                budget=Decimal("12.50"),
                notes=[Note(NOW, "first", b"\x00\xff"), Note(LATER, "second", b"")],
                scores={"a": 0.5, "b": -1e300},
            ),
        ),
        "typeddict": (
            TypedDictState,
            TypedDictState(
                run_id=RUN,
                level=Level.TWO,
                notes=[TypedDictNote(text="x", at=NOW)],
                blob=b"\x80\x81",
            ),
        ),
        "struct": (
            StructState,
            StructState(
                run_id=RUN,
                priority=Priority.LOW,
                cost=Decimal("0.000001"),
                notes=[StructNote("n", LATER, ("a", "b"))],
                extra={"k": 2**62},
            ),
        ),
        "pydantic": (
            PydanticState,
            PydanticState(
                run_id=RUN,
                priority=Priority.HIGH,
                cost=Decimal("3.14"),
                notes=[PydanticNote(text="t", at=NOW, raw=b"\xde\xad")],
                nested={"k": [PydanticNote(text="u", at=LATER, raw=b"\x00")]},
                Label="labelled",
                expires=timedelta(days=1, microseconds=5),
            ),
        ),
    }
