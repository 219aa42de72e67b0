"""Fuzzing the decoder: real payloads of every codec option, mutated; only flowpoint errors escape.

Payloads are made with every combination of body format, compression and
encryption, then mutated: bit flips, truncations, splices of two payloads, absurd
header lengths, forged header fields and bodies behind a re-sealed checksum (so
that mutations reach the parsers behind it), and zstd bombs. Every reader,
whatever its options, may raise only :class:`CheckpointStoreError` subclasses.

The default run is small enough for every test run (seconds); set
``FLOWPOINT_FUZZ_EXAMPLES`` (say, 20000) for a long run. Inputs worth keeping go
to ``fuzz_corpus/`` as hex, and :func:`test_corpus_replays` replays them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import struct
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpoint import (
    Checkpoint,
    CheckpointBlob,
    CheckpointStoreError,
    CorruptCheckpoint,
    SerdeCheckpointCodec,
)
from flowpoint.codec import KeyRing
from flowpoint.codec._envelope import MAGIC, EnvelopeHeader, encode_head, seal_envelope
from flowpoint.ids import CheckpointId, TraceId
from tests.states import DataclassState, samples

GRAPH = 0xF022F022F022F022
EXAMPLES = int(os.environ.get("FLOWPOINT_FUZZ_EXAMPLES", "150"))
CORPUS = Path(__file__).with_name("fuzz_corpus")
MIB = 1024 * 1024

KEYS = KeyRing({"old": bytes(range(32)), "new": bytes(range(100, 132))}, primary="new")
OLD_KEYS = KeyRing({"old": bytes(range(32))}, primary="old")
FORMATS = ("msgpack", "json")
COMPRESSIONS = ("zstd", None)
ENCRYPTIONS = (None, OLD_KEYS, KEYS)
OPTIONS = list(itertools.product(FORMATS, COMPRESSIONS, ENCRYPTIONS))

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_header_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")


def _codec(
    state_type: Any, fmt: str, compression: str | None, keys: KeyRing | None, **kw: Any
) -> Any:
    return SerdeCheckpointCodec(
        state_type, format=fmt, compression=compression, encryption=keys, **kw
    )


# Readers of every kind: with and without keys, with small limits, typed and untyped.
READERS = [
    _codec(dict, "msgpack", "zstd", None),
    _codec(dict, "msgpack", "zstd", KEYS),
    _codec(dict, "json", None, KEYS, allow_unencrypted=True),
    _codec(dict, "msgpack", "zstd", OLD_KEYS, max_state_size=4096, max_payload_size=8192),
    _codec(DataclassState, "msgpack", "zstd", KEYS, allow_unencrypted=True),
]


@functools.cache
def seeds() -> tuple[CheckpointBlob, ...]:
    """Real payloads: each option combination, a large (compressible) and a small state."""
    _, typed_state = samples()["dataclass"]
    states: list[tuple[Any, Any]] = [
        (dict, {"messages": [f"message {n}: " + "lorem ipsum dolor " * 20 for n in range(8)]}),
        (dict, {"n": 1}),
        (DataclassState, typed_state),
    ]
    blobs = []
    parent = Checkpoint.first("start", {})
    for (fmt, compression, keys), (state_type, state) in itertools.product(OPTIONS, states):
        checkpoint = parent.child("node", state, metadata={"source": "fuzz", "n": 3})
        codec = _codec(state_type, fmt, compression, keys)
        blobs.append(codec.serialize(checkpoint, GRAPH, TraceId("fuzz/trace")))
    return tuple(blobs)


def only_flowpoint_errors(blob: CheckpointBlob) -> None:
    """Every reader, every entry point: nothing but CheckpointStoreError may escape."""
    for reader in READERS:
        for expected in (GRAPH, None):
            with contextlib.suppress(CheckpointStoreError):
                reader.deserialize(blob, expected)
        with contextlib.suppress(CheckpointStoreError):
            reader.key_id_of(blob)
        if reader.encryption is not None:
            with contextlib.suppress(CheckpointStoreError):
                reader.reseal(blob)


def with_checksum(data: bytes | bytearray) -> bytes:
    """Re-seal mutated bytes so the mutation reaches the parsers behind the checksum."""
    body = bytes(data[:-8]) if len(data) >= 8 else bytes(data)
    return body + struct.pack(">Q", xxhash.xxh3_64_intdigest(body))


def split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """The head, the body and the checksum of an intact payload."""
    (length,) = struct.unpack_from(">I", data, 5)
    return data[: 9 + length], data[9 + length : -8], data[-8:]


def blob_for_header(raw_header: list[Any], data: bytes, fallback: CheckpointBlob) -> CheckpointBlob:
    """A blob whose store header agrees with a (forged) payload header, where it can."""
    try:
        header = msgspec.msgpack.decode(_header_encoder.encode(raw_header), type=EnvelopeHeader)
    except (msgspec.MsgspecError, ValueError, TypeError, OverflowError):
        return dataclasses.replace(fallback, data=data)
    return CheckpointBlob(
        checkpoint_id=CheckpointId(header.checkpoint_id),
        trace_id=TraceId(header.trace_id),
        step=header.step,
        parent_id=None if header.parent_id is None else CheckpointId(header.parent_id),
        graph_hash=header.graph_hash,
        created_at=header.created_at,
        current_node=header.current_node,
        metadata=header.metadata,
        data=data,
    )


# -- mutations of real payloads ------------------------------------------------------------

seed_index = st.integers(0, len(OPTIONS) * 3 - 1)


@given(
    index=seed_index,
    flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 7)), min_size=1, max_size=8),
    reseal=st.booleans(),
)
@fuzz
def test_bit_flips(index: int, flips: list[tuple[int, int]], reseal: bool) -> None:
    blob = seeds()[index]
    data = bytearray(blob.data)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    mutated = with_checksum(data) if reseal else bytes(data)
    only_flowpoint_errors(dataclasses.replace(blob, data=mutated))


@given(
    index=seed_index,
    start=st.integers(0, 100_000),
    end=st.integers(0, 100_000),
    reseal=st.booleans(),
)
@fuzz
def test_truncations(index: int, start: int, end: int, reseal: bool) -> None:
    blob = seeds()[index]
    data = blob.data
    cut = data[start % (len(data) + 1) :][: end % (len(data) + 1)]
    for candidate in (data[: end % len(data)], cut):
        mutated = with_checksum(candidate) if reseal else candidate
        only_flowpoint_errors(dataclasses.replace(blob, data=mutated))


@given(a=seed_index, b=seed_index, at_a=st.integers(0, 100_000), at_b=st.integers(0, 100_000))
@fuzz
def test_splices_of_two_payloads(a: int, b: int, at_a: int, at_b: int) -> None:
    one, two = seeds()[a], seeds()[b]
    spliced = one.data[: at_a % len(one.data)] + two.data[at_b % len(two.data) :]
    for candidate in (spliced, with_checksum(spliced)):
        only_flowpoint_errors(dataclasses.replace(one, data=candidate))
    # Head of one, body of the other: the framing is intact, the body is not its own.
    head, _, _ = split(one.data)
    _, body, _ = split(two.data)
    only_flowpoint_errors(dataclasses.replace(one, data=with_checksum(head + body + bytes(8))))


@given(
    index=seed_index,
    length=st.one_of(
        st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 64 * 1024, 64 * 1024 + 1]),
        st.integers(0, 2**32 - 1),
    ),
    reseal=st.booleans(),
)
@fuzz
def test_absurd_header_lengths(index: int, length: int, reseal: bool) -> None:
    blob = seeds()[index]
    data = bytearray(blob.data)
    struct.pack_into(">I", data, 5, length)
    mutated = with_checksum(data) if reseal else bytes(data)
    only_flowpoint_errors(dataclasses.replace(blob, data=mutated))


weird_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.sampled_from(["zstd", "lz4", "json", "msgpack", "old", "new", "", "x" * 70, "k\n"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)


@given(
    index=seed_index,
    changes=st.lists(st.tuples(st.integers(0, 12), weird_values), min_size=1, max_size=3),
    agree=st.booleans(),
)
@fuzz
def test_forged_header_fields(index: int, changes: list[tuple[int, Any]], agree: bool) -> None:
    """Any header field, any value, checksum re-sealed; the store's header agreeing or not."""
    blob = seeds()[index]
    head, body, _ = split(blob.data)
    header: list[Any] = msgspec.msgpack.decode(head[9:])
    for position, value in changes:
        if position < len(header):
            header[position] = value
        else:
            header.append(value)
    try:
        encoded = _header_encoder.encode(header)
    except (TypeError, OverflowError, ValueError):
        return
    data = with_checksum(
        MAGIC + b"\x01" + struct.pack(">I", len(encoded)) + encoded + body + bytes(8)
    )
    forged = blob_for_header(header, data, blob) if agree else dataclasses.replace(blob, data=data)
    only_flowpoint_errors(forged)


