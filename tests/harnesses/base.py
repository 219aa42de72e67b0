"""What the conformance suite needs from each backend besides the store itself.

A harness opens stores over one piece of storage (a directory, a database file,
a key prefix...) and reaches underneath the store to read or damage what it kept.
Each backend has one harness module in this package; the conformance suite never
branches on the backend.
"""

from __future__ import annotations

import abc
import os
from typing import NoReturn

import pytest

from flowpoint import open_store
from flowpoint.ids import CheckpointId
from flowpoint.stores._base import BlobCheckpointStore


class StoreHarness(abc.ABC):
    """One backend's storage for one test, plus ways to tamper with it."""

    name: str

    @abc.abstractmethod
    async def open(self) -> BlobCheckpointStore:
        """A store over this harness's storage; calling it again opens a second
        store over the same storage (as another process would)."""

    @abc.abstractmethod
    async def read_data(self, checkpoint_id: CheckpointId) -> bytes:
        """The ``data`` bytes stored for the checkpoint, read without the store."""

    @abc.abstractmethod
    async def write_data(self, checkpoint_id: CheckpointId, data: bytes) -> None:
        """Replace the stored ``data`` bytes of the checkpoint, without the store."""

    @abc.abstractmethod
    async def mangle_header(self, checkpoint_id: CheckpointId) -> None:
        """Damage the backend's own header record of the checkpoint (a column of the
        wrong kind, a broken file header...), leaving it findable by id and trace."""

    def store_url(self) -> str:
        """The URL another process opens this storage with (``open_store``)."""
        raise NotImplementedError(f"{self.name} storage cannot be opened from another process")

    async def open_read_only(self) -> BlobCheckpointStore:
        """A store over this storage opened read-only, as ``open_store(url, read_only=True)``."""
        return open_store(self.store_url(), read_only=True)

    @abc.abstractmethod
    async def snapshot(self) -> object:
        """Everything the storage holds, read without the store, to compare with ``==``.

        Taken while no store of this harness is open (an open SQLite store keeps
        a WAL file beside the database).
        """

    async def cleanup(self) -> None:  # noqa: B027 - a harness may have nothing to remove
        """Remove everything the harness made."""


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose server is not there; in CI, where every server runs, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (in CI no backend test may skip)")
    pytest.skip(reason)
