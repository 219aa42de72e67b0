"""Decoding is bounded in memory: a few KB of stored data never decode into gigabytes.

``max_state_size`` bounds the bytes a body decompresses to; each value of those
bytes may still decode into an object of tens of bytes (an empty array: one byte,
a 72-byte list). The codec estimates what a body decodes to before it decodes it,
on every path: whole states (MessagePack and JSON), deltas and the arrays they
split, chains, and the command line's ``verify``, ``show`` and ``diff``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CodecError,
    CorruptCheckpoint,
    InMemoryBlobStore,
    SerdeCheckpointCodec,
    TypedCheckpointStore,
    open_store,
)
from flowpoint.codec._bounds import PLAIN, check_decoded_size
from flowpoint.codec._delta import Delta, fields_hash, split_fields, state_size
from flowpoint.codec._envelope import peek_header
from flowpoint.codec._schema import decode_costs
from tests.codec.test_serde import reframe

GRAPH = 0xB0B
MIB = 1024 * 1024
EXAMPLES = int(os.environ.get("FLOWPOINT_FUZZ_EXAMPLES", "100"))


def zstd(parts: list[bytes], repeat: bytes = b"", count: int = 0, tail: bytes = b"") -> bytes:
    """One zstd frame of ``parts``, then ``repeat`` ``count`` times, then ``tail``.

    Compressed a chunk at a time: the body it stands for is never built here.
    """
    size = sum(map(len, parts)) + len(repeat) * count + len(tail)
    compressor = zstandard.ZstdCompressor(write_content_size=True).compressobj(size=size)
    out = [compressor.compress(part) for part in parts]
    chunk = repeat * max(1, (1 << 20) // max(len(repeat), 1))
    per_chunk = len(chunk) // max(len(repeat), 1)
    left = count
    while left > 0:
        take = min(left, per_chunk)
        out.append(compressor.compress(chunk[: take * len(repeat)]))
        left -= take
    out.append(compressor.compress(tail))
    out.append(compressor.flush())
    return b"".join(out)


def bomb(count: int, element: bytes = b"\x90") -> bytes:
    """zstd of the MessagePack state ``{"a": [element] * count}``."""
    return zstd([b"\x81\xa1a\xdd" + count.to_bytes(4, "big")], element, count)


def json_bomb(count: int, element: bytes = b"[]") -> bytes:
    """zstd of the JSON state ``{"a": [element, element, ...]}``."""
    return zstd([b'{"a":[' + element], b"," + element, count - 1, b"]}")


def carrier(body_format: str = "msgpack") -> CheckpointBlob:
    """A real checkpoint whose body is zstd-compressed: forged bodies go in its place."""
    codec: SerdeCheckpointCodec[Any] = SerdeCheckpointCodec(format=body_format)  # type: ignore[arg-type]
    blob = codec.serialize(Checkpoint.first("n", {"a": "x" * 2000}), GRAPH, "t")
    assert b"zstd" in blob.data[:200]
    return blob


def allocated_while(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What ``action`` raised, and the most memory it held at once (tracemalloc)."""
    tracemalloc.start()
    try:
        action()
    except BaseException as exc:  # the outcome is what the test looks at
        error: BaseException | None = exc
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# -- the bomb of the report, in a process of its own ----------------------------------------

_CHILD = textwrap.dedent(
    """
    import resource, sys, json, tracemalloc
    # Well over what a bounded load needs, well under what an unbounded one takes.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    sys.path.insert(0, {root!r})
    from tests.codec.test_bounds import carrier, bomb, json_bomb
    from tests.codec.test_serde import reframe
    from flowpoint import SerdeCheckpointCodec
    blob = reframe(carrier({fmt!r}), body={body}({count}))
    tracemalloc.start()
    try:
        SerdeCheckpointCodec().deserialize(blob, None)
        outcome = "decoded"
    except BaseException as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({{"size": len(blob.data), "outcome": outcome, "peak": peak}}))
    """
)


def run_child(body: str, count: int, body_format: str = "msgpack") -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[2])
    script = _CHILD.format(root=root, fmt=body_format, body=body, count=count)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("body", "count", "body_format"),
    [
        ("bomb", 64 * MIB, "msgpack"),  # 64 Mi empty arrays: about 4.5 GiB of lists
        ("json_bomb", 24 * MIB, "json"),  # 24 Mi "[]": about 1.5 GiB of lists
    ],
    ids=["msgpack", "json"],
)
def test_a_few_kilobytes_never_decode_into_gigabytes(
    body: str, count: int, body_format: str
) -> None:
    report = run_child(body, count, body_format)
    assert report["size"] < 20_000  # what a writer of the store has to put there
    assert report["outcome"].startswith("CorruptCheckpoint"), report
    assert "max_decoded_size" in report["outcome"]
    assert report["peak"] < 200 * MIB, report