@given(
    index=seed_index,
    flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 255)), min_size=1, max_size=6),
)
@fuzz
def test_mutated_bodies_behind_a_valid_checksum(index: int, flips: list[tuple[int, int]]) -> None:
    blob = seeds()[index]
    head, body, _ = split(blob.data)
    mutated = bytearray(body)
    for position, value in flips:
        if mutated:
            mutated[position % len(mutated)] ^= value
    only_flowpoint_errors(dataclasses.replace(blob, data=with_checksum(head + mutated + bytes(8))))


# -- forged bodies that authenticate: the parsers behind decryption ------------------------


def forge(
    body: bytes,
    *,
    compression: str | None,
    body_format: str = "msgpack",
    keys: KeyRing | None = None,
) -> CheckpointBlob:
    """A well-formed payload around ``body`` (encrypted with ``keys``), as a forger with the
    key, or a writer to an unencrypted store, would make it: every check before the
    decompressor and the decoder passes."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    header = EnvelopeHeader(
        body_format=body_format,
        compression=compression,
        key_id=None if keys is None else keys.primary,
        checkpoint_id=UUID(int=7),
        trace_id="fuzz",
        step=0,
        parent_id=None,
        graph_hash=GRAPH,
        created_at=created,
        current_node="n",
        metadata={},
    )
    head = encode_head(header)
    sealed = body if keys is None else keys.encrypt(body, head)
    return CheckpointBlob(
        checkpoint_id=CheckpointId(UUID(int=7)),
        trace_id=TraceId("fuzz"),
        step=0,
        parent_id=None,
        graph_hash=GRAPH,
        created_at=created,
        current_node="n",
        metadata={},
        data=seal_envelope(head, sealed),
    )


zstd_bodies = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda tail: b"\x28\xb5\x2f\xfd" + tail),  # zstd magic
    st.binary(min_size=1, max_size=2000).map(zstandard.ZstdCompressor().compress),
    st.binary(max_size=2000).map(
        lambda raw: zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    ),
)


@given(
    body=zstd_bodies,
    flip=st.none() | st.tuples(st.integers(0, 10_000), st.integers(1, 255)),
    body_format=st.sampled_from(FORMATS),
    keys=st.sampled_from([None, KEYS]),
)
@fuzz
def test_forged_zstd_bodies(
    body: bytes, flip: tuple[int, int] | None, body_format: str, keys: KeyRing | None
) -> None:
    if flip is not None and body:
        mutated = bytearray(body)
        mutated[flip[0] % len(body)] ^= flip[1]
        body = bytes(mutated)
    only_flowpoint_errors(forge(body, compression="zstd", body_format=body_format, keys=keys))


@given(
    body=st.binary(max_size=500) | st.text(max_size=200).map(str.encode),
    body_format=st.sampled_from(FORMATS),
)
@fuzz
def test_forged_state_bodies(body: bytes, body_format: str) -> None:
    only_flowpoint_errors(forge(body, compression=None, body_format=body_format, keys=KEYS))


# -- compression bombs ---------------------------------------------------------------------


@functools.cache
def zeros_frame(size: int, *, declare_size: bool) -> bytes:
    """A zstd frame of ``size`` zero bytes, made a chunk at a time (never all in memory)."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    stream = compressor.compressobj(size=size if declare_size else -1)
    chunk = bytes(4 * MIB)
    parts = [
        stream.compress(chunk[: min(len(chunk), size - done)])
        for done in range(0, size, len(chunk))
    ]
    parts.append(stream.flush())
    return b"".join(parts)


