from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib

from flowpoint.ids import CheckpointId
from flowpoint.stores.file import FileBlobStore
from tests.harnesses.base import StoreHarness

# The record format, spelled out again here so the harness reads files without the store:
# magic, header length (u32 BE), header JSON, CRC32 of the header JSON (u32 BE), data.
MAGIC = b"FPFILE1\n"
WRITES = b"FPWRIT1\n"
PREFIX = struct.Struct(">8sI")
CRC = struct.Struct(">I")


def split_record(raw: bytes, magic: bytes = MAGIC) -> tuple[dict[str, object], bytes]:
    """The header (as a dict) and the data of an intact record file."""
    found, length = PREFIX.unpack_from(raw)
    assert found == magic
    header_json = raw[PREFIX.size : PREFIX.size + length]
    (crc,) = CRC.unpack_from(raw, PREFIX.size + length)
    assert crc == zlib.crc32(header_json)
    header = json.loads(header_json)
    assert isinstance(header, dict)
    return header, raw[PREFIX.size + length + CRC.size :]


def join_record(
    header: dict[str, object], data: bytes, *, header_json: bytes | None = None
) -> bytes:
    """A record file with a correct length and CRC for ``header`` (or raw ``header_json``)."""
    if header_json is None:
        header_json = json.dumps(header, separators=(",", ":")).encode()
    return (
        PREFIX.pack(MAGIC, len(header_json))
        + header_json
        + CRC.pack(zlib.crc32(header_json))
        + data
    )


def tree_snapshot(root: str) -> dict[str, object]:
    """Every entry under ``root``: a directory, a symlink's target, or a file's bytes."""
    found: dict[str, object] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                found[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[relative] = "dir"
            else:
                with open(path, "rb") as file:
                    found[relative] = file.read()
    return found


class FileHarness(StoreHarness):
    name = "file"

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="flowpoint-file-")

    async def open(self) -> FileBlobStore:
        return FileBlobStore(self.root)

    def store_url(self) -> str:
        return f"file://{self.root}"

    def record_path(self, checkpoint_id: CheckpointId) -> str:
        """The record file of a checkpoint, found through its id symlink."""
        hex_id = checkpoint_id.hex
        link = os.path.join(self.root, "ids", hex_id[-2:], hex_id)
        return os.path.join(os.path.dirname(link), os.readlink(link))

    def read_record(self, checkpoint_id: CheckpointId) -> bytes:
        with open(self.record_path(checkpoint_id), "rb") as file:
            return file.read()

    def write_record(self, checkpoint_id: CheckpointId, raw: bytes) -> None:
        with open(self.record_path(checkpoint_id), "wb") as file:
            file.write(raw)

    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        return split_record(self.read_record(checkpoint_id))[1]

    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        # Keep the store's own header consistent, so that only the codec can notice.
        header, _ = split_record(self.read_record(checkpoint_id))
        header["data_length"] = len(data)
        self.write_record(checkpoint_id, join_record(header, data))

    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        # A value of the wrong kind under a valid length and CRC: the store's schema
        # check, not just its checksum, must catch it.
        header, data = split_record(self.read_record(checkpoint_id))
        header["graph_hash"] = f"0x{header['graph_hash']:016x}"
        self.write_record(checkpoint_id, join_record(header, data))

    async def snapshot(self) -> object:
        return tree_snapshot(self.root)

    async def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


async def make() -> FileHarness:
    return FileHarness()
