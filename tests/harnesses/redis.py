from __future__ import annotations

import os
from urllib.parse import urlencode

import redis.asyncio
import redis.exceptions

from flowpoint.ids import CheckpointId
from flowpoint.stores.redis import RedisBlobStore
from tests.harnesses.base import StoreHarness, unavailable

REDIS_URL = "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    """A key prefix of one test's own: hex only, so it is also a safe SCAN pattern."""
    return f"fptest:{os.urandom(8).hex()}:"


async def connect_admin() -> redis.asyncio.Redis:
    """A client of the test's own, to reach under the store; skips if Redis is not there."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        await client.aclose()
        unavailable(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return client


async def delete_prefix(client: redis.asyncio.Redis, prefix: str) -> None:
    """Remove every key under ``prefix`` (SCAN is fine in a test; the store never scans)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


class RedisHarness(StoreHarness):
    name = "redis"

    def __init__(self, admin: redis.asyncio.Redis, prefix: str | None = None) -> None:
        self.admin = admin
        self.prefix = prefix or new_prefix()
        self._stores: list[RedisBlobStore] = []

    async def open(self) -> RedisBlobStore:
        store = RedisBlobStore.from_url(REDIS_URL, prefix=self.prefix)
        self._stores.append(store)
        return store

    def store_url(self) -> str:
        return f"{REDIS_URL}?{urlencode({'prefix': self.prefix})}"

    def key(self, checkpoint_id: CheckpointId) -> str:
        return f"{self.prefix}cp:{checkpoint_id.hex}"

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        data = await self.admin.hget(self.key(checkpoint_id), "data")
        if data is None:
            raise KeyError(checkpoint_id)
        assert isinstance(data, bytes)
        return data

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        await self.set_field(checkpoint_id, "data", data)

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # Hash fields are bytes: text where a number belongs is the damage Redis allows.
        await self.set_field(checkpoint_id, "step", b"not a number")

    async def set_field(self, checkpoint_id: CheckpointId, field: str, value: bytes) -> None:
        key = self.key(checkpoint_id)
        if not await self.admin.exists(key):
            raise KeyError(checkpoint_id)
        await self.admin.hset(key, field, value)

    async def snapshot(self) -> object:
        keys = sorted([key async for key in self.admin.scan_iter(match=f"{self.prefix}*")])
        return {key: (await self.admin.dump(key), await self.admin.pttl(key) > 0) for key in keys}

    async def cleanup(self) -> None:
        try:
            for store in self._stores:
                await store.close()
            await delete_prefix(self.admin, self.prefix)
        finally:
            await self.admin.aclose()


async def make() -> RedisHarness:
    return RedisHarness(await connect_admin())