@contextlib.contextmanager
def peak_memory(limit: int) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("keys", [None, KEYS], ids=["plain", "encrypted"])
@pytest.mark.parametrize("declare_size", [True, False], ids=["sized", "unsized"])
def test_a_gigabyte_bomb_is_corrupt_within_bounded_memory(
    keys: KeyRing | None, declare_size: bool
) -> None:
    bomb = zeros_frame(1024 * MIB, declare_size=declare_size)
    assert len(bomb) < 64 * 1024
    blob = forge(bomb, compression="zstd", keys=keys)
    reader = SerdeCheckpointCodec(dict, encryption=keys or KEYS, allow_unencrypted=True)
    with peak_memory(16 * MIB), pytest.raises(CorruptCheckpoint, match="max_state_size"):
        reader.deserialize(blob, GRAPH)


def test_a_frame_header_claiming_any_size_is_refused_before_allocating() -> None:
    # A hand-made frame header: magic, descriptor (single segment, 8-byte size), the size.
    for claimed in (2**28 + 1, 2**40, 2**63, 2**64 - 3):
        frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", claimed) + b"\x01\x00\x00"
        assert zstandard.frame_content_size(frame) == claimed
        with peak_memory(4 * MIB), pytest.raises(CorruptCheckpoint, match="would decompress"):
            SerdeCheckpointCodec().deserialize(forge(frame, compression="zstd"), GRAPH)