_CLI_CHILD = textwrap.dedent(
    """
    import resource, sys, json, tracemalloc
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from typer.testing import CliRunner
    from flowpoint.cli._app import app
    tracemalloc.start()
    result = CliRunner().invoke(app, sys.argv[1:])
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"exit": result.exit_code, "output": result.output[-3000:], "peak": peak}))
    """
)


def test_the_command_line_reads_a_bomb_within_bounds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = Checkpoint.first("n", {"a": "x" * 2000})
    second = first.child("n", {"a": "y" * 2000})

    async def plant() -> None:
        async with open_store(url) as blobs:
            await TypedCheckpointStore(blobs).save_with_trace("t", first, GRAPH)
            written = SerdeCheckpointCodec().serialize(second, GRAPH, "t")
            await blobs.save(reframe(written, body=bomb(64 * MIB)))

    asyncio.run(plant())
    ids = (str(first.checkpoint_id), str(second.checkpoint_id))
    for args in (
        ("verify", "--json"),
        ("show", ids[1]),
        ("diff", *ids),
    ):
        done = subprocess.run(
            [sys.executable, "-c", _CLI_CHILD, *args, "--store", url],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["exit"] == 3, report  # corruption found
        assert "max_decoded_size" in report["output"], report
        assert report["peak"] < 200 * MIB, report


# -- hostile variants, in process under a small limit ---------------------------------------

LIMIT = 16 * MIB  # a codec's max_decoded_size in these tests
COUNT = 400_000  # values that decode to 25 to 100 MiB: far over LIMIT, never near danger


def small_codec(**options: Any) -> SerdeCheckpointCodec[Any]:
    return SerdeCheckpointCodec(dict, max_decoded_size=LIMIT, **options)


def assert_refused_cheaply(action: Callable[[], object], stored: int) -> None:
    error, peak = allocated_while(action)
    assert isinstance(error, CorruptCheckpoint), error
    assert "max_decoded_size" in str(error)
    # The decompressed body, and a little more: nothing was decoded.
    assert peak < stored + 4 * MIB, f"{peak / MIB:.1f} MiB held"


@pytest.mark.parametrize(
    ("element", "stored_per_value"),
    [
        (b"\x90", 1),  # []
        (b"\x80", 1),  # {}
        (b"\x81\x00\xc0", 3),  # {0: None}
        (b"\x91\x91\x91\x90", 4),  # [[[[]]]]
        (b"\x81\xa0\x81\xa0\x80", 5),  # {"": {"": {}}}
        (b"\xe0", 1),  # -32: an int object each
        (b"\xa2ab", 3),  # "ab": a str each
        (b"\x92\x90\xcb" + bytes(8), 11),  # [[], 0.0]
        (b"\xd4\x05\x00", 3),  # an extension value
        (b"\xc4\x00", 2),  # b""
    ],
    ids=[
        "lists",
        "maps",
        "one-entry maps",
        "nested",
        "nested maps",
        "ints",
        "strs",
        "mixed",
        "ext",
        "bin",
    ],
)
def test_hostile_msgpack_bodies_are_refused_before_decoding(
    element: bytes, stored_per_value: int
) -> None:
    body = bomb(COUNT, element)
    blob = reframe(carrier(), body=body)
    estimate_free = COUNT * stored_per_value
    assert_refused_cheaply(lambda: small_codec().deserialize(blob, None), estimate_free)
    # With room enough, the same bytes decode (the estimate is not a guess at damage).
    if element in (b"\x90", b"\xa2ab", b"\xc4\x00"):
        roomy = SerdeCheckpointCodec(dict, max_decoded_size=1 << 30)
        assert len(roomy.deserialize(blob, None).state["a"]) == COUNT


@pytest.mark.parametrize(
    "element", [b"[]", b"{}", b'{"":0}', b"[[[[]]]]", b'""', b"-123456"], ids=repr
)
def test_hostile_json_bodies_are_refused_before_decoding(element: bytes) -> None:
    blob = reframe(carrier("json"), body=json_bomb(COUNT, element))
    assert_refused_cheaply(
        lambda: small_codec().deserialize(blob, None), COUNT * (len(element) + 1)
    )


def delta_blob(base: dict[str, Any], delta: Delta) -> tuple[SerdeCheckpointCodec[Any], Any]:
    """A keyframe of ``base`` and a delta on it, forged to hold ``delta`` (compressed)."""
    codec = small_codec()
    first = Checkpoint.first("n", base)
    _, frame = codec.encode(first, GRAPH, "t", None)
    child = first.child("n", {**base, "a": [*base["a"], 99]})
    real, _ = codec.encode(child, GRAPH, "t", frame)
    assert b"delta" in real.data[:300]
    return codec, (frame, with_delta(real, delta))


def with_delta(blob: CheckpointBlob, delta: Delta) -> CheckpointBlob:
    """``blob``, a delta, holding ``delta`` instead, compressed as its header says."""
    body = msgspec.msgpack.encode(delta)
    if peek_header(blob).compression == "zstd":
        body = zstandard.ZstdCompressor(write_content_size=True).compress(body)
    return reframe(blob, body=body)


BASE = {"a": list(range(20)), "pad": random.Random(1).randbytes(1500).hex()}


def claims(state: dict[str, Any]) -> dict[str, int]:
    fields = split_fields(msgspec.msgpack.encode(state))
    assert fields is not None
    return {"state_size": state_size(fields), "state_hash": fields_hash(fields)}


def test_a_delta_replacing_a_field_with_a_bomb_is_refused() -> None:
    target = {**BASE, "a": [[]] * COUNT}
    bombed = msgspec.Raw(msgspec.msgpack.encode(target["a"]))
    delta = Delta(**claims(target), replaced={"a": bombed})
    codec, (frame, forged) = delta_blob(BASE, delta)
    assert_refused_cheaply(lambda: codec.decode(forged, GRAPH, frame), COUNT)
    assert_refused_cheaply(lambda: codec.follow(frame, [forged]), COUNT)


def test_a_delta_appending_a_bomb_is_refused() -> None:
    target = {**BASE, "a": [*BASE["a"], *([[]] * COUNT)]}
    delta = Delta(**claims(target), appended={"a": (COUNT, b"\x90" * COUNT)})
    codec, (frame, forged) = delta_blob(BASE, delta)
    # The delta itself is small to decode; the state it rebuilds is what is refused.
    assert_refused_cheaply(lambda: codec.decode(forged, GRAPH, frame), 3 * COUNT)


def test_a_delta_patching_a_bomb_in_is_refused() -> None:
    long = {**BASE, "a": [0] * COUNT}
    target = {**long, "a": [[]] * COUNT}
    patches = {index: msgspec.Raw(b"\x90") for index in range(COUNT)}
    delta = Delta(**claims(target), patched={"a": (COUNT, patches)})
    codec, (frame, forged) = delta_blob(long, delta)
    assert_refused_cheaply(lambda: codec.decode(forged, GRAPH, frame), 8 * COUNT)


def test_splitting_a_long_array_for_a_delta_is_bounded() -> None:
    # Each element split out is an object of its own: 1 byte of state, 64 bytes held.
    long = {**BASE, "a": [0] * COUNT}
    patched = {**long, "a": [1, *long["a"][1:]]}
    delta = Delta(**claims(patched), patched={"a": (COUNT, {0: msgspec.Raw(b"\x01")})})
    codec, (frame, forged) = delta_blob(long, delta)
    assert_refused_cheaply(lambda: codec.decode(forged, GRAPH, frame), 2 * COUNT)
    roomy = SerdeCheckpointCodec(dict, max_decoded_size=1 << 30)
    assert roomy.decode(forged, GRAPH, frame)[0].state == patched
    # Saving: an array too long to split is replaced whole in the delta instead.
    first = Checkpoint.first("n", long)
    _, base = codec.encode(first, GRAPH, "t", None)
    blob, _ = codec.encode(first.child("n", patched), GRAPH, "t", base)
    assert codec.decode(blob, GRAPH, base)[0].state == patched


async def test_a_chain_read_through_the_facade_is_bounded() -> None:
    codec = small_codec()
    blobs = InMemoryBlobStore()
    writer = TypedCheckpointStore(blobs, codec)
    first = Checkpoint.first("n", BASE)
    await writer.save_with_trace("t", first, GRAPH)
    second = first.child("n", {**BASE, "a": [*BASE["a"], 99]})
    await writer.save_with_trace("t", second, GRAPH)
    stored = await blobs.load(second.checkpoint_id)
    assert stored is not None
    target = {**BASE, "a": [[]] * COUNT}
    bombed = msgspec.Raw(msgspec.msgpack.encode(target["a"]))
    await blobs.rewrite(with_delta(stored, Delta(**claims(target), replaced={"a": bombed})))
    reader = TypedCheckpointStore(blobs, codec)
    with pytest.raises(CorruptCheckpoint, match="max_decoded_size"):
        await reader.load_latest("t", GRAPH)


def test_saving_a_state_no_load_could_decode_is_refused() -> None:
    codec = small_codec()
    state = {"a": [[]] * COUNT}
    with pytest.raises(CodecError, match="max_decoded_size"):
        codec.serialize(Checkpoint.first("n", state), GRAPH, "t")
    with pytest.raises(CodecError, match="max_decoded_size"):
        small_codec(format="json").serialize(Checkpoint.first("n", state), GRAPH, "t")
    # What fits is saved and loads.
    fits = {"a": [[]] * (COUNT // 100)}
    blob = codec.serialize(Checkpoint.first("n", fits), GRAPH, "t")
    assert codec.deserialize(blob, GRAPH).state == fits


def test_the_limit_is_checked() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_decoded_size"):
            SerdeCheckpointCodec(max_decoded_size=bad)  # type: ignore[arg-type]


# -- the estimate is an upper bound of what decoding really builds -------------------------

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=20)
        | st.dictionaries(st.text(max_size=8) | st.integers(-100, 100), children, max_size=8)
    ),
    max_leaves=200,
)


