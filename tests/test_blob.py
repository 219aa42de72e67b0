"""A header's value objects: a blob, its listing entry and its header carry the same fields."""

from __future__ import annotations

import enum
import uuid

from hypothesis import given
from hypothesis import strategies as st

from flowpoint.blob import HEADER_FIELDS, CheckpointBlob, CheckpointInfo, validate_metadata
from flowpoint.checkpoint import Checkpoint
from flowpoint.ids import new_checkpoint_id, uuid_from_bytes
from tests.blobs import make_blob


def test_a_header_moves_between_its_value_objects_field_for_field() -> None:
    blob = make_blob("t", 3, metadata={"k": 1})
    info = blob.info()
    assert type(info) is CheckpointInfo
    assert info.size == len(blob.data)
    again = info.with_data(blob.data)
    assert type(again) is CheckpointBlob
    assert again == blob
    header = again.header
    for name in HEADER_FIELDS:
        assert getattr(header, name) == getattr(blob, name) == getattr(info, name), name
    assert header.with_size(7).size == 7


class _Text(str):
    """A subclass of str whose str() is not its value: kept as the plain str it holds."""

    def __str__(self) -> str:
        return "not the value"


@given(
    st.dictionaries(
        st.one_of(st.text(max_size=20), st.text(max_size=5).map(_Text)),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=50),
            st.text(max_size=5).map(_Text),
        ),
        max_size=10,
    )
)
def test_metadata_of_scalars_is_accepted_as_it_is(metadata: dict[str, object]) -> None:
    checked = validate_metadata(metadata)
    assert checked == metadata
    assert checked is not metadata
    plain = (str, int, float, bool, type(None))
    assert all(type(key) is str for key in checked)
    assert all(type(value) in plain for value in checked.values())
    assert [type(value).__mro__[-2] for value in checked.values()] == [
        type(value).__mro__[-2] for value in metadata.values()
    ]


def test_a_uuid_made_from_bytes_is_the_uuid_of_those_bytes() -> None:
    for raw in (bytes(16), b"\xff" * 16, uuid.uuid4().bytes, new_checkpoint_id().bytes):
        made = uuid_from_bytes(raw)
        expected = uuid.UUID(bytes=raw)
        assert made == expected
        assert hash(made) == hash(expected)
        assert str(made) == str(expected)
        assert made.bytes == raw
        assert made.version == expected.version
        assert made.is_safe is expected.is_safe
        assert type(made) is uuid.UUID


class _Source(str, enum.Enum):  # noqa: UP042 - its str() is its name, unlike a StrEnum's
    LOOP = "loop"


class _Level(enum.IntEnum):
    HIGH = 3


def test_metadata_of_enum_members_is_stored_as_their_values() -> None:
    checked = validate_metadata({"source": _Source.LOOP, "level": _Level.HIGH})
    assert checked == {"source": "loop", "level": 3}
    assert [type(value) for value in checked.values()] == [str, int]
    made = Checkpoint.first("plan", {}, metadata={"source": _Source.LOOP})
    assert type(made.metadata["source"]) is str
