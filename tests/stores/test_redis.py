"""What only the Redis backend does: its keys, its scripts, expiry, outages and races.

The general contract is the conformance suite's; these tests reach under the store
with a client of their own. Every test works under a key prefix of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from flowpoint import Checkpoint, TypedCheckpointStore, open_store
from flowpoint.blob import CheckpointBlob, DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import new_checkpoint_id
from flowpoint.stores import _redis_scripts as redis_scripts
from flowpoint.stores import redis as redis_module
from flowpoint.stores._base import PruneRule
from flowpoint.stores.redis import RedisBlobStore, trace_key_suffix
from tests.blobs import make_blob
from tests.harnesses.redis import (
    REDIS_URL,
    RedisHarness,
    connect_admin,
    delete_prefix,
    new_prefix,
)
from tests.proxy import OutageProxy

AWKWARD_TRACE_IDS = [
    "..",
    "a/b",
    "%2F",
    "a%2Fb",
    " spaces ",
    "naïve café 東京",
    "🦜" * 256,
    "'; DROP TABLE x; --",
    "{braces}:colon*star?",
    "[glob]\\back",
    "trace:x",
    "cp:0123",
    "Trace",
    "trace",
    "~tilde",
]


@pytest.fixture
async def admin() -> AsyncIterator[redis.asyncio.Redis]:
    client = await connect_admin()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(admin: redis.asyncio.Redis) -> AsyncIterator[str]:
    made = new_prefix()
    try:
        yield made
    finally:
        await delete_prefix(admin, made)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisBlobStore]:
    async with RedisBlobStore.from_url(REDIS_URL, prefix=prefix) as opened:
        yield opened


async def keys_under(admin: redis.asyncio.Redis, prefix: str) -> set[str]:
    return {
        key.decode()[len(prefix) :] async for key in admin.scan_iter(match=f"{prefix}*", count=500)
    }


# -- URLs and construction ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "prefix", "ttl_ms", "kwargs"),
    [
        ("redis://127.0.0.1:6379/0", "flowpoint:", 0, {"host": "127.0.0.1", "db": 0}),
        ("redis://127.0.0.1", "flowpoint:", 0, {"host": "127.0.0.1"}),
        (
            "redis://127.0.0.1:6379/2?prefix=app%3Acp%3A&trace_ttl=1.5",
            "app:cp:",
            1500,
            {"db": 2, "port": 6379},
        ),
        (
            "rediss://user:s%40cret@127.0.0.1:6380/0?socket_timeout=5&trace_ttl=86400",
            "flowpoint:",
            86_400_000,
            {"username": "user", "password": "s@cret", "port": 6380, "socket_timeout": 5.0},
        ),
    ],
)
async def test_open_store_urls(url: str, prefix: str, ttl_ms: int, kwargs: dict[str, Any]) -> None:
    async with open_store(url) as store:
        assert isinstance(store, RedisBlobStore)
        assert (store._prefix, store._ttl_ms, store._owns_client) == (prefix, ttl_ms, True)
        connection_kwargs = store._client.connection_pool.connection_kwargs
        assert {name: connection_kwargs.get(name) for name in kwargs} == kwargs
        assert "cret" not in repr(store)
    if url.startswith("rediss"):
        assert store._client.connection_pool.connection_class.__name__ == "SSLConnection"


async def test_keyword_options_win_over_the_url() -> None:
    url = "redis://127.0.0.1:6379/0?prefix=a:&trace_ttl=5"
    async with open_store(url, prefix="b:", trace_ttl=timedelta(milliseconds=1.5)) as store:
        assert isinstance(store, RedisBlobStore)
        assert (store._prefix, store._ttl_ms) == ("b:", 2)  # rounded up to whole ms
    async with open_store(url, trace_ttl=None) as store:
        assert isinstance(store, RedisBlobStore)
        assert store._ttl_ms == 0


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://127.0.0.1:6379/0?trace_ttl=soon", {}),
        ("redis://127.0.0.1:6379/0?trace_ttl=0", {}),
        ("redis://127.0.0.1:6379/0?trace_ttl=-1", {}),
        ("redis://127.0.0.1:6379/0?trace_ttl=inf", {}),
        ("redis://127.0.0.1:6379/0?prefix=", {}),
        ("redis://127.0.0.1:6379/0?prefix=a:&prefix=b:", {}),
        ("redis://127.0.0.1:6379/0?no_such_option=1", {}),
        ("redis://127.0.0.1:6379/0?db=x", {}),
        ("redis://127.0.0.1:6379/zero", {}),
        ("redis://127.0.0.1:6379/0/1", {}),
        ("redis://127.0.0.1:port/0", {}),
        ("redis://127.0.0.1:6379/0#fragment", {}),
        ("redis://127.0.0.1:6379/0", {"decode_responses": True}),
        ("redis://127.0.0.1:6379/0", {"no_such_option": 1}),
        ("redis://127.0.0.1:6379/0", {"trace_ttl": "soon"}),
        ("redis://127.0.0.1:6379/0", {"trace_ttl": True}),
        ("redis://127.0.0.1:6379/0", {"prefix": ""}),
    ],
)
def test_bad_urls_and_options_are_value_errors(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
        open_store(url, **options)


def test_from_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisBlobStore.from_url("unix:///tmp/redis.sock")


async def test_the_client_must_be_an_async_redis_client_returning_bytes() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisBlobStore(object())  # type: ignore[arg-type]
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisBlobStore(client)
    finally:
        await client.aclose()


async def connected_names(admin: redis.asyncio.Redis) -> set[str]:
    return {entry.get("name", "") for entry in await admin.client_list()}


async def wait_until_gone(admin: redis.asyncio.Redis, name: str) -> None:
    """The server notices a closed connection a moment after the client closed it."""
    for _ in range(200):
        if name not in await connected_names(admin):
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"the connection {name!r} stays open")


async def test_an_application_client_is_not_closed(admin: redis.asyncio.Redis, prefix: str) -> None:
    name = f"fptest-app-{os.urandom(4).hex()}"
    client = redis.asyncio.Redis.from_url(REDIS_URL, client_name=name)
    try:
        store = RedisBlobStore(client, prefix=prefix)
        await store.save(make_blob())
        await store.close()
        await store.close()
        assert name in await connected_names(admin)
        assert await client.ping()
        with pytest.raises(StorageError, match="closed"):
            await store.load_latest("trace")
    finally:
        await client.aclose()


async def test_a_client_made_from_a_url_is_closed(admin: redis.asyncio.Redis, prefix: str) -> None:
    name = f"fptest-own-{os.urandom(4).hex()}"
    store = RedisBlobStore.from_url(REDIS_URL, prefix=prefix, client_name=name)
    await store.save(make_blob())
    assert name in await connected_names(admin)
    await store.close()
    await store.close()  # closing twice is harmless
    await wait_until_gone(admin, name)


async def test_a_resp3_client_works(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL, protocol=3)
    try:
        store = RedisBlobStore(client, prefix=prefix)
        blobs = [make_blob(step=step) for step in range(3)]
        for blob in blobs:
            await store.save(blob)
        assert await store.load(blobs[0].checkpoint_id) == blobs[0]
        assert await store.load_latest("trace") == blobs[2]
        assert await store.history("trace") == [b.info() for b in reversed(blobs)]
        assert await store.traces() == ["trace"]
        assert await store.prune("trace", PruneRule(keep_latest=1, older_than=None)) == 2
        assert await store.delete_trace("trace") == 1
    finally:
        await client.aclose()


# -- keys and values ----------------------------------------------------------------------


async def test_layout_is_readable(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    first = make_blob("user-42/session-7", 0, created_at=created)
    second = make_blob(
        "user-42/session-7", 1, parent_id=first.checkpoint_id, created_at=created, data=b"\x00\xff"
    )
    for blob in (first, second):
        await store.save(blob)

    trace_key = "trace:user-42%2Fsession-7"
    assert await keys_under(admin, prefix) == {
        f"cp:{first.checkpoint_id.hex}",
        f"cp:{second.checkpoint_id.hex}",
        trace_key,
        "traces",
    }
    assert await admin.zrange(prefix + trace_key, 0, -1, withscores=True) == [
        (f"{0:020d}:{first.checkpoint_id.hex}".encode(), 0.0),
        (f"{1:020d}:{second.checkpoint_id.hex}".encode(), 0.0),
    ]
    assert await admin.zrange(prefix + "traces", 0, -1) == [b"user-42/session-7"]
    fields = await admin.hgetall(f"{prefix}cp:{second.checkpoint_id.hex}")
    token = fields.pop(b"save_token")
    assert re.fullmatch(rb"[0-9a-f]{16}", token)
    assert fields == {
        b"trace": b"user-42/session-7",
        b"step": b"1",
        b"parent": first.checkpoint_id.hex.encode(),
        b"graph_hash": b"0123456789abcdef",
        b"created_at": b"2026-01-02T03:04:05.678901Z",
        b"node": b'"plan"',
        b"metadata": b'{"source":"test","attempt":1}',
        b"data": b"\x00\xff",
    }
    assert await admin.hget(f"{prefix}cp:{first.checkpoint_id.hex}", "parent") == b""
    # Without trace_ttl nothing expires.
    for key in await keys_under(admin, prefix):
        assert await admin.pttl(prefix + key) == -1


async def test_writes_are_one_hash_per_checkpoint_listed_by_trace(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    blob = make_blob("user-42/session-7", 0)
    await store.save(blob)
    writes = [
        PendingWrite(blob.trace_id, blob.checkpoint_id, "a:b", -3, b"error"),
        PendingWrite(blob.trace_id, blob.checkpoint_id, "web", 0, b"\x00"),
    ]
    await store.save_writes(writes)
    hex_id = blob.checkpoint_id.hex
    assert f"w:{hex_id}" in await keys_under(admin, prefix)
    assert await admin.hgetall(f"{prefix}w:{hex_id}") == {
        b"trace": b"user-42/session-7",
        b"-3:a:b": b"error",
        b"0:web": b"\x00",
    }
    assert await admin.smembers(f"{prefix}writes:user-42%2Fsession-7") == {hex_id.encode()}
    assert await store.load_writes(blob.checkpoint_id) == writes
    await store.delete_trace(blob.trace_id)
    assert await keys_under(admin, prefix) == set()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"trace", b"tab\there"),
        (b"trace", b"\xff"),
        (b"zero:task", b"x"),
        (b"99999999999999999999:task", b"x"),
        (b"0:", b"x"),
        (b"0:\xff", b"x"),
    ],
)
async def test_a_damaged_writes_hash_is_corrupt(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore, field: bytes, value: bytes
) -> None:
    checkpoint_id = new_checkpoint_id()
    await store.save_writes([PendingWrite("t", checkpoint_id, "task", 0, b"w")])
    await admin.hset(f"{prefix}w:{checkpoint_id.hex}", field, value)
    with pytest.raises(CorruptCheckpoint) as caught:
        await store.load_writes(checkpoint_id)
    assert caught.value.checkpoint_id == checkpoint_id


async def test_header_fields_round_trip(store: RedisBlobStore) -> None:
    blob = make_blob(
        step=7,
        parent_id=new_checkpoint_id(),
        graph_hash=2**64 - 1,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        current_node=None,
        metadata={"s": "é", "i": -(2**63), "f": 0.5, "b": True, "n": None},
        data=b"",
    )
    await store.save(blob)
    loaded = await store.load(blob.checkpoint_id)
    assert loaded == blob
    assert loaded is not None
    assert loaded.created_at.tzinfo == UTC
    for node in ("", "null", '"quoted"'):
        other = make_blob("nodes", len(node), current_node=node)
        await store.save(other)
        assert (await store.load(other.checkpoint_id)) == other


async def test_awkward_trace_ids_get_keys_of_their_own(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    blobs = [make_blob(trace, step) for step, trace in enumerate(AWKWARD_TRACE_IDS)]
    for blob in blobs:
        await store.save(blob)
    suffixes = {trace_key_suffix(trace) for trace in AWKWARD_TRACE_IDS}
    assert len(suffixes) == len(AWKWARD_TRACE_IDS)
    trace_keys = {key for key in await keys_under(admin, prefix) if key.startswith("trace:")}
    assert trace_keys == {f"trace:{suffix}" for suffix in suffixes}
    for key in trace_keys:
        # Nothing a glob pattern, a cluster hash tag or a key separator would read.
        assert re.fullmatch(r"trace:[A-Za-z0-9_.~%-]+", key), key
    assert await store.traces() == sorted(AWKWARD_TRACE_IDS)
    # Deleting by id makes the script quote the trace id itself: the Lua quoting must
    # find the very keys Python's made, or index entries would be left behind.
    for blob in blobs:
        assert await store.delete(blob.checkpoint_id)
    assert await keys_under(admin, prefix) == set()
    assert await store.traces() == []


async def test_steps_order_exactly_over_the_whole_64_bit_range(store: RedisBlobStore) -> None:
    # Beyond 2**53 a sorted set's float score would merge neighbours; members do not.
    steps = [0, 10, 2**53, 2**53 + 1, 2**63 - 2, 2**63 - 1]
    for step in (2**53 + 1, 2**63 - 1, 0, 2**53, 10, 2**63 - 2):
        await store.save(make_blob(step=step))
    assert [info.step for info in await store.history("trace")] == sorted(steps, reverse=True)
    latest = await store.load_latest("trace")
    assert latest is not None
    assert latest.step == 2**63 - 1
    page = await store.history("trace", before_step=2**53 + 1)
    assert [info.step for info in page] == [2**53, 10, 0]
    with pytest.raises(CheckpointConflict):
        await store.save(make_blob(step=2**63 - 1))
    assert await store.prune("trace", PruneRule(keep_latest=2, older_than=None)) == 4


async def test_step_and_id_conflicts_store_nothing(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    first = make_blob()
    await store.save(first)
    loser = make_blob()
    with pytest.raises(CheckpointConflict) as step_taken:
        await store.save(loser)
    assert (step_taken.value.trace_id, step_taken.value.step, step_taken.value.detail) == (
        "trace",
        0,
        None,
    )
    with pytest.raises(CheckpointConflict, match=r"checkpoint id .* exists"):
        await store.save(make_blob("other", 5, checkpoint_id=first.checkpoint_id))
    assert await keys_under(admin, prefix) == {
        f"cp:{first.checkpoint_id.hex}",
        "trace:trace",
        "traces",
    }
    assert await store.traces() == ["trace"]


async def test_a_resent_save_is_not_a_conflict_with_itself(store: RedisBlobStore) -> None:
    # redis-py resends a command whose reply was lost; the script then finds its own write.
    blob = make_blob()
    await store._save_with_token(blob, "0123456789abcdef")
    await store._save_with_token(blob, "0123456789abcdef")
    with pytest.raises(CheckpointConflict, match="exists"):
        await store._save_with_token(blob, "fedcba9876543210")
    assert await store.history("trace") == [blob.info()]


# -- no scans of the keyspace -------------------------------------------------------------


def test_the_scripts_call_no_keyspace_wide_command() -> None:
    scripts = [getattr(redis_scripts, name) for name in redis_scripts.__all__]
    assert all("redis.call(" in script for script in scripts)
    assert len(scripts) == 11  # the prelude and ten scripts
    called = {m for s in scripts for m in re.findall(r"redis\.call\(\s*'(\w+)'", s)}
    assert called.isdisjoint({"KEYS", "SCAN", "FLUSHDB", "FLUSHALL", "RANDOMKEY", "DBSIZE"})
    assert "redis.pcall" not in "".join(scripts)


async def test_a_full_round_sends_no_keyspace_wide_command(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    sent: list[str] = []
    execute = client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]
    try:
        store = RedisBlobStore(client, prefix=prefix)
        blobs = [make_blob(step=step) for step in range(5)]
        for blob in blobs:
            await store.save(blob)
        await store.load(blobs[0].checkpoint_id)
        await store.load_latest("trace")
        await store.history("trace", limit=2, before_step=4)
        await store.traces()
        write = PendingWrite("trace", blobs[3].checkpoint_id, "task", 0, b"w")
        await store.save_writes([write])
        await store.load_writes(blobs[3].checkpoint_id)
        await store.ids_with_prefix(str(blobs[0].checkpoint_id)[:8])
        await store.delete(blobs[4].checkpoint_id)
        await store.prune("trace", PruneRule(keep_latest=2, older_than=timedelta(0)))
        await store.delete_trace("trace")
        await store.close()
    finally:
        await client.aclose()
    # EVALSHA for the scripts (SCRIPT LOAD once each, if the server lacked them).
    assert set(sent) <= {"EVALSHA", "SCRIPT LOAD", "HMGET", "HGETALL"}, sent
    assert {"HMGET", "HGETALL"} <= set(sent)


# -- expiry -------------------------------------------------------------------------------


async def wait_for_expiry(admin: redis.asyncio.Redis, key: str) -> None:
    for _ in range(400):
        if not await admin.exists(key):
            return
        await asyncio.sleep(0.025)
    pytest.fail(f"{key} never expired")


async def test_an_idle_trace_expires_whole(admin: redis.asyncio.Redis, prefix: str) -> None:
    async with RedisBlobStore.from_url(
        REDIS_URL, prefix=prefix, trace_ttl=timedelta(milliseconds=300)
    ) as store:
        blobs = [make_blob(step=step) for step in range(3)]
        for blob in blobs:
            await store.save(blob)
        await store.save(make_blob("kept-apart", 0))
        for key in await keys_under(admin, prefix):
            if key != "traces":
                assert 0 < await admin.pttl(prefix + key) <= 300, key
        assert await admin.pttl(prefix + "traces") == -1
        await wait_for_expiry(admin, prefix + "trace:trace")
        await wait_for_expiry(admin, prefix + "trace:kept-apart")
        for blob in blobs:
            assert not await admin.exists(f"{prefix}cp:{blob.checkpoint_id.hex}")
        # The traces index cannot expire by itself: readers drop what has.
        assert await admin.zcard(prefix + "traces") == 2
        assert await store.traces() == []
        assert await admin.exists(prefix + "traces") == 0
        assert await store.load_latest("trace") is None
        assert await store.history("trace") == []
        # An expired step may be written again.
        await store.save(make_blob(step=2))


async def test_a_save_never_shortens_a_trace_life(admin: redis.asyncio.Redis, prefix: str) -> None:
    hour = RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=timedelta(hours=1))
    short = RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=timedelta(seconds=30))
    forever = RedisBlobStore.from_url(REDIS_URL, prefix=prefix)
    async with hour, short, forever:
        trace_key = prefix + "trace:trace"
        await hour.save(make_blob(step=0))
        await short.save(step_one := make_blob(step=1))
        assert await admin.pttl(trace_key) > 30_000
        assert 0 < await admin.pttl(f"{prefix}cp:{step_one.checkpoint_id.hex}") <= 30_000
        # A checkpoint that never expires makes its trace's index permanent...
        await forever.save(step_two := make_blob(step=2))
        assert await admin.pttl(trace_key) == -1
        assert await admin.pttl(f"{prefix}cp:{step_two.checkpoint_id.hex}") == -1
        # ...and a later save with a TTL does not make it mortal again.
        await short.save(make_blob(step=3))
        assert await admin.pttl(trace_key) == -1


GRAPH = 0x5EED


def delta_on(base: CheckpointBlob, step: int, **changes: Any) -> CheckpointBlob:
    """A blob whose header says it is stored as changes to ``base`` (a store reads no data)."""
    return make_blob(
        base.trace_id, step, metadata={"flowpoint.delta_of": str(base.checkpoint_id)}, **changes
    )


async def test_a_delta_keeps_its_chain_of_bases_alive(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    async with RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=60) as store:
        keyframe = make_blob(step=0)
        first = delta_on(keyframe, 1)
        second = delta_on(first, 2)
        await store.save(keyframe)
        await store.save_writes([PendingWrite("trace", keyframe.checkpoint_id, "t", 0, b"w")])
        await store.save(first)
        # Time passes (as if): the keyframe and the first delta have 0.5 s left.
        for blob in (keyframe, first):
            await admin.pexpire(f"{prefix}cp:{blob.checkpoint_id.hex}", 500)
        await admin.pexpire(f"{prefix}w:{keyframe.checkpoint_id.hex}", 500)
        await store.save(second)
        newest = await admin.pttl(f"{prefix}cp:{second.checkpoint_id.hex}")
        for blob in (keyframe, first):
            assert await admin.pttl(f"{prefix}cp:{blob.checkpoint_id.hex}") >= newest - 1000
        assert await admin.pttl(f"{prefix}w:{keyframe.checkpoint_id.hex}") >= newest - 1000
        # A whole checkpoint starts a chain of its own: the old one keeps its timers.
        await admin.pexpire(f"{prefix}cp:{keyframe.checkpoint_id.hex}", 500)
        await store.save(make_blob(step=3))
        assert await admin.pttl(f"{prefix}cp:{keyframe.checkpoint_id.hex}") <= 500


async def test_a_live_trace_of_deltas_keeps_loading_past_its_keyframes_timer(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    ttl = timedelta(milliseconds=700)
    blobs = RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=ttl)
    state = {"text": os.urandom(2000).hex(), "turns": []}  # large and incompressible
    async with TypedCheckpointStore(blobs) as store:
        checkpoint = Checkpoint.first("chat", state)
        await store.save_with_trace("chat", checkpoint, GRAPH)
        keyframe = checkpoint.checkpoint_id
        for turn in range(8):  # a save every ~0.2 s for ~1.6 s, over twice the TTL
            await asyncio.sleep(0.2)
            state = {**state, "turns": [*state["turns"], f"turn {turn}"]}
            checkpoint = checkpoint.child("chat", state)
            info = await store.save_with_trace("chat", checkpoint, GRAPH)
            assert "flowpoint.delta_of" in info.metadata  # a chain on the keyframe
        assert await admin.exists(f"{prefix}cp:{keyframe.hex}")
        # A fresh reader (no frames in memory) reads the whole chain back.
        async with TypedCheckpointStore(RedisBlobStore.from_url(REDIS_URL, prefix=prefix)) as fresh:
            assert await fresh.load_latest("chat", GRAPH) == checkpoint
        # Left alone, the trace expires whole, its keyframe with it.
        await wait_for_expiry(admin, f"{prefix}trace:chat")
        await wait_for_expiry(admin, f"{prefix}cp:{keyframe.hex}")
        assert await keys_under(admin, prefix) == {"traces"}


async def test_writes_expire_with_their_checkpoint(admin: redis.asyncio.Redis, prefix: str) -> None:
    async with RedisBlobStore.from_url(
        REDIS_URL, prefix=prefix, trace_ttl=timedelta(milliseconds=300)
    ) as store:
        blob = make_blob()
        await store.save(blob)
        await admin.pexpire(f"{prefix}cp:{blob.checkpoint_id.hex}", 60_000)  # kept by a chain
        await store.save_writes([PendingWrite("trace", blob.checkpoint_id, "t", 0, b"w")])
        writes_ttl = await admin.pttl(f"{prefix}w:{blob.checkpoint_id.hex}")
        assert writes_ttl > 30_000  # as long as the checkpoint, not just the trace's TTL
        assert await admin.pttl(f"{prefix}writes:trace") > 30_000
        other = make_blob("short")
        await store.save(other)
        await store.save_writes([PendingWrite("short", other.checkpoint_id, "t", 0, b"w")])
        await wait_for_expiry(admin, f"{prefix}cp:{other.checkpoint_id.hex}")
        await wait_for_expiry(admin, f"{prefix}w:{other.checkpoint_id.hex}")
        await wait_for_expiry(admin, f"{prefix}writes:short")


async def test_a_delta_saved_without_a_ttl_makes_its_bases_permanent(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    short = RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=60)
    forever = RedisBlobStore.from_url(REDIS_URL, prefix=prefix)
    async with short, forever:
        keyframe = make_blob(step=0)
        await short.save(keyframe)
        await forever.save(delta_on(keyframe, 1))
        assert await admin.pttl(f"{prefix}cp:{keyframe.checkpoint_id.hex}") == -1


@pytest.mark.parametrize(
    "base_metadata",
    [
        {"flowpoint.delta_of": "not an id"},
        {"flowpoint.delta_of": 7},
        {},
    ],
)
async def test_a_chain_walk_stops_at_what_it_cannot_follow(
    admin: redis.asyncio.Redis, prefix: str, base_metadata: dict[str, Any]
) -> None:
    async with RedisBlobStore.from_url(REDIS_URL, prefix=prefix, trace_ttl=60) as store:
        root = make_blob(step=0)
        middle = make_blob(step=1, metadata=base_metadata)
        await store.save(root)
        await store.save(middle)
        await admin.pexpire(f"{prefix}cp:{root.checkpoint_id.hex}", 500)
        await store.save(delta_on(middle, 2))
        assert await admin.pttl(f"{prefix}cp:{root.checkpoint_id.hex}") <= 500
        # A chain that loops back on itself ends too.
        loop_a, loop_b = make_blob(step=3), make_blob(step=4)
        await store.save(delta_on(loop_b, 3, checkpoint_id=loop_a.checkpoint_id))
        await store.save(delta_on(loop_a, 4, checkpoint_id=loop_b.checkpoint_id))
        await store.save(delta_on(loop_b, 5))


async def test_readers_skip_and_tidy_checkpoints_that_expired(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    # Deleting hashes directly stands in for their expiry, without waiting for it.
    blobs = [make_blob(step=step) for step in range(5)]
    for blob in blobs:
        await store.save(blob)
    for gone in (blobs[4], blobs[1]):
        await admin.delete(f"{prefix}cp:{gone.checkpoint_id.hex}")
    assert await store.load_latest("trace") == blobs[3]
    assert [info.step for info in await store.history("trace", limit=2)] == [3, 2]
    assert [info.step for info in await store.history("trace")] == [3, 2, 0]
    assert await admin.zcard(prefix + "trace:trace") == 3
    assert await store.delete(blobs[4].checkpoint_id) is False
    assert await store.prune("trace", PruneRule(keep_latest=1, older_than=None)) == 2
    assert await store.delete_trace("trace") == 1
    # A trace whose sorted set expired, or whose every checkpoint did, leaves the index
    # on the next listing.
    await store.save(make_blob("other"))
    await admin.delete(prefix + "trace:other")
    only_stale = make_blob("stale")
    await store.save(only_stale)
    await admin.delete(f"{prefix}cp:{only_stale.checkpoint_id.hex}")
    await store.save(make_blob("live"))
    assert await store.traces() == ["live"]
    assert not await admin.exists(prefix + "trace:stale")
    assert await admin.zrange(prefix + "traces", 0, -1) == [b"live"]
    assert await store.delete_trace("live") == 1
    assert not await admin.exists(prefix + "traces")


async def test_a_read_only_store_skips_what_expired_and_tidies_nothing(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    blobs = [make_blob(step=step) for step in range(4)]
    for blob in blobs:
        await store.save(blob)
    stale = make_blob("stale")
    await store.save(stale)
    for gone in (blobs[3], blobs[1], stale):  # their expiry, without waiting for it
        await admin.delete(f"{prefix}cp:{gone.checkpoint_id.hex}")
    keys = sorted([key async for key in admin.scan_iter(match=f"{prefix}*")])
    before = {key: await admin.dump(key) for key in keys}
    async with RedisBlobStore.from_url(REDIS_URL, prefix=prefix, read_only=True) as reader:
        assert await reader.load_latest("trace") == blobs[2]
        assert [info.step for info in await reader.history("trace")] == [2, 0]
        assert await reader.traces() == ["trace"]
        assert await reader.load_latest("stale") is None
    after = sorted([key async for key in admin.scan_iter(match=f"{prefix}*")])
    assert after == keys
    assert {key: await admin.dump(key) for key in keys} == before
    # The same reads by a writable store tidy the indexes.
    assert await store.traces() == ["trace"]
    assert await admin.zrange(prefix + "traces", 0, -1) == [b"trace"]
    assert await admin.zcard(prefix + "trace:trace") == 3  # the top of the trace's, so far


# -- rewrites -----------------------------------------------------------------------------


async def test_a_rewrite_keeps_the_expiry_and_the_index(
    admin: redis.asyncio.Redis, prefix: str
) -> None:
    async with RedisBlobStore.from_url(
        REDIS_URL, prefix=prefix, trace_ttl=timedelta(hours=1)
    ) as store:
        blob = make_blob()
        await store.save(blob)
        keys = await keys_under(admin, prefix)
        assert await store.rewrite(dataclasses.replace(blob, data=b"rewritten"))
        assert 0 < await admin.pttl(f"{prefix}cp:{blob.checkpoint_id.hex}") <= 3_600_000
        assert await keys_under(admin, prefix) == keys
        assert [info.size for info in await store.history("trace")] == [9]


async def test_a_reordered_rewrite_deleted_between_its_rounds_finds_nothing(
    admin: redis.asyncio.Redis, store: RedisBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Metadata in another key order differs byte for byte: the first script run only
    # reports the stored header, and the second expects exactly those bytes. A delete
    # in between must make the rewrite find nothing, not bring the checkpoint back.
    blob = make_blob()
    await store.save(blob)
    run = store._run

    async def run_then_delete(action: str, keys: list[str], args: Any) -> Any:
        reply = await run(action, keys, args)
        if action == "rewrite" and isinstance(reply, list):
            assert await store.delete(blob.checkpoint_id)
        return reply

    monkeypatch.setattr(store, "_run", run_then_delete)
    reordered = dict(reversed(list(blob.metadata.items())))
    assert await store.rewrite(dataclasses.replace(blob, metadata=reordered, data=b"x")) is False
    assert not await admin.exists(f"{prefix}cp:{blob.checkpoint_id.hex}")
    assert await store.traces() == []


# -- damaged data -------------------------------------------------------------------------

LOAD, LATEST, HISTORY = "load", "load_latest", "history"
READS = {LOAD, LATEST, HISTORY}


@pytest.mark.parametrize(
    ("field", "value", "raising"),
    [
        ("step", b"not a number", READS),
        ("step", b"-1", READS),
        ("step", b"", READS),
        ("step", b" 0", READS),
        ("step", b"99999999999999999999", READS),  # beyond 64 bits
        ("step", b"1", {LATEST, HISTORY}),  # listed at step 0
        ("graph_hash", b"\xff", READS),
        ("graph_hash", b"0x0123456789abcdef", READS),
        ("graph_hash", b"123", READS),
        ("created_at", b"yesterday", READS),
        ("created_at", b"2026-13-01T00:00:00.000000Z", READS),
        ("created_at", b"2026-01-01T00:00:00Z", READS),
        ("parent", b"zz", READS),
        ("parent", b"0123456789ABCDEF0123456789ABCDEF", READS),
        ("node", b"plan", READS),
        ("node", b"5", READS),
        ("node", b"\xff", READS),
        ("metadata", b"not json", READS),
        ("metadata", b"[1, 2]", READS),
        ("metadata", b'{"nested": {"a": 1}}', READS),
        ("metadata", b'{"big": 1e999}', READS),
        ("trace", b"\xff\xfe", READS),
        ("trace", b"bad\nid", READS),
        ("trace", b"", READS),
        ("trace", b"other", {LATEST, HISTORY}),  # found by id; listed under another trace
    ]
    + [(field, None, READS) for field in redis_module._HEADER_FIELDS]
    + [("data", None, {LOAD, LATEST})],
)
async def test_a_field_of_the_wrong_kind_is_corrupt(
    admin: redis.asyncio.Redis,
    prefix: str,
    store: RedisBlobStore,
    field: str,
    value: bytes | None,
    raising: set[str],
) -> None:
    blob = make_blob()
    await store.save(blob)
    key = f"{prefix}cp:{blob.checkpoint_id.hex}"
    if value is None:
        await admin.hdel(key, field)
    else:
        await admin.hset(key, field, value)
    calls = {
        LOAD: lambda: store.load(blob.checkpoint_id),
        LATEST: lambda: store.load_latest("trace"),
        HISTORY: lambda: store.history("trace"),
    }
    for name, call in calls.items():
        if name in raising:
            with pytest.raises(CorruptCheckpoint) as caught:
                await call()
            assert caught.value.checkpoint_id == blob.checkpoint_id, name
            assert field in caught.value.reason, name
        else:
            await call()  # the damage is in what this call does not read


async def test_damaged_index_entries_are_corrupt(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    blob = make_blob()
    await store.save(blob)
    # An entry that names no checkpoint is one whose checkpoint expired: skipped, dropped.
    await admin.zadd(prefix + "trace:trace", {b"99999999999999999999:not-an-id": 0})
    assert await store.load_latest("trace") == blob
    assert await admin.zcard(prefix + "trace:trace") == 1
    # One that names a checkpoint but is not "<step>:<id hex>" is damage.
    await admin.zadd(
        prefix + "trace:trace", {b"9999999999999999999x:" + blob.checkpoint_id.hex.encode(): 0}
    )
    with pytest.raises(CorruptCheckpoint, match="trace index"):
        await store.load_latest("trace")
    with pytest.raises(CorruptCheckpoint, match="trace index"):
        await store.history("trace")
    damaged, info = await store.history_entries("trace")
    assert isinstance(damaged, DamagedRecord)
    assert (damaged.checkpoint_id, damaged.trace_id, damaged.step) == (None, "trace", None)
    assert "trace index" in damaged.reason
    assert info == blob.info()
    # A trace id that is not UTF-8, listed with a sorted set of its own.
    await admin.zadd(prefix + "traces", {b"\xff": 0})
    await admin.zadd(prefix + "trace:%FF", {f"{0:020d}:{blob.checkpoint_id.hex}": 0})
    with pytest.raises(CorruptCheckpoint, match="traces index"):
        await store.traces()
    trace, report = await store.trace_entries()
    assert trace == "trace"
    assert isinstance(report, DamagedRecord)
    assert "traces index" in report.reason


async def test_a_damaged_created_at_is_never_pruned_by_age(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    blobs = [make_blob(step=step, created_at=old) for step in range(3)]
    for blob in blobs:
        await store.save(blob)
    await admin.hset(f"{prefix}cp:{blobs[0].checkpoint_id.hex}", "created_at", b"\x00garbage")
    assert await store.prune("trace", PruneRule(keep_latest=None, older_than=timedelta(1))) == 2
    assert await admin.zcard(prefix + "trace:trace") == 1


async def test_the_harness_mangles_a_header_into_corruption(admin: redis.asyncio.Redis) -> None:
    harness = RedisHarness(await connect_admin())
    try:
        store = await harness.open()
        blob = make_blob()
        await store.save(blob)
        assert await harness.read_data(blob.checkpoint_id) == b"payload"
        await harness.write_data(blob.checkpoint_id, b"other")
        assert [info.size for info in await store.history("trace")] == [5]
        await harness.mangle_header(blob.checkpoint_id)
        with pytest.raises(CorruptCheckpoint, match="step"):
            await store.load(blob.checkpoint_id)
        with pytest.raises(KeyError):
            await harness.write_data(new_checkpoint_id(), b"")
    finally:
        await harness.cleanup()
    assert await keys_under(admin, harness.prefix) == set()


# -- failures of the server ---------------------------------------------------------------


async def test_a_server_error_is_a_storage_error(
    admin: redis.asyncio.Redis, prefix: str, store: RedisBlobStore
) -> None:
    # A key of the wrong type under the trace's name: the script fails with WRONGTYPE.
    await admin.set(prefix + "trace:trace", b"not a sorted set")
    for call in (lambda: store.save(make_blob()), lambda: store.load_latest("trace")):
        with pytest.raises(StorageError, match="WRONGTYPE") as caught:
            await call()
        assert isinstance(caught.value.__cause__, redis.exceptions.ResponseError)
    assert not await admin.exists(prefix + "traces")


async def test_an_outage_fails_calls_and_the_same_store_recovers(prefix: str) -> None:
    proxy = OutageProxy("127.0.0.1", 6379)
    try:
        async with RedisBlobStore.from_url(
            f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix
        ) as store:
            for step in range(3):
                await store.save(make_blob(step=step))
            proxy.cut()
            with pytest.raises(StorageError) as caught:
                await store.save(make_blob(step=3))
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
            with pytest.raises(StorageError):
                await store.load_latest("trace")
            proxy.restore()
            after = make_blob(step=3)
            await store.save(after)
            assert await store.load_latest("trace") == after
            assert [info.step for info in await store.history("trace")] == [3, 2, 1, 0]
    finally:
        proxy.close()