def measured(decode: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        kept = decode()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return held


def estimate(data: bytes, body_format: str, costs: Any = PLAIN) -> int:
    """The smallest limit the body passes (found by bisection on check_decoded_size)."""
    low, high = 0, 1 << 40
    while low < high:
        middle = (low + high) // 2
        try:
            check_decoded_size(data, body_format, middle, costs)
        except ValueError:
            low = middle + 1
        else:
            high = middle
    return low


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.lists(plain_values, min_size=1, max_size=30))
def test_the_estimate_is_never_below_what_decoding_builds(value: list[Any]) -> None:
    for encode, decode, body_format in (
        (msgspec.msgpack.encode, msgspec.msgpack.decode, "msgpack"),
        (msgspec.json.encode, msgspec.json.decode, "json"),
    ):
        if body_format == "json" and any(isinstance(v, bytes | dict) for v in value):
            continue  # JSON has no bytes, and only str keys
        data = encode(value)
        assert measured(lambda data=data, decode=decode: decode(data)) <= estimate(
            data, body_format
        )


@dataclasses.dataclass
class Record:
    name: str = ""
    tags: list[str] = dataclasses.field(default_factory=list)
    seen: set[int] = dataclasses.field(default_factory=set)


class Model(pydantic.BaseModel):
    name: str = ""
    size: int = 0
    records: list[Record] = []


class Row(TypedDict):
    id: int
    values: frozenset[int]


class Point(msgspec.Struct):
    x: float = 0.0
    y: float = 0.0
    label: str = ""


@pytest.mark.parametrize(
    ("state_type", "value"),
    [
        (list[Record], [{}] * 2000),
        (list[Record], [{"seen": [1]}] * 2000),
        (list[Model], [{}] * 2000),
        (list[Model], [{"records": [{}, {}]}] * 500),
        (list[Row], [{"id": 1, "values": [2]}] * 2000),
        (list[Point], [{}] * 2000),
        (dict[str, set[int]], {str(n): [n] for n in range(2000)}),
    ],
    ids=[
        "dataclasses",
        "sets in dataclasses",
        "models",
        "nested models",
        "typeddicts",
        "structs",
        "sets",
    ],
)
def test_the_estimate_covers_what_state_classes_build(state_type: Any, value: Any) -> None:
    from flowpoint.codec._schema import StateSchema

    schema = StateSchema(state_type, allow_secrets=False)
    costs = decode_costs(state_type)
    data = msgspec.msgpack.encode(value)
    held = measured(lambda: schema.decode(data, "msgpack", None))  # type: ignore[arg-type]
    assert held <= estimate(data, "msgpack", costs)
