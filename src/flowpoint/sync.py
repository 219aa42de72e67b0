"""A blocking facade over :class:`~flowpoint.TypedCheckpointStore`, for sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from flowpoint.blob import CheckpointInfo
from flowpoint.checkpoint import Checkpoint, S, State, TaskWrite
from flowpoint.ids import CheckpointId, TraceId
from flowpoint.stores._base import BlockingBlobStore, run_in_caller_thread
from flowpoint.stores._registry import DEFAULT_STORE_URL
from flowpoint.typed import RekeyResult, TypedCheckpointStore

__all__ = ["SyncCheckpointStore"]

_T = TypeVar("_T")


class _LoopThread:
    """An event loop of its own, running in a daemon thread.

    Calls from any thread, including one whose own event loop is running, are
    carried out on this loop and waited for.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="flowpoint-sync", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a SyncCheckpointStore cannot be called from its own loop")
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("this SyncCheckpointStore is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if threading.current_thread() is self._thread:
            # Called on the loop itself (an object collected there): it can stop,
            # not wait for itself; the daemon thread then ends.
            self._loop.stop()
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _CallerThread:
    """Runs a blocking store's coroutines in the calling thread, with no event loop."""

    def __init__(self) -> None:
        self.closed = False

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self.closed:
            coroutine.close()
            raise RuntimeError("this SyncCheckpointStore is closed")
        return run_in_caller_thread(coroutine)

    def stop(self) -> None:
        self.closed = True


class SyncCheckpointStore(Generic[S]):
    """The same methods as :class:`~flowpoint.TypedCheckpointStore`, blocking.

    ::

        with SyncCheckpointStore.open("sqlite:///runs.db", ResearchState) as store:
            store.save_with_trace("trace-1", checkpoint, graph_hash)

    These methods work from any thread, also while an event loop runs elsewhere in
    the process or in the calling thread. Over a store of blocking calls (memory,
    file, SQLite) the work runs right in the calling thread; over a store with an
    async driver it runs on a private event loop in a background thread. Closing
    closes the wrapped store.
    """

    def __init__(self, store: TypedCheckpointStore[S]) -> None:
        if not isinstance(store, TypedCheckpointStore):
            raise TypeError(f"store must be a TypedCheckpointStore, not {type(store).__name__}")
        self.store = store
        self._runner: _CallerThread | _LoopThread = (
            _CallerThread() if isinstance(store.store, BlockingBlobStore) else _LoopThread()
        )

    @overload
    @classmethod
    def open(
        cls, url: str = ..., state_type: type[S] = ..., **codec_options: Any
    ) -> SyncCheckpointStore[S]: ...
    @overload
    @classmethod
    def open(cls, url: str, state_type: Any, **codec_options: Any) -> SyncCheckpointStore[Any]: ...
    @classmethod
    def open(
        cls, url: str = DEFAULT_STORE_URL, state_type: Any = State, **codec_options: Any
    ) -> SyncCheckpointStore[Any]:
        """Open ``url`` for states of ``state_type``, as ``TypedCheckpointStore.open`` does."""
        return SyncCheckpointStore(TypedCheckpointStore.open(url, state_type, **codec_options))

    def save_with_trace(
        self, trace_id: TraceId | str, checkpoint: Checkpoint[S], graph_hash: int
    ) -> CheckpointInfo:
        """See :meth:`TypedCheckpointStore.save_with_trace`."""
        return self._runner.run(self.store.save_with_trace(trace_id, checkpoint, graph_hash))

    def load(
        self, checkpoint_id: CheckpointId | str, expected_hash: int | None
    ) -> Checkpoint[S] | None:
        """See :meth:`TypedCheckpointStore.load`."""
        return self._runner.run(self.store.load(checkpoint_id, expected_hash))

    def load_latest(
        self, trace_id: TraceId | str, expected_hash: int | None
    ) -> Checkpoint[S] | None:
        """See :meth:`TypedCheckpointStore.load_latest`."""
        return self._runner.run(self.store.load_latest(trace_id, expected_hash))

    def history(
        self, trace_id: TraceId | str, limit: int = 50, before_step: int | None = None
    ) -> list[CheckpointInfo]:
        """See :meth:`TypedCheckpointStore.history`."""
        return self._runner.run(self.store.history(trace_id, limit, before_step))

    def traces(self) -> list[TraceId]:
        """See :meth:`TypedCheckpointStore.traces`."""
        return self._runner.run(self.store.traces())

    def save_writes(
        self,
        trace_id: TraceId | str,
        checkpoint_id: CheckpointId | str,
        writes: Iterable[TaskWrite],
        *,
        overwrite: bool = False,
    ) -> int:
        """See :meth:`TypedCheckpointStore.save_writes`."""
        return self._runner.run(
            self.store.save_writes(trace_id, checkpoint_id, writes, overwrite=overwrite)
        )

    def load_writes(self, checkpoint_id: CheckpointId | str) -> list[TaskWrite]:
        """See :meth:`TypedCheckpointStore.load_writes`."""
        return self._runner.run(self.store.load_writes(checkpoint_id))

    def load_writes_many(
        self, checkpoint_ids: Iterable[CheckpointId | str]
    ) -> dict[CheckpointId, list[TaskWrite]]:
        """See :meth:`TypedCheckpointStore.load_writes_many`."""
        return self._runner.run(self.store.load_writes_many(checkpoint_ids))

    def delete(self, checkpoint_id: CheckpointId | str) -> bool:
        """See :meth:`TypedCheckpointStore.delete`."""
        return self._runner.run(self.store.delete(checkpoint_id))

    def delete_checkpoints(
        self, trace_id: TraceId | str, checkpoint_ids: Iterable[CheckpointId | str]
    ) -> int:
        """See :meth:`TypedCheckpointStore.delete_checkpoints`."""
        return self._runner.run(self.store.delete_checkpoints(trace_id, checkpoint_ids))

    def delete_trace(self, trace_id: TraceId | str) -> int:
        """See :meth:`TypedCheckpointStore.delete_trace`."""
        return self._runner.run(self.store.delete_trace(trace_id))

    def prune(
        self,
        trace_id: TraceId | str,
        *,
        keep_latest: int | None = None,
        older_than: timedelta | None = None,
    ) -> int:
        """See :meth:`TypedCheckpointStore.prune`."""
        return self._runner.run(
            self.store.prune(trace_id, keep_latest=keep_latest, older_than=older_than)
        )

    def rekey(self, trace_id: TraceId | str | None = None) -> RekeyResult:
        """See :meth:`TypedCheckpointStore.rekey`."""
        return self._runner.run(self.store.rekey(trace_id))

    def close(self) -> None:
        """Close the wrapped store and stop the private loop. Closing twice is harmless."""
        if self._runner.closed:
            return
        try:
            self._runner.run(self.store.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
