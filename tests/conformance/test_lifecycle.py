"""Closing a store: afterwards every call is refused with one error, on every backend."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowpoint import BlobCheckpointStore, PruneRule, StorageError
from flowpoint.blob import PendingWrite
from flowpoint.ids import TraceId
from flowpoint.stores._base import RewritableBlobStore
from flowpoint.stores._fenced import Fence, FencedBlobStore
from tests.blobs import make_blob
from tests.harnesses.base import StoreHarness


def every_call(store: BlobCheckpointStore) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each public method of the store (a rewritable store's ``rewrite`` too)."""
    blob = make_blob()
    write = PendingWrite("trace", blob.checkpoint_id, "task", 0, b"w")

    async def walk_history() -> Any:
        return [info async for info in store.iter_history("trace")]

    async def walk_history_entries() -> Any:
        return [entry async for entry in store.iter_history_entries("trace")]

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "save": lambda: store.save(make_blob(step=1)),
        "load": lambda: store.load(blob.checkpoint_id),
        "load_latest": lambda: store.load_latest("trace"),
        "history": lambda: store.history("trace"),
        "history_entries": lambda: store.history_entries("trace"),
        "iter_history": walk_history,
        "iter_history_entries": walk_history_entries,
        "traces": store.traces,
        "trace_entries": store.trace_entries,
        "ids_with_prefix": lambda: store.ids_with_prefix("01"),
        "load_steps": lambda: store.load_steps("trace", 0, 5),
        "writes_if_latest": lambda: store.writes_if_latest(blob),
        "save_writes": lambda: store.save_writes([write]),
        "load_writes": lambda: store.load_writes(blob.checkpoint_id),
        "load_writes_many": lambda: store.load_writes_many([blob.checkpoint_id]),
        "delete": lambda: store.delete(blob.checkpoint_id),
        "delete_many": lambda: store.delete_many([blob.checkpoint_id]),
        "delete_trace": lambda: store.delete_trace("trace"),
        "prune": lambda: store.prune("trace", PruneRule(keep_latest=0, older_than=None)),
    }
    if isinstance(store, RewritableBlobStore):
        calls["rewrite"] = lambda: store.rewrite(blob)
    if isinstance(store, FencedBlobStore):
        fence = Fence(TraceId("trace"), 1)
        calls["save_fenced"] = lambda: store.save_fenced(make_blob(step=1), fence)
        calls["save_writes_fenced"] = lambda: store.save_writes_fenced([write], fence)
    return calls


def public_methods(store: BlobCheckpointStore) -> set[str]:
    """The store's public methods but ``close`` (constructors such as ``from_url`` left out)."""
    return {
        name
        for name in dir(store)
        if not name.startswith("_")
        and callable(getattr(store, name))
        and not isinstance(inspect.getattr_static(type(store), name), classmethod)
        and name != "close"
    }


async def test_a_closed_store_refuses_every_call(harness: StoreHarness) -> None:
    store = await harness.open()
    saved = make_blob()
    await store.save(saved)
    await store.close()
    calls = every_call(store)
    # Every public method is exercised here; a backend's own (PostgreSQL's setup)
    # is in its own tests.
    assert public_methods(store) - set(calls) <= {"setup"}
    for name, call in calls.items():
        with pytest.raises(StorageError, match="is closed") as caught:
            await call()
        assert caught.value.__cause__ is None, name
    await store.close()  # closing twice is harmless
    async with await harness.open() as reopened:  # nothing was changed by the refused calls
        assert await reopened.history("trace") == [saved.info()]
        assert await reopened.load_writes(saved.checkpoint_id) == []


async def test_the_arguments_of_a_closed_store_are_not_even_read(harness: StoreHarness) -> None:
    store = await harness.open()
    await store.close()
    with pytest.raises(StorageError, match="is closed"):
        await store.load("not an id")
    with pytest.raises(StorageError, match="is closed"):
        await store.history("bad\ttrace", limit=-1)