def test_a_bomb_under_the_limit_is_read() -> None:
    """The limit is the bound, not a guess: a big state within it is fine."""
    frame = zeros_frame(2 * MIB, declare_size=False)
    body = msgspec.msgpack.encode(bytes(2 * MIB - 5))  # bin32 header: 5 bytes
    assert len(body) == 2 * MIB
    blob = forge(zstandard.ZstdCompressor().compress(body), compression="zstd")
    assert SerdeCheckpointCodec(Any).deserialize(blob, GRAPH).state == bytes(2 * MIB - 5)
    with pytest.raises(CheckpointStoreError):  # zeros are not MessagePack of a dict
        SerdeCheckpointCodec().deserialize(forge(frame, compression="zstd"), GRAPH)


# -- the regression corpus -----------------------------------------------------------------


def corpus_entries() -> list[Path]:
    return sorted(CORPUS.glob("*.hex"))


def load_entry(path: Path) -> bytes:
    lines = path.read_text(encoding="ascii").splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


@pytest.mark.parametrize("path", corpus_entries(), ids=lambda path: path.stem)
def test_corpus_replays(path: Path) -> None:
    """Inputs kept from fuzzing, with the store header the payload itself names."""
    data = load_entry(path)
    fallback = dataclasses.replace(seeds()[0], data=data)
    blob = fallback
    with contextlib.suppress(Exception):
        head, _, _ = split(data)
        raw_header = msgspec.msgpack.decode(head[9:])
        blob = blob_for_header(raw_header, data, fallback)
    with peak_memory(64 * MIB):
        only_flowpoint_errors(blob)
        only_flowpoint_errors(fallback)


def test_the_corpus_is_there() -> None:
    assert len(corpus_entries()) >= 5


def write_corpus_entry(name: str, data: bytes, note: str) -> None:  # pragma: no cover
    """Keep an input (call by hand from a failing example): hex, 64 bytes a line."""
    text = data.hex()
    lines = [f"# {note}"] + [text[i : i + 128] for i in range(0, len(text), 128)]
    (CORPUS / f"{name}.hex").write_text("\n".join(lines) + "\n", encoding="ascii")
