"""What only the S3 backend promises; the shared contract is in tests/conformance/."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import obstore
import pytest
from obstore.store import S3Store

from flowpoint import open_store
from flowpoint.blob import DamagedRecord, PendingWrite
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, StorageError
from flowpoint.ids import new_checkpoint_id
from flowpoint.stores import s3 as s3_module
from flowpoint.stores._base import PruneRule
from flowpoint.stores.s3 import S3BlobStore, trace_segment
from tests import servers
from tests.blobs import make_blob
from tests.harnesses.base import unavailable
from tests.harnesses.s3 import S3Harness, join_record, split_record
from tests.proxy import OutageProxy

SERVERS = {"seaweedfs": servers.seaweedfs, "moto": servers.moto}
MAX_STEP = 2**63 - 1


def get_server(name: str) -> servers.S3Server:
    try:
        return SERVERS[name]()
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(params=sorted(SERVERS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[S3Harness]:
    made = S3Harness(f"s3-{request.param}", get_server(request.param))
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def store(harness: S3Harness) -> AsyncIterator[S3BlobStore]:
    async with await harness.open() as opened:
        yield opened


# -- URLs and lifecycle -----------------------------------------------------------------

SECRET = "s3cr3t-do-not-print"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket/some/prefix/",
        "S3://bucket/prefix?region=eu-west-1",
        f"s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true"
        f"&access_key_id=AKIA&secret_access_key={SECRET}&session_token=tok",
        "s3://my.bucket-1/p?allow_http=0",
    ],
)
def test_open_store_takes_s3_urls(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, S3BlobStore)
    assert "bucket" in repr(store)
    assert SECRET not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        f"s3://user:{SECRET}@bucket/prefix",
        "s3://bucket:9000/prefix",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/./b",
        "s3://bucket/p#frag",
        f"s3://bucket/p?secret_access_key={SECRET}&colour=blue",
        f"s3://bucket/p?secret_access_key={SECRET}&secret_access_key=other",
        f"s3://bucket/p?secret_access_key={SECRET}&allow_http=maybe",
        f"s3://bucket/p?secret_access_key={SECRET}&endpoint=localhost:9000",
        f"s3://bucket/p?secret_access_key={SECRET}&&=",
    ],
)
def test_bad_s3_urls_are_value_errors_without_secrets(url: str) -> None:
    with pytest.raises(ValueError, match=r"S3 store URL|prefix") as caught:
        open_store(url)
    assert SECRET not in str(caught.value)


def test_options_reach_obstore_and_win_over_the_url() -> None:
    store = S3BlobStore.from_url(
        "s3://bucket/p?region=eu-west-1&allow_http=true",
        region="eu-central-1",
        client_options={"timeout": "3s"},
        retry_config={"max_retries": 1},
    )
    inner = store._store
    assert isinstance(inner, S3Store)
    assert inner.prefix == "p"
    assert inner.config["region"] == "eu-central-1"
    assert inner.client_options is not None
    assert inner.client_options["timeout"] == "3s"
    assert str(inner.client_options["allow_http"]).lower() == "true"
    assert inner.retry_config is not None
    assert inner.retry_config["max_retries"] == 1


def test_a_bad_obstore_option_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"cannot configure.*no_such_option") as caught:
        S3BlobStore.from_url(
            f"s3://bucket/p?secret_access_key={SECRET}", client_options={"no_such_option": "1"}
        )
    assert SECRET not in str(caught.value)


def test_the_module_imports_without_its_driver() -> None:
    code = (
        "import sys; sys.modules['obstore'] = None\n"
        "import flowpoint.stores.s3 as m\n"
        "try:\n"
        "    m.S3BlobStore.from_url('s3://bucket/p')\n"
        "except ImportError as exc:\n"
        '    assert "flowpoint[s3]" in str(exc), exc\n'
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_environment_variables_fill_in_what_the_url_omits(
    harness: S3Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = harness.server
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", server.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    blob = make_blob()
    async with open_store(f"s3://{server.bucket}/{harness.prefix}") as store:
        await store.save(blob)
    async with await harness.open() as other:
        assert await other.load(blob.checkpoint_id) == blob


async def test_an_application_owned_store_is_left_usable(harness: S3Harness) -> None:
    own = S3Store(harness.server.bucket, prefix=harness.prefix, **harness.server.s3_store_options())
    store = S3BlobStore(own)
    blob = make_blob()
    await store.save(blob)
    await store.close()
    await store.close()  # closing twice is harmless
    # The application's obstore store still works: nothing of it was closed.
    assert [meta["size"] > 0 for meta in await obstore.list(own, "traces/").collect_async()] == [
        True
    ]
    async with S3BlobStore(own) as again:
        assert await again.load(blob.checkpoint_id) == blob


# -- layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trace_id", "segment"),
    [
        ("user-42/session-7", "user-42_2Fsession-7"),
        ("..", "_2E_2E"),
        ("a_b", "a_5Fb"),
        ("~", "_7E"),
        ("é", "_C3_A9"),
        ("CaseSensitive", "CaseSensitive"),
    ],
)
def test_trace_segments_are_escaped_and_reversible(trace_id: str, segment: str) -> None:
    assert trace_segment(trace_id) == segment
    assert s3_module._trace_of_segment(segment) == trace_id


@pytest.mark.parametrize("segment", ["_41", "a_2", "_ZZ", "_FF", "a~b", "_0A", ""])
def test_segments_that_are_not_canonical_name_no_trace(segment: str) -> None:
    assert s3_module._trace_of_segment(segment) is None


def test_long_trace_ids_get_a_hashed_segment() -> None:
    first, second = "🦜" * 256, "🦜" * 255 + "🐦"
    segments = {trace_segment(first), trace_segment(second)}
    assert len(segments) == 2
    for segment in segments:
        assert len(segment) <= 400
        assert s3_module._HASHED.match(segment)
        assert s3_module._trace_of_segment(segment) is None
    assert trace_segment("x" * 256) == "x" * 256  # plain ids up to 256 stay reversible


async def test_keys_sort_newest_first_and_ids_are_indexed(
    harness: S3Harness, store: S3BlobStore
) -> None:
    blobs = [make_blob("a/b", step) for step in (0, 9, 10, 2)]
    for blob in blobs:
        await store.save(blob)
    keys = sorted(await harness.keys())
    records = [key for key in keys if key.startswith("traces/")]
    assert records == [f"traces/a_2Fb/{MAX_STEP - step:020d}.ckpt" for step in (10, 9, 2, 0)]
    for blob in blobs:
        assert await harness.record_key(blob.checkpoint_id) == (
            f"traces/a_2Fb/{MAX_STEP - blob.step:020d}.ckpt"
        )
    assert len([key for key in keys if key.startswith("ids/")]) == 4


async def test_writes_are_one_object_per_call_under_the_trace(
    harness: S3Harness, store: S3BlobStore
) -> None:
    blob = make_blob("a/b", 0)
    await store.save(blob)
    write = PendingWrite("a/b", blob.checkpoint_id, "web", 0, b"w0")
    assert await store.save_writes([write]) == 1
    assert await store.save_writes([write]) == 0  # nothing new: no object
    assert await store.save_writes([write], overwrite=True) == 1
    hex_id = blob.checkpoint_id.hex
    keys = sorted(key for key in await harness.keys() if not key.startswith("traces/"))
    assert keys == [
        f"ids/{hex_id[-2:]}/{hex_id}",
        f"ids/{hex_id[-2:]}/{hex_id}.w",
        f"writes/a_2Fb/{hex_id}/00000000000000000000.wr",
        f"writes/a_2Fb/{hex_id}/00000000000000000001.wr",
    ]
    assert await harness.read_object(keys[1]) == f"writes/a_2Fb/{hex_id}/".encode()
    assert await store.load_writes(blob.checkpoint_id) == [write]
    assert await store.delete_trace("a/b") == 1
    assert await harness.keys() == []


async def test_a_writes_claim_of_another_trace_without_records_is_taken_over(
    harness: S3Harness, store: S3BlobStore
) -> None:
    checkpoint_id = new_checkpoint_id()
    hex_id = checkpoint_id.hex
    await harness.write_object(f"ids/{hex_id[-2:]}/{hex_id}.w", f"writes/a/{hex_id}/".encode())
    write = PendingWrite("b", checkpoint_id, "t", 0, b"x")
    assert await store.save_writes([write]) == 1
    assert await store.load_writes(checkpoint_id) == [write]
    with pytest.raises(ValueError, match="stored under trace 'b'"):
        await store.save_writes([PendingWrite("a", checkpoint_id, "t", 1, b"y")])


@pytest.mark.parametrize("index", [b"", b"writes/x/", b"writes/a/" + b"0" * 32 + b"/", b"\xff"])
async def test_a_damaged_writes_index_is_corrupt(
    harness: S3Harness, store: S3BlobStore, index: bytes
) -> None:
    checkpoint_id = new_checkpoint_id()
    hex_id = checkpoint_id.hex
    await harness.write_object(f"ids/{hex_id[-2:]}/{hex_id}.w", index)
    with pytest.raises(CorruptCheckpoint, match="writes index"):
        await store.load_writes(checkpoint_id)


class Spy:
    """Counts obstore requests, and whether GETs were ranged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any]] = []
        for name in ("get_async", "head_async", "list", "put_async", "delete_async"):
            real = getattr(obstore, name)
            monkeypatch.setattr(obstore, name, self._wrap(name, real))

    def _wrap(self, name: str, real: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs.get("options")))
            return real(*args, **kwargs)

        return spy

    def take(self) -> list[tuple[str, Any]]:
        calls, self.calls = self.calls, []
        return calls


