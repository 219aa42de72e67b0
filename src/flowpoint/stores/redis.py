"""``redis://host:port/db?prefix=...``: checkpoints in Redis, one hash per checkpoint.

Where this backend differs from the
:class:`~flowpoint.stores._base.BlobCheckpointStore` contract:

- **Durability is the server's.** An acknowledged save is in the server's
  memory, and Redis keeps it only as far as its own persistence settings do:
  AOF with ``appendfsync always`` is what makes it survive a power loss;
  ``everysec``, RDB snapshots or no persistence may lose acknowledged saves.
  The store neither checks those settings nor waits for replicas (no ``WAIT``).
- **What it needs from the server**: Redis 6.2 or newer, standalone or a primary
  (not Redis Cluster: the scripts reach keys they compute from stored values).
  No ``KEYS`` and no scan of the keyspace: every call touches its own keys.
- **Concurrency**: every write is one Lua script (:mod:`._redis_scripts`), so a
  save, a ``save_writes`` call, a delete, a prune and a whole-trace delete each
  happen at once or not at all (unless the server fails inside the script); of
  N writers of one ``(trace_id, step)``, or of one pending write's key, in any
  process or host, exactly one wins. A save the driver resends after a lost
  reply is recognised as the same save, not reported as a conflict with itself;
  a save whose caller was cancelled may have happened.
- **Layout** (all keys start with ``prefix``, ``"flowpoint:"`` by default)::

      <prefix>cp:<checkpoint id hex>    hash: trace, step, parent, graph_hash,
                                        created_at, node, metadata, data, save_token
      <prefix>trace:<quoted trace id>   sorted set of "<step:020d>:<checkpoint id hex>"
      <prefix>traces                    sorted set of the trace ids with checkpoints
      <prefix>w:<checkpoint id hex>     hash of a checkpoint's pending writes:
                                        "<index>:<task id>" -> data, and trace
      <prefix>writes:<quoted trace id>  set of the checkpoint ids with writes

  The trace id is percent-quoted with no safe characters but ``A-Za-z0-9_.~-``,
  so no trace id can spell another key, a glob pattern or a cluster hash tag.
  Members of the sorted sets share one score and sort by their bytes: the
  zero-padded step orders exactly over the whole 64-bit range. Latest and a
  page of history cost O(log n) plus the page.
- **Expiry** (``trace_ttl``, off by default): each save makes its checkpoint
  expire ``trace_ttl`` after that save, and pushes the trace's indexes out to at
  least ``trace_ttl`` after its last save. A checkpoint stored as a delta (its
  metadata names its base under ``"flowpoint.delta_of"``) also pushes the bases
  below it, down to the whole checkpoint its chain starts from, out to at least
  as long: a base never expires before a delta on it, so a trace that keeps
  saving keeps loading. A trace nobody saves to for ``trace_ttl`` disappears
  whole; in a trace that keeps running longer, a checkpoint older than
  ``trace_ttl`` on which no live delta builds expires as
  ``prune(older_than=trace_ttl)`` would remove it. Pending writes live as long
  as their checkpoint, and at least ``trace_ttl`` after they were saved. A save
  without ``trace_ttl`` makes its trace's indexes, and the chain below it,
  permanent again. Readers skip (and, unless read-only, tidy away) index entries
  whose checkpoint has expired. A save costs O(log n), plus one step for each
  base of its chain whose expiry it pushes out (a chain is at most the codec's
  ``max_delta_chain`` long).
- **Read-only** (``read_only=True``): reads change nothing, not even the index
  entries of expired checkpoints. Redis cannot tell an empty prefix from one
  that never held a store: such a store reads as empty.
- **Rewrites** (:meth:`~flowpoint.stores._base.RewritableBlobStore.rewrite`) are
  one Lua script: it compares the stored header fields byte for byte with the
  blob's, in the form a save writes them, and sets the ``data`` field only (the
  checkpoint keeps its expiry and its index entries). When the bytes differ the
  store decodes the stored header: a real difference is a conflict, while the
  same header written in another form (metadata keys in another order) is
  rewritten by running the script again against the stored bytes. A rewrite
  racing a delete either lands before it or finds nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit
from uuid import UUID

import msgspec
from typing_extensions import override

from flowpoint.blob import (
    CheckpointBlob,
    CheckpointHeader,
    CheckpointInfo,
    DamagedRecord,
    PendingWrite,
    check_write_key,
    validate_metadata,
)
from flowpoint.errors import CheckpointConflict, CorruptCheckpoint, InvalidTraceId, StorageError
from flowpoint.ids import CheckpointId, TraceId, validate_trace_id
from flowpoint.stores import _redis_scripts as scripts
from flowpoint.stores._base import (
    DamageReportingBlobStore,
    DriverErrors,
    PruneRule,
    RewritableBlobStore,
    check_read_only,
    check_writes_trace,
    different_header,
    hex_prefix,
    missing_driver,
    rewrite_conflict,
)
from flowpoint.stores._columns import listed_entry, metadata_from_json

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisBlobStore", "trace_key_suffix"]

DEFAULT_PREFIX: Final = "flowpoint:"

_SAVED, _STEP_TAKEN, _ID_TAKEN = 0, 1, 2
_OTHER_TRACE = -1
_REWRITTEN, _ABSENT, _OTHER_HEADER = 0, 1, 2
# A rewrite runs its script again only after the stored header's bytes changed under
# it (a delete and a save of the same id in between): a few rounds are plenty.
_REWRITE_ROUNDS: Final = 4

# Header fields in the order scripts read them; loads read "data" after them.
_HEADER_FIELDS: Final = ("trace", "step", "parent", "graph_hash", "created_at", "node", "metadata")
_BLOB_FIELDS: Final = (*_HEADER_FIELDS, "data")

_STEP_WIDTH: Final = 20
_INT64_MAX: Final = 2**63 - 1
_TRACES_PAGE: Final = 1000
_DELTA_OF: Final = "flowpoint.delta_of"
# Traces whose sorted sets one ids_with_prefix script reads: it reads every member.
_IDS_TRACES_PAGE: Final = 100

_MEMBER: Final = re.compile(rb"([0-9]{20}):([0-9a-f]{32})\Z")
_STEP: Final = re.compile(rb"[0-9]{1,20}\Z")
_ID_HEX: Final = re.compile(rb"[0-9a-f]{32}\Z")
_HASH_HEX: Final = re.compile(rb"[0-9a-f]{16}\Z")
_WRITE_FIELD: Final = re.compile(rb"(-?[0-9]{1,19}):(.+)\Z", re.DOTALL)
_CREATED_AT: Final = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z\Z"
)

# URL query options this store takes itself; the rest must be redis-py's own.
_STORE_OPTIONS: Final = frozenset({"prefix", "trace_ttl"})

_decode_node = msgspec.json.Decoder(str | None).decode
_decode_json = msgspec.json.decode

_Values: TypeAlias = list[Any]
_Corrupt: TypeAlias = Callable[[str, str], CorruptCheckpoint]


def trace_key_suffix(trace_id: str) -> str:
    """The trace id as it appears in its key: UTF-8, every byte but ``A-Za-z0-9_.~-`` quoted.

    >>> trace_key_suffix("user-42/session-7")
    'user-42%2Fsession-7'
    """
    return quote(trace_id, safe="")


class RedisBlobStore(RewritableBlobStore, DamageReportingBlobStore):
    """Checkpoints in Redis through a ``redis.asyncio.Redis`` client (see the module docs).

    ``client`` is the application's: the store never closes it. It must return
    bytes (``decode_responses=False``, redis-py's default), and may speak RESP2
    or RESP3. ``prefix`` starts every key the store uses; ``trace_ttl`` makes
    checkpoints expire (at millisecond granularity). :meth:`from_url` makes a
    client of the store's own, which :meth:`close` closes. Use a store from one
    event loop at a time, as its client requires.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        trace_ttl: timedelta | float | None = None,
        read_only: bool = False,
    ) -> None:
        try:
            import redis.asyncio
            import redis.exceptions
        except ImportError as exc:
            raise missing_driver("redis", exc) from exc
        if not isinstance(client, redis.asyncio.Redis):
            raise TypeError(f"client must be a redis.asyncio.Redis, not {type(client).__name__}")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                "RedisBlobStore needs a client that returns bytes: create it with "
                "decode_responses=False (the default)"
            )
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, not {prefix!r}")
        self._read_only = check_read_only(read_only)
        # Reads drop index entries of checkpoints that expired, unless read-only.
        self._tidy = "0" if read_only else "1"
        self._client: Redis = client
        self._owns_client = False
        self._prefix = prefix
        self._ttl_ms = _ttl_ms(trace_ttl)
        self._index_key = f"{prefix}traces"
        self._errors = DriverErrors(failures=(redis.exceptions.RedisError, OSError))
        self._scripts: dict[str, AsyncScript] = {
            action: client.register_script(scripts.PRELUDE + source)
            for action, source in (
                ("save", scripts.SAVE),
                ("save_writes", scripts.SAVE_WRITES),
                ("load_latest", scripts.LATEST),
                ("history", scripts.HISTORY),
                ("traces", scripts.TRACES),
                ("ids_with_prefix", scripts.IDS_WITH_PREFIX),
                ("delete", scripts.DELETE),
                ("delete_trace", scripts.DELETE_TRACE),
                ("prune", scripts.PRUNE),
                ("rewrite", scripts.REWRITE),
            )
        }

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False, **options: Any) -> RedisBlobStore:
        """A store over a client of its own, made from a ``redis://`` or ``rediss://`` URL.

        ``redis://[user:password@]host:port/db?prefix=app:&trace_ttl=86400``:
        ``prefix`` and ``trace_ttl`` (seconds) are the store's; the other query
        options and keyword ``options`` are redis-py's (``socket_timeout=5``...).
        Keyword options win over the URL's. Nothing connects until the first call.
        """
        try:
            import redis.asyncio
        except ImportError as exc:
            raise missing_driver("redis", exc) from exc
        client_url, url_options = _split_url(url)
        store_options = {name: options.pop(name) for name in _STORE_OPTIONS & options.keys()}
        client = redis.asyncio.Redis.from_url(client_url, **options)
        # Nothing is connected yet: if these refuse, there is nothing to close.
        _check_client_options(client)
        store = cls(client, read_only=read_only, **(url_options | store_options))
        store._owns_client = True
        return store

    def __repr__(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
        return f"{type(self).__name__}({where!r}, prefix={self._prefix!r})"

    @override
    async def _close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    @override
    def _driver_errors(self) -> DriverErrors:
        return self._errors

    # -- keys -------------------------------------------------------------------------

    def _cp_key(self, checkpoint_id: CheckpointId) -> str:
        return f"{self._prefix}cp:{checkpoint_id.hex}"

    def _trace_key(self, trace_id: str) -> str:
        return f"{self._prefix}trace:{trace_key_suffix(trace_id)}"

    def _writes_key(self, checkpoint_id: CheckpointId) -> str:
        return f"{self._prefix}w:{checkpoint_id.hex}"

    def _writes_set_key(self, trace_id: str) -> str:
        return f"{self._prefix}writes:{trace_key_suffix(trace_id)}"

    # -- the operations ---------------------------------------------------------------

    @override
    async def _save(self, blob: CheckpointBlob) -> None:
        await self._save_with_token(blob, os.urandom(8).hex())

    async def _save_with_token(self, blob: CheckpointBlob, token: str) -> None:
        """Run the save script; ``token`` marks this save so that a resend is recognised."""
        fields = _fields_of(blob)
        step = f"{blob.step:0{_STEP_WIDTH}d}"
        keys = [
            self._cp_key(blob.checkpoint_id),
            self._trace_key(blob.trace_id),
            self._index_key,
            self._writes_key(blob.checkpoint_id),
            self._writes_set_key(blob.trace_id),
        ]
        args: list[str | bytes | int] = [
            f"[{step}:",
            f"({step};",  # ";" follows ":": every member of this step lies between
            f"{step}:{blob.checkpoint_id.hex}",
            blob.trace_id,
            self._ttl_ms,
            token,
            _base_hex(blob),
            self._prefix,
        ]
        for name, value in fields.items():
            args += [name, value]
        outcome = await self._run("save", keys, args)
        if outcome == _STEP_TAKEN:
            raise CheckpointConflict(blob.trace_id, blob.step)
        if outcome == _ID_TAKEN:
            raise CheckpointConflict(
                blob.trace_id, blob.step, f"checkpoint id {blob.checkpoint_id} exists"
            )
        if outcome != _SAVED:
            raise StorageError(f"Redis save: unexpected reply {outcome!r:.60} from the script")

    @override
    async def _rewrite(self, blob: CheckpointBlob) -> bool:
        fields = _fields_of(blob)
        expected: list[Any] = [fields[name] for name in _HEADER_FIELDS]
        key = self._cp_key(blob.checkpoint_id)
        for _ in range(_REWRITE_ROUNDS):
            reply = await self._run("rewrite", [key], [*_HEADER_FIELDS, *expected, blob.data])
            if reply == _REWRITTEN:
                return True
            if reply == _ABSENT:
                return False
            code, stored = _unpack(reply, 2, "rewrite")
            if code != _OTHER_HEADER or not isinstance(stored, list):
                raise StorageError(f"Redis rewrite: unexpected reply {reply!r:.60} from the script")
            if len(stored) != len(_HEADER_FIELDS):
                raise StorageError(f"Redis rewrite: unexpected reply {stored!r:.60}")
            header = _header_from(blob.checkpoint_id, stored)
            field = different_header(header, blob)
            if field is not None:
                raise rewrite_conflict(blob, field)
            # The same header in other bytes (metadata saved with its keys in another
            # order): expect exactly those bytes, so the check and the write stay one
            # script.
            expected = stored
        raise StorageError(
            f"Redis rewrite: the header of checkpoint {blob.checkpoint_id} kept changing"
        )

    @override
    async def _load(self, checkpoint_id: CheckpointId) -> CheckpointBlob | None:
        client = self._client
        # redis-py leaves execute_command unannotated; HMGET replies a list.
        values = await client.execute_command(  # type: ignore[no-untyped-call]
            "HMGET", self._cp_key(checkpoint_id), *_BLOB_FIELDS
        )
        if not isinstance(values, list) or len(values) != len(_BLOB_FIELDS):
            raise StorageError(f"Redis load: unexpected reply {values!r:.60}")
        if all(value is None for value in values):
            return None
        return _blob_from(checkpoint_id, values)

    @override
    async def _load_latest(self, trace_id: TraceId) -> CheckpointBlob | None:
        keys = [self._trace_key(trace_id), self._index_key]
        args: list[str | bytes | int] = [self._prefix, trace_id, self._tidy, *_BLOB_FIELDS]
        reply = await self._run("load_latest", keys, args)
        if reply is None:
            return None
        member, values = _unpack(reply, 2, "load_latest")
        checkpoint_id, step = _parse_member(member)
        if not isinstance(values, list) or len(values) != len(_BLOB_FIELDS):
            raise StorageError(f"Redis load_latest: unexpected reply {values!r:.60}")
        blob = _blob_from(checkpoint_id, values)
        _check_listed(blob.info(), trace_id, step)
        return blob

    @override
    async def _history_entries(
        self, trace_id: TraceId, limit: int, before_step: int | None
    ) -> list[CheckpointInfo | DamagedRecord]:
        bound = "+" if before_step is None else f"({before_step:0{_STEP_WIDTH}d}"
        keys = [self._trace_key(trace_id), self._index_key]
        args: list[str | bytes | int] = [
            self._prefix,
            trace_id,
            bound,
            limit,
            self._tidy,
            *_HEADER_FIELDS,
        ]
        reply = await self._run("history", keys, args)
        if not isinstance(reply, list):
            raise StorageError(f"Redis history: unexpected reply {reply!r:.60}")
        entries: list[CheckpointInfo | DamagedRecord] = []
        for entry in reply:
            member, values, size = _unpack(entry, 3, "history")
            if not isinstance(values, list) or len(values) != len(_HEADER_FIELDS):
                raise StorageError(f"Redis history: unexpected reply {values!r:.60}")
            if not isinstance(size, int):
                raise StorageError(f"Redis history: unexpected size {size!r:.60}")
            try:
                checkpoint_id, step = _parse_member(member)
            except CorruptCheckpoint as exc:
                entries.append(DamagedRecord(None, trace_id, None, exc.reason))
                continue
            read = partial(_listed_info, checkpoint_id, values, size, trace_id, step)
            entries.append(listed_entry(read, trace_id, step))
        return entries

    @override
    async def _load_steps(
        self, trace_id: TraceId, first_step: int, last_step: int
    ) -> list[CheckpointBlob]:
        if first_step > _INT64_MAX:
            return []  # no step is that high
        # The members of the range, lowest step first (byte order of the padded
        # steps, as a save's check of its step), then every hash in one round trip.
        low = f"[{first_step:0{_STEP_WIDTH}d}:"
        high = f"({min(last_step, _INT64_MAX):0{_STEP_WIDTH}d};"
        client = self._client
        members = await client.execute_command(  # type: ignore[no-untyped-call]
            "ZRANGE", self._trace_key(trace_id), low, high, "BYLEX"
        )
        if not isinstance(members, list):
            raise StorageError(f"Redis load_steps: unexpected reply {members!r:.60}")
        listed = [_parse_member(member) for member in members]
        if not listed:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for checkpoint_id, _ in listed:
                pipe.execute_command("HMGET", self._cp_key(checkpoint_id), *_BLOB_FIELDS)
            replies = await pipe.execute()
        blobs = []
        for (checkpoint_id, step), values in zip(listed, replies, strict=True):
            if not isinstance(values, list) or len(values) != len(_BLOB_FIELDS):
                raise StorageError(f"Redis load_steps: unexpected reply {values!r:.60}")
            if all(value is None for value in values):
                continue  # expired, or deleted since the listing
            blob = _blob_from(checkpoint_id, values)
            _check_listed(blob.info(), trace_id, step)
            blobs.append(blob)
        return blobs

    @override
    async def _trace_entries(self) -> list[TraceId | DamagedRecord]:
        traces: list[TraceId] = []
        damaged: list[DamagedRecord] = []
        after = b"-"
        while True:
            args: list[str | bytes | int] = [self._prefix, after, _TRACES_PAGE, self._tidy]
            reply = await self._run("traces", [self._index_key], args)
            read, live, last = _unpack(reply, 3, "traces")
            if not isinstance(live, list):
                raise StorageError(f"Redis traces: unexpected reply {reply!r:.60}")
            for raw in live:
                try:
                    traces.append(_trace_from_index(raw))
                except CorruptCheckpoint as exc:
                    damaged.append(DamagedRecord(None, None, None, exc.reason))
            if read != _TRACES_PAGE or not isinstance(last, bytes):
                return [*traces, *damaged]
            after = b"(" + last

    @override
    async def _save_writes(self, writes: list[PendingWrite], *, overwrite: bool) -> int:
        first = writes[0]
        keys = [
            self._writes_key(first.checkpoint_id),
            self._writes_set_key(first.trace_id),
            self._cp_key(first.checkpoint_id),
        ]
        args: list[str | bytes | int] = [
            first.trace_id,
            first.checkpoint_id.hex,
            "1" if overwrite else "0",
            self._ttl_ms,
        ]
        for write in writes:
            args += [_write_field(write.task_id, write.index), bytes(write.data)]
        saved = await self._run("save_writes", keys, args)
        if saved == _OTHER_TRACE:
            stored = await self._client.hget(keys[0], "trace")
            check_writes_trace(first, _text(stored))
        return _count(saved, "save_writes")

    @override
    async def _load_writes(self, checkpoint_id: CheckpointId) -> list[PendingWrite]:
        client = self._client
        fields = await client.hgetall(self._writes_key(checkpoint_id))
        if not isinstance(fields, dict):
            raise StorageError(f"Redis load_writes: unexpected reply {fields!r:.60}")
        return _writes_from(checkpoint_id, fields)

    @override
    async def _ids_with_prefix(self, prefix: str, limit: int) -> list[CheckpointId]:
        wanted = hex_prefix(prefix)
        if wanted is None:
            return []
        found: list[CheckpointId] = []
        after = b"-"
        while True:
            args: list[str | bytes | int] = [self._prefix, after, _IDS_TRACES_PAGE, wanted]
            reply = await self._run("ids_with_prefix", [self._index_key], args)
            read, ids, last = _unpack(reply, 3, "ids_with_prefix")
            if not isinstance(ids, list):
                raise StorageError(f"Redis ids_with_prefix: unexpected reply {reply!r:.60}")
            found.extend(_id_from_hex(raw) for raw in ids)
            if read != _IDS_TRACES_PAGE or not isinstance(last, bytes):
                return sorted(found)[:limit]
            after = b"(" + last

    @override
    async def _delete(self, checkpoint_id: CheckpointId) -> bool:
        keys = [self._cp_key(checkpoint_id), self._index_key]
        deleted = await self._run("delete", keys, [self._prefix, checkpoint_id.hex])
        return bool(_count(deleted, "delete"))

    @override
    async def _delete_many(self, checkpoint_ids: list[CheckpointId]) -> int:
        # The delete script once per checkpoint (each atomic), all in one round trip.
        client = self._client
        script = self._scripts["delete"]
        async with client.pipeline(transaction=False) as pipe:
            for checkpoint_id in checkpoint_ids:
                keys = [self._cp_key(checkpoint_id), self._index_key]
                await script(keys=keys, args=[self._prefix, checkpoint_id.hex], client=pipe)
            replies = await pipe.execute()
        return sum(_count(reply, "delete_many") for reply in replies)

    @override
    async def _delete_trace(self, trace_id: TraceId) -> int:
        keys = [self._trace_key(trace_id), self._index_key, self._writes_set_key(trace_id)]
        deleted = await self._run("delete_trace", keys, [self._prefix, trace_id])
        return _count(deleted, "delete_trace")

    @override
    async def _prune(self, trace_id: TraceId, rule: PruneRule) -> int:
        keep = -1 if rule.keep_latest is None else rule.keep_latest
        cutoff = "" if rule.cutoff is None else _format_created_at(rule.cutoff)
        keys = [self._trace_key(trace_id), self._index_key]
        deleted = await self._run("prune", keys, [self._prefix, trace_id, keep, cutoff])
        return _count(deleted, "prune")

    # -- the driver -------------------------------------------------------------------

    async def _run(self, action: str, keys: list[str], args: Sequence[str | bytes | int]) -> Any:
        """Run the script of ``action`` (EVALSHA, loading it first if the server lacks it)."""
        return await self._scripts[action](keys=keys, args=args, client=self._client)


# -- URLs -------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, dict[str, Any]]:
    """Check a store URL; return the URL for redis-py and the store's own options."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise ValueError(f"a Redis store URL starts with redis:// or rediss://, not {url!r}")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"bad port in Redis URL {url!r}: {exc}") from None
    if parts.path not in ("", "/") and not re.fullmatch(r"/[0-9]+", parts.path):
        raise ValueError(f"the path of a Redis URL is a database number (/0), not {url!r}")
    if parts.fragment:
        raise ValueError(f"a Redis URL has no #fragment: {url!r}")
    from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [name for name, _ in query]
    unknown = set(names) - _STORE_OPTIONS - URL_QUERY_ARGUMENT_PARSERS.keys()
    if unknown:
        raise ValueError(f"unknown Redis URL option(s) {sorted(unknown)} in {url!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"a Redis URL option is given twice in {url!r}")
    store_options: dict[str, Any] = {}
    for name, value in query:
        if name == "prefix":
            store_options["prefix"] = value
        elif name == "trace_ttl":
            try:
                store_options["trace_ttl"] = float(value)
            except ValueError:
                raise ValueError(f"trace_ttl must be a number of seconds in {url!r}") from None
    rest = urlencode([(name, value) for name, value in query if name not in _STORE_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), store_options


def _check_client_options(client: Redis) -> None:
    """Refuse a keyword option redis-py would only reject at the first connection."""
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise ValueError(f"bad Redis client option: {exc}") from None


def _ttl_ms(trace_ttl: timedelta | float | None) -> int:
    """The TTL in whole milliseconds (rounded up), 0 for none."""
    if trace_ttl is None:
        return 0
    if isinstance(trace_ttl, timedelta):
        seconds = trace_ttl.total_seconds()
    elif isinstance(trace_ttl, int | float) and not isinstance(trace_ttl, bool):
        seconds = float(trace_ttl)
    else:
        raise ValueError(f"trace_ttl must be a timedelta or seconds, not {trace_ttl!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"trace_ttl must be positive, not {trace_ttl!r}")
    return math.ceil(seconds * 1000)


# -- checkpoints to hash fields ---------------------------------------------------------


def _format_created_at(moment: datetime) -> str:
    """Fixed-width UTC text: it sorts as the moments do, also to a Lua script."""
    d = moment.astimezone(UTC)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}Z"
    )


def _base_hex(blob: CheckpointBlob) -> str:
    """The id (hex) of the checkpoint ``blob`` is a delta on, or ``""``.

    The store decodes no data: a delta names its base in its metadata, under the key
    the README documents (``"flowpoint.delta_of"``), as the canonical text of an id.
    """
    base = blob.metadata.get(_DELTA_OF)
    if not isinstance(base, str):
        return ""
    try:
        return UUID(base).hex
    except ValueError:
        return ""


def _fields_of(blob: CheckpointBlob) -> dict[str, str | bytes]:
    if type(blob.data) is not bytes:
        raise TypeError(f"a blob's data must be bytes, not {type(blob.data).__name__}")
    if blob.current_node is not None and not isinstance(blob.current_node, str):
        raise TypeError(f"current_node must be a str or None, not {blob.current_node!r:.40}")
    return {
        "trace": blob.trace_id,
        "step": str(blob.step),
        "parent": "" if blob.parent_id is None else blob.parent_id.hex,
        "graph_hash": f"{blob.graph_hash:016x}",
        "created_at": _format_created_at(blob.created_at),
        "node": msgspec.json.encode(blob.current_node),
        "metadata": msgspec.json.encode(validate_metadata(blob.metadata)),
        "data": blob.data,
    }


# -- hash fields to checkpoints, trusting nothing ----------------------------------------


def _blob_from(checkpoint_id: CheckpointId, values: _Values) -> CheckpointBlob:
    header = _header_from(checkpoint_id, values)
    data = values[len(_HEADER_FIELDS)]
    if type(data) is not bytes:
        raise CorruptCheckpoint(checkpoint_id, f"field data holds {_kind(data)}, not bytes")
    return header.with_data(data)


def _header_from(checkpoint_id: CheckpointId, values: _Values) -> CheckpointHeader:
    fields = dict(zip(_HEADER_FIELDS, values, strict=False))

    def corrupt(name: str, expected: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(
            checkpoint_id, f"field {name} holds {_kind(fields[name])}, not {expected}"
        )

    def text(name: str) -> str:
        value = fields[name]
        if type(value) is not bytes:
            raise corrupt(name, "UTF-8 text")
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise corrupt(name, "UTF-8 text") from None

    try:
        trace = validate_trace_id(text("trace"))
    except InvalidTraceId as exc:
        raise CorruptCheckpoint(checkpoint_id, f"field trace: {exc}") from exc
    step = _match(fields["step"], _STEP)
    if step is None or int(step[0]) > _INT64_MAX:
        raise corrupt("step", "a step from 0 to 2**63-1")
    parent: CheckpointId | None = None
    if fields["parent"] != b"":
        parent_hex = _match(fields["parent"], _ID_HEX)
        if parent_hex is None:
            raise corrupt("parent", "32 hex digits or empty")
        parent = CheckpointId(UUID(hex=parent_hex[0].decode()))
    graph_hash = _match(fields["graph_hash"], _HASH_HEX)
    if graph_hash is None:
        raise corrupt("graph_hash", "16 hex digits")
    return CheckpointHeader(
        checkpoint_id=checkpoint_id,
        trace_id=trace,
        step=int(step[0]),
        parent_id=parent,
        graph_hash=int(graph_hash[0], 16),
        created_at=_created_at_from(fields["created_at"], corrupt),
        current_node=_node_from(fields["node"], corrupt),
        metadata=metadata_from_json(checkpoint_id, fields["metadata"], "field metadata", bytes),
    )


def _match(value: object, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
    return pattern.match(value) if type(value) is bytes else None


def _created_at_from(value: object, corrupt: _Corrupt) -> datetime:
    parts = _match(value, _CREATED_AT)
    if parts is None:
        raise corrupt("created_at", "a time as YYYY-MM-DDTHH:MM:SS.ffffffZ")
    year, month, day, hour, minute, second, micro = (int(part) for part in parts.groups())
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError:
        raise corrupt("created_at", "a valid date and time") from None


def _node_from(value: object, corrupt: _Corrupt) -> str | None:
    if type(value) is not bytes:
        raise corrupt("node", "a JSON string or null")
    try:
        node: str | None = _decode_node(value)
    except msgspec.DecodeError:
        raise corrupt("node", "a JSON string or null") from None
    return node


def _write_field(task_id: str, index: int) -> bytes:
    """The hash field of a write: its index, a colon, its task id (which may hold colons)."""
    return f"{index}:{task_id}".encode()


def _writes_from(checkpoint_id: CheckpointId, fields: dict[Any, Any]) -> list[PendingWrite]:
    """The writes in a checkpoint's writes hash, trusting nothing."""
    if not fields:
        return []
    trace_field = fields.pop(b"trace", None)
    try:
        trace = validate_trace_id(_text(trace_field))
    except (CorruptCheckpoint, InvalidTraceId) as exc:
        raise CorruptCheckpoint(
            checkpoint_id, f"its writes' field trace holds {_kind(trace_field)}: {exc}"
        ) from None
    writes = []
    for field, data in fields.items():
        parts = _match(field, _WRITE_FIELD)
        try:
            if parts is None:
                raise ValueError("not <index>:<task id>")
            index, task_id = int(parts[1]), parts[2].decode()
            check_write_key(task_id, index)
        except ValueError as exc:  # UnicodeDecodeError too
            raise CorruptCheckpoint(
                checkpoint_id, f"its writes hold the field {_kind(field)}: {exc}"
            ) from None
        if type(data) is not bytes:
            raise StorageError(f"Redis load_writes: unexpected value {data!r:.60}")
        writes.append(PendingWrite(trace, checkpoint_id, task_id, index, data))
    return writes


def _text(value: object) -> str:
    """A stored UTF-8 string, or :class:`CorruptCheckpoint`."""
    if type(value) is not bytes:
        raise CorruptCheckpoint(None, f"{_kind(value)} is not text")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise CorruptCheckpoint(None, f"{_kind(value)} is not UTF-8 text") from None


def _id_from_hex(raw: object) -> CheckpointId:
    if type(raw) is not bytes or not _ID_HEX.match(raw):
        raise StorageError(f"Redis ids_with_prefix: unexpected id {raw!r:.60}")
    return CheckpointId(UUID(hex=raw.decode()))


def _parse_member(member: object) -> tuple[CheckpointId, int]:
    """A trace's sorted set member: the checkpoint id and the step it is listed at."""
    parts = _match(member, _MEMBER)
    if parts is None:
        raise CorruptCheckpoint(None, f"a trace index entry holds {_kind(member)}")
    step, id_hex = parts.groups()
    return CheckpointId(UUID(hex=id_hex.decode())), int(step)


def _listed_info(
    checkpoint_id: CheckpointId, values: _Values, size: int, trace_id: TraceId, step: int
) -> CheckpointInfo:
    """The header of a checkpoint a trace's history found, checked against where it was."""
    info = _header_from(checkpoint_id, values).with_size(size)
    _check_listed(info, trace_id, step)
    return info


def _check_listed(info: CheckpointInfo, trace_id: TraceId, step: int) -> None:
    """A checkpoint found through a trace's index must say it belongs there."""
    if info.trace_id != trace_id:
        raise CorruptCheckpoint(
            info.checkpoint_id,
            f"field trace holds {info.trace_id!r:.60}, listed under {trace_id!r:.60}",
        )
    if info.step != step:
        raise CorruptCheckpoint(
            info.checkpoint_id, f"field step holds {info.step}, listed at step {step}"
        )


def _trace_from_index(raw: object) -> TraceId:
    if type(raw) is not bytes:
        raise CorruptCheckpoint(None, f"the traces index holds {_kind(raw)}")
    try:
        return validate_trace_id(raw.decode())
    except (UnicodeDecodeError, InvalidTraceId) as exc:
        raise CorruptCheckpoint(None, f"the traces index holds {_kind(raw)}: {exc}") from exc


def _unpack(reply: object, length: int, action: str) -> list[Any]:
    if not isinstance(reply, list) or len(reply) != length:
        raise StorageError(f"Redis {action}: unexpected reply {reply!r:.60} from the script")
    return reply


def _count(reply: object, action: str) -> int:
    if type(reply) is not int or reply < 0:
        raise StorageError(f"Redis {action}: unexpected reply {reply!r:.60} from the script")
    return reply


def _kind(value: object) -> str:
    if value is None:
        return "nothing (the field is missing)"
    if isinstance(value, bytes):
        return f"{value!r:.40}"
    return f"{type(value).__name__} {value!r:.40}"
