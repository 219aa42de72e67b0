from __future__ import annotations

import json
import struct
import uuid
import zlib

import obstore
from obstore.store import S3Store

from flowpoint.ids import CheckpointId
from flowpoint.stores.s3 import S3BlobStore
from tests import servers
from tests.harnesses.base import StoreHarness, unavailable

# The record format, spelled out again here so the harness reads objects without the
# store: magic, header length (u32 BE), header JSON, CRC32 of the header JSON (u32 BE), data.
MAGIC = b"FPS3OB1\n"
PREFIX = struct.Struct(">8sI")
CRC = struct.Struct(">I")


def split_record(raw: bytes) -> tuple[dict[str, object], bytes]:
    """The header (as a dict) and the data of an intact record."""
    magic, length = PREFIX.unpack_from(raw)
    assert magic == MAGIC
    header_json = raw[PREFIX.size : PREFIX.size + length]
    (crc,) = CRC.unpack_from(raw, PREFIX.size + length)
    assert crc == zlib.crc32(header_json)
    header = json.loads(header_json)
    assert isinstance(header, dict)
    return header, raw[PREFIX.size + length + CRC.size :]


def join_record(header: dict[str, object], data: bytes) -> bytes:
    """A record with a correct length and CRC for ``header``."""
    header_json = json.dumps(header, separators=(",", ":")).encode()
    return (
        PREFIX.pack(MAGIC, len(header_json))
        + header_json
        + CRC.pack(zlib.crc32(header_json))
        + data
    )


class S3Harness(StoreHarness):
    """A key prefix of its own in the session bucket of one S3 server."""

    def __init__(self, name: str, server: servers.S3Server) -> None:
        self.name = name
        self.server = server
        self.prefix = f"harness-{uuid.uuid4().hex}"
        # The harness's own obstore client, for reading and damaging objects directly.
        self.raw = S3Store(server.bucket, prefix=self.prefix, **server.s3_store_options())

    @property
    def url(self) -> str:
        return self.server.url(self.prefix)

    async def open(self) -> S3BlobStore:
        return S3BlobStore.from_url(self.url)

    def store_url(self) -> str:
        return self.url

    async def record_key(self, checkpoint_id: CheckpointId) -> str:
        """The key of a checkpoint's record, found through its id index."""
        hex_id = checkpoint_id.hex
        index = await obstore.get_async(self.raw, f"ids/{hex_id[-2:]}/{hex_id}")
        return bytes(await index.bytes_async()).decode().split("\n")[0]

    async def read_object(self, key: str) -> bytes:
        return bytes(await (await obstore.get_async(self.raw, key)).bytes_async())

    async def write_object(self, key: str, raw: bytes) -> None:
        await obstore.put_async(self.raw, key, raw)

    async def read_record(self, checkpoint_id: CheckpointId) -> bytes:
        return await self.read_object(await self.record_key(checkpoint_id))

    async def write_record(self, checkpoint_id: CheckpointId, raw: bytes) -> None:
        await self.write_object(await self.record_key(checkpoint_id), raw)

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        return split_record(await self.read_record(checkpoint_id))[1]

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        # Keep the store's own header consistent, so that only the codec can notice.
        header, _ = split_record(await self.read_record(checkpoint_id))
        header["data_length"] = len(data)
        await self.write_record(checkpoint_id, join_record(header, data))

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # A value of the wrong kind under a valid length and CRC: the store's schema
        # check, not just its checksum, must catch it.
        header, data = split_record(await self.read_record(checkpoint_id))
        header["graph_hash"] = f"0x{header['graph_hash']:016x}"
        await self.write_record(checkpoint_id, join_record(header, data))

    async def keys(self) -> list[str]:
        """Every key under the harness's prefix."""
        return [meta["path"] for meta in await obstore.list(self.raw).collect_async()]

    async def snapshot(self) -> object:
        return {key: await self.read_object(key) for key in sorted(await self.keys())}

    async def cleanup(self) -> None:
        keys = await self.keys()
        if keys:
            await obstore.delete_async(self.raw, keys)


async def make_seaweedfs() -> S3Harness:
    try:
        server = servers.seaweedfs()
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))
    return S3Harness("s3-seaweedfs", server)


async def make_moto() -> S3Harness:
    try:
        server = servers.moto()
    except servers.ServerUnavailable as exc:
        unavailable(str(exc))
    return S3Harness("s3-moto", server)