async def test_latest_is_one_listing_and_one_get(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in range(30):
        await store.save(make_blob(step=step))
    spy = Spy(monkeypatch)
    latest = await store.load_latest("trace")
    assert latest is not None
    assert latest.step == 29
    assert spy.take() == [("list", None), ("get_async", None)]


async def test_listings_read_headers_only(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in range(5):
        await store.save(make_blob(step=step, data=b"x" * 100_000))
    spy = Spy(monkeypatch)
    history = await store.history("trace", limit=3, before_step=4)
    assert [info.step for info in history] == [3, 2, 1]
    assert [info.size for info in history] == [100_000] * 3
    calls = spy.take()
    assert calls.count(("list", None)) == 1
    gets = [options for name, options in calls if name == "get_async"]
    assert len(gets) == 3
    assert all(options["range"][1] <= 4096 for options in gets)
    assert await store.traces() == ["trace"]
    assert all(name != "get_async" for name, _ in spy.take())


async def test_a_header_longer_than_the_first_read_is_read_in_two_steps(
    store: S3BlobStore,
) -> None:
    blob = make_blob(metadata={f"key{n}": "v" * 100 for n in range(60)})
    await store.save(blob)
    [info] = await store.history("trace")
    assert info == blob.info()
    assert await store.load_latest("trace") == blob


async def test_history_pages_past_huge_before_steps(store: S3BlobStore) -> None:
    for step in (0, 1, MAX_STEP):
        await store.save(make_blob(step=step))
    assert [i.step for i in await store.history("trace", before_step=2**70)] == [MAX_STEP, 1, 0]
    assert [i.step for i in await store.history("trace", before_step=MAX_STEP)] == [1, 0]


async def test_foreign_objects_are_ignored(harness: S3Harness, store: S3BlobStore) -> None:
    blob = make_blob("t")
    await store.save(blob)
    for key in ("traces/t/notes.txt", "traces/t/sub/0.ckpt", "traces/_41/x", "traces/readme"):
        await harness.write_object(key, b"not ours")
    assert await store.traces() == ["t"]
    assert await store.load_latest("t") == blob
    assert await store.history("t") == [blob.info()]
    assert await store.delete_trace("t") == 1


# -- the one-winner rule ----------------------------------------------------------------


async def test_a_refused_conditional_put_is_a_conflict_and_frees_the_id(
    harness: S3Harness, store: S3BlobStore
) -> None:
    first = make_blob()
    await store.save(first)
    loser = make_blob()
    with pytest.raises(CheckpointConflict) as caught:
        await store.save(loser)
    assert (caught.value.trace_id, caught.value.step) == ("trace", 0)
    assert len([key for key in await harness.keys() if key.startswith("ids/")]) == 1
    assert await store.load(loser.checkpoint_id) is None
    with pytest.raises(CheckpointConflict, match=r"checkpoint id .* exists"):
        await store.save(make_blob("other", 5, checkpoint_id=first.checkpoint_id))


async def test_a_put_retried_after_a_lost_response_is_not_a_conflict(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put = obstore.put_async

    async def put_twice(*args: Any, **kwargs: Any) -> Any:
        # The first PUT succeeds but its answer is "lost"; the client sends it again.
        await real_put(*args, **kwargs)
        return await real_put(*args, **kwargs)

    monkeypatch.setattr(obstore, "put_async", put_twice)
    blob = make_blob()
    await store.save(blob)
    monkeypatch.undo()
    assert await store.load(blob.checkpoint_id) == blob
    with pytest.raises(CheckpointConflict):
        await store.save(blob)  # a second save of the same checkpoint still conflicts


# -- rewrite: a conditional PUT ---------------------------------------------------------


def after_the_read(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch, hook: Callable[[], Awaitable[None]]
) -> list[str]:
    """Run ``hook`` once, right after the rewrite's first read of a record (not of an
    id index); return the ``put_async`` modes of what follows."""
    real_get = store._get_versioned
    real_put = obstore.put_async
    modes: list[str] = []
    fired = False

    async def get_then_hook(key: str) -> Any:
        nonlocal fired
        read = await real_get(key)
        if key.startswith("traces/") and not fired:
            fired = True
            await hook()
        return read

    def spy_put(*args: Any, **kwargs: Any) -> Any:
        modes.append(repr(kwargs.get("mode")))
        return real_put(*args, **kwargs)

    monkeypatch.setattr(store, "_get_versioned", get_then_hook)
    monkeypatch.setattr(obstore, "put_async", spy_put)
    return modes


async def test_a_record_deleted_after_the_read_is_not_brought_back(
    harness: S3Harness, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_blob()
    await store.save(blob)
    key = await harness.record_key(blob.checkpoint_id)

    async def delete_the_record() -> None:  # as a concurrent delete does, first the record
        await obstore.delete_async(harness.raw, key)

    modes = after_the_read(store, monkeypatch, delete_the_record)
    assert await store.rewrite(dataclasses.replace(blob, data=b"rewritten")) is False
    monkeypatch.undo()
    assert len(modes) == 1
    assert "e_tag" in modes[0]  # the PUT was conditional, and the service refused it
    assert key not in await harness.keys()
    assert await store.load(blob.checkpoint_id) is None
    assert await store.history("trace") == []


async def test_a_record_resaved_after_the_read_is_not_clobbered(
    harness: S3Harness, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_blob()
    await store.save(blob)
    successor = make_blob()

    async def delete_and_save_again() -> None:
        async with await harness.open() as other:
            assert await other.delete(blob.checkpoint_id)
            await other.save(successor)

    after_the_read(store, monkeypatch, delete_and_save_again)
    assert await store.rewrite(dataclasses.replace(blob, data=b"rewritten")) is False
    monkeypatch.undo()
    assert await store.load(successor.checkpoint_id) == successor
    assert await store.load(blob.checkpoint_id) is None


async def test_a_rewrite_that_loses_a_race_reads_again_and_wins(
    harness: S3Harness, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_blob()
    await store.save(blob)

    async def rewrite_elsewhere() -> None:
        async with await harness.open() as other:
            assert await other.rewrite(dataclasses.replace(blob, data=b"theirs"))

    modes = after_the_read(store, monkeypatch, rewrite_elsewhere)
    assert await store.rewrite(dataclasses.replace(blob, data=b"ours"))
    monkeypatch.undo()
    # Their PUT, our refused PUT, our PUT after reading again: all conditional.
    assert len(modes) == 3
    assert all("e_tag" in mode for mode in modes)
    assert await store.load(blob.checkpoint_id) == dataclasses.replace(blob, data=b"ours")


async def test_a_record_that_keeps_changing_is_a_conflict(
    harness: S3Harness, store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = make_blob()
    await store.save(blob)

    async def always_refused(key: str, body: bytes, e_tag: str) -> bool:
        return False

    monkeypatch.setattr(store, "_replace", always_refused)
    with pytest.raises(CheckpointConflict, match="changed during each of"):
        await store.rewrite(dataclasses.replace(blob, data=b"never"))
    monkeypatch.undo()
    assert await store.load(blob.checkpoint_id) == blob


async def test_a_rewrite_keeps_the_stored_header_and_save_token(
    harness: S3Harness, store: S3BlobStore
) -> None:
    blob = make_blob(metadata={"b": 1, "a": 2.0})
    await store.save(blob)
    before, _ = split_record(await harness.read_record(blob.checkpoint_id))
    reordered = dataclasses.replace(blob, metadata={"a": 2.0, "b": 1}, data=b"x" * 1000)
    assert await store.rewrite(reordered)
    after, data = split_record(await harness.read_record(blob.checkpoint_id))
    assert data == b"x" * 1000
    assert after == {**before, "data_length": 1000}
    metadata = after["metadata"]
    assert isinstance(metadata, dict)
    assert list(metadata) == ["b", "a"]  # in the stored order
    with pytest.raises(CheckpointConflict):
        await store.save(blob)  # the id stays claimed


async def test_rewriting_a_damaged_record_is_corrupt(
    harness: S3Harness, store: S3BlobStore
) -> None:
    blob = make_blob()
    await store.save(blob)
    await harness.write_record(
        blob.checkpoint_id, _bad_crc(await harness.read_record(blob.checkpoint_id))
    )
    with pytest.raises(CorruptCheckpoint):
        await store.rewrite(blob)


# -- damaged objects --------------------------------------------------------------------


def _header_of_another_step(raw: bytes) -> bytes:
    header, data = split_record(raw)
    header["step"] = 99
    return join_record(header, data)


def _header_of_another_trace(raw: bytes) -> bytes:
    header, data = split_record(raw)
    header["trace_id"] = "other"
    return join_record(header, data)


def _data_cut_short(raw: bytes) -> bytes:
    return raw[:-3]


def _bad_crc(raw: bytes) -> bytes:
    mangled = bytearray(raw)
    mangled[20] ^= 0x01
    return bytes(mangled)


def _unknown_field(raw: bytes) -> bytes:
    header, data = split_record(raw)
    header["extra"] = 1
    return join_record(header, data)


def _missing_field(raw: bytes) -> bytes:
    header, data = split_record(raw)
    del header["writer"]
    return join_record(header, data)


DAMAGE: list[Callable[[bytes], bytes]] = [
    lambda raw: b"",
    lambda raw: b"x",
    lambda raw: raw[:11],
    lambda raw: b"FPS3OB2\n" + raw[8:],
    lambda raw: raw[:8] + b"\xff\xff\xff\xff" + raw[12:],
    lambda raw: raw[:8] + b"\x00\x00\x00\x00" + raw[12:],
    lambda raw: bytes(range(256)) * 40,
    _bad_crc,
    _data_cut_short,
    _header_of_another_step,
    _header_of_another_trace,
    _unknown_field,
    _missing_field,
]


@pytest.mark.parametrize("damage", DAMAGE)
async def test_garbage_in_a_record_is_corrupt(
    harness: S3Harness, store: S3BlobStore, damage: Callable[[bytes], bytes]
) -> None:
    blob = make_blob()
    await store.save(blob)
    await harness.write_record(
        blob.checkpoint_id, damage(await harness.read_record(blob.checkpoint_id))
    )
    with pytest.raises(CorruptCheckpoint) as by_id:
        await store.load(blob.checkpoint_id)
    assert by_id.value.checkpoint_id == blob.checkpoint_id
    with pytest.raises(CorruptCheckpoint):
        await store.load_latest("trace")
    with pytest.raises(CorruptCheckpoint):
        await store.history("trace")
    # A damaged record is still deleted, by id or with its trace.
    assert await store.delete(blob.checkpoint_id) is True
    assert await store.history("trace") == []


@pytest.mark.parametrize("index", [b"", b"../../etc/passwd", b"traces/x/1.ckpt\nabc", b"\xff"])
async def test_a_damaged_id_index_is_corrupt(
    harness: S3Harness, store: S3BlobStore, index: bytes
) -> None:
    blob = make_blob()
    await store.save(blob)
    hex_id = blob.checkpoint_id.hex
    await harness.write_object(f"ids/{hex_id[-2:]}/{hex_id}", index)
    with pytest.raises(CorruptCheckpoint, match="id index"):
        await store.load(blob.checkpoint_id)
    with pytest.raises(CorruptCheckpoint, match="id index"):
        await store.delete(blob.checkpoint_id)
    assert await store.load_latest("trace") == blob  # found by trace all the same


async def test_a_dangling_id_index_reads_as_absent(harness: S3Harness, store: S3BlobStore) -> None:
    blob = make_blob()
    await store.save(blob)
    await obstore.delete_async(harness.raw, await harness.record_key(blob.checkpoint_id))
    assert await store.load(blob.checkpoint_id) is None
    assert await store.delete(blob.checkpoint_id) is False
    # An index naming a step that now holds another checkpoint reads as absent too.
    other = make_blob()
    await store.save(other)
    assert await store.load(blob.checkpoint_id) is None
    assert await store.delete(blob.checkpoint_id) is False
    assert await store.load(other.checkpoint_id) == other


async def test_a_hashed_trace_of_damaged_records_only_is_reported(
    harness: S3Harness, store: S3BlobStore
) -> None:
    long_trace = "ü" * 200  # its segment is hashed: only a header names the trace
    blob = make_blob(long_trace, 0)
    await store.save(blob)
    await store.save(make_blob("fine", 0))
    await harness.mangle_header(blob.checkpoint_id)
    with pytest.raises(CorruptCheckpoint):
        await store.traces()
    fine, report = await store.trace_entries()
    assert fine == "fine"
    assert isinstance(report, DamagedRecord)
    assert (report.checkpoint_id, report.trace_id) == (blob.checkpoint_id, None)


async def test_harness_mangles_a_header_into_corruption(harness: S3Harness) -> None:
    store = await harness.open()
    blob = make_blob()
    await store.save(blob)
    assert await harness.read_data(blob.checkpoint_id) == b"payload"
    await harness.write_data(blob.checkpoint_id, b"other")
    assert [info.size for info in await (await harness.open()).history("trace")] == [5]
    await harness.mangle_header(blob.checkpoint_id)
    with pytest.raises(CorruptCheckpoint, match="graph_hash"):
        await store.load(blob.checkpoint_id)


async def test_delete_trace_and_prune_remove_the_id_indexes(
    harness: S3Harness, store: S3BlobStore
) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    for step in range(6):
        await store.save(make_blob("t", step, created_at=old))
    await store.save(make_blob("u", 0))
    assert await store.prune("t", PruneRule(keep_latest=2, older_than=timedelta(days=1))) == 4
    assert [info.step for info in await store.history("t")] == [5, 4]
    assert await store.delete_trace("t") == 2
    keys = await harness.keys()
    assert len([key for key in keys if key.startswith("ids/")]) == 1
    assert await store.traces() == ["u"]


# -- outages ----------------------------------------------------------------------------

QUICK = {
    "client_options": {"timeout": "5s", "connect_timeout": "1s"},
    "retry_config": {
        "max_retries": 1,
        "retry_timeout": timedelta(seconds=2),
        "backoff": {"init_backoff": timedelta(milliseconds=10)},
    },
}


async def test_an_outage_is_a_storage_error_and_the_store_recovers(harness: S3Harness) -> None:
    from obstore.exceptions import BaseError

    proxy = OutageProxy("127.0.0.1", harness.server.port)
    try:
        url = harness.server.url(harness.prefix, port=proxy.port)
        async with S3BlobStore.from_url(url, **QUICK) as store:
            for step in range(3):
                await store.save(make_blob(step=step))
            proxy.cut()
            with pytest.raises(StorageError) as during_save:
                await store.save(make_blob(step=3))
            assert isinstance(during_save.value.__cause__, BaseError)
            with pytest.raises(StorageError) as during_load:
                await store.load_latest("trace")
            assert isinstance(during_load.value.__cause__, BaseError)
            proxy.restore()
            blob = make_blob(step=4)
            await store.save(blob)
            assert await store.load_latest("trace") == blob
            assert await store.load(blob.checkpoint_id) == blob
    finally:
        proxy.close()
