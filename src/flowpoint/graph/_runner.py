"""Running a graph durably: checkpoint as it goes, pause, resume, fork."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import AsyncGenerator, Awaitable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal

import msgspec

from flowpoint._types import origin
from flowpoint.checkpoint import Checkpoint, S, TaskWrite
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.codec._base import WriteCodec
from flowpoint.errors import (
    CheckpointStoreError,
    CorruptCheckpoint,
    GraphDefinitionError,
    GraphMismatch,
    InvalidRoute,
    InvalidUpdate,
    NoPendingInterrupt,
    RecursionLimitReached,
    StorageError,
    TraceNotFound,
)
from flowpoint.graph._builder import END, BuiltGraph, ConditionalEdge, Graph, Send
from flowpoint.graph._command import (
    check,
    map_update,
    returned,
    updates_and_gotos,
    with_gotos,
    writes,
)
from flowpoint.graph._context import NodeContext, input_type, node_context
from flowpoint.graph._cursor import Cursor, Task, summary
from flowpoint.graph._events import (
    CheckpointSaved,
    Interrupted,
    NodeFinished,
    NodeStarted,
    RunEvent,
    RunFinished,
    emit,
    silenced,
    stream_events,
    streaming,
)
from flowpoint.graph._interrupt import Paused, Waiting, answered, pausing, run_answering, waiting
from flowpoint.graph._interrupt import read as read_interrupts
from flowpoint.graph._migrate import Migrator
from flowpoint.graph._policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph._retry import retrying
from flowpoint.graph._state import from_plain, to_plain
from flowpoint.graph._subgraph import Subgraphs, child_stamp
from flowpoint.graph._superstep import GroupCommit, Outcome, call, execute
from flowpoint.graph._sync import BlockingLoop
from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id, validate_trace_id
from flowpoint.stores._base import BlobCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__all__ = ["ERROR_CHANNEL", "ERROR_INDEX", "OUTPUT_INDEX", "UPDATE_CHANNEL", "RunResult", "Runner"]

_UPDATE_NOTE_LIMIT = 2048
_ERROR_MESSAGE_LIMIT = 4096

OUTPUT_INDEX = 0
"""The index of a task's update among its pending writes (channel :data:`UPDATE_CHANNEL`)."""
ERROR_INDEX = -1
"""The reserved index of the error a task raised (channel :data:`ERROR_CHANNEL`); -2 to -4
are kept for what LangGraph reserves them for (scheduled sends, interrupts, resume values)."""
UPDATE_CHANNEL = "update"
"""The channel of a task's update: a dict of fields, as plain data."""
ERROR_CHANNEL = "__error__"
"""The channel of what a task raised: ``{"type": "module.Qualname", "message": "..."}``."""


@dataclass(frozen=True, slots=True)
class RunResult(Generic[S]):
    """Where a call to :meth:`Runner.run` or :meth:`Runner.resume` left the trace.

    ``status`` is ``"done"`` when the run reached ``END`` and ``"interrupted"`` when
    it paused; ``next_node`` is where :meth:`Runner.resume` will continue (the
    checkpoint's ``current_node``: the node, or a summary such as ``"docs, web"``
    when the next superstep runs several tasks) and ``next_nodes`` the nodes of
    those tasks, each once. ``nodes_run`` counts the tasks this call ran.
    ``durable`` is false only when the last save failed under
    ``on_save_error="warn"``. ``interrupt`` is the payload of the
    :func:`~flowpoint.interrupt` call the run is paused at, as plain data
    (``None`` otherwise): ``resume(trace, value=...)`` answers it.
    """

    trace_id: TraceId
    status: Literal["done", "interrupted"]
    state: S
    checkpoint: Checkpoint[S]
    next_node: str | None
    nodes_run: int
    durable: bool
    next_nodes: tuple[str, ...] = ()
    interrupt: Any = None


class _Unset:
    """The type of :data:`_UNSET`: no ``value=`` given (``None`` is an answer)."""


_UNSET: Any = _Unset()


class Runner(Generic[S]):
    """Runs a graph's traces in supersteps, saving a checkpoint as the trigger policy says.

    A superstep runs every task that is ready, concurrently (async nodes on the
    event loop, sync nodes in worker threads), then applies their updates to the
    state in canonical order (by node name, then ``Send`` index; never in the
    order they finished) and follows the edges of the nodes that ran. A graph
    without parallel branches runs one node per superstep.

    ``store`` is a :class:`~flowpoint.TypedCheckpointStore` for the graph's state
    type, or a blob store (a :class:`~flowpoint.SerdeCheckpointCodec` of the graph's
    state type is added). Each save completes before the next superstep starts.

    A node runs at least once: a node that was running when the process died runs
    again on resume, so make its side effects idempotent, keyed on the
    :attr:`NodeContext.idempotency_key <flowpoint.NodeContext.idempotency_key>` it
    gets by declaring a second parameter. Nodes that finished and were checkpointed
    never run again, nor do the tasks of a superstep whose outputs were saved as
    pending writes (with a codec that stores them, a
    :class:`~flowpoint.codec._base.WriteCodec` such as the stock one). One runner
    at a time should drive a trace.

    ``on_save_error="raise"`` (the default) fails the run when the store fails;
    ``"warn"`` warns and keeps going without that checkpoint. Conflicts (another
    runner on the same trace) and states that cannot be encoded always raise.
    """

    def __init__(
        self,
        graph: BuiltGraph[S] | Graph[S],
        store: TypedCheckpointStore[S] | BlobCheckpointStore,
        *,
        trigger: TriggerPolicy = TriggerPolicy.EVERY_NODE,
        retention: RetentionPolicy | None = None,
        on_save_error: Literal["raise", "warn"] = "raise",
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
        recursion_limit: int = 100,
    ) -> None:
        self.graph: BuiltGraph[S] = graph.build() if isinstance(graph, Graph) else graph
        if isinstance(store, BlobCheckpointStore):
            codec: SerdeCheckpointCodec[S] = SerdeCheckpointCodec(self.graph.state_type)
            store = TypedCheckpointStore(store, codec)
        if not isinstance(store, TypedCheckpointStore):
            raise TypeError(f"store must be a checkpoint store, not {type(store).__name__}")
        if not isinstance(trigger, TriggerPolicy):
            raise TypeError(f"trigger must be a TriggerPolicy, not {trigger!r}")
        if on_save_error not in ("raise", "warn"):
            raise ValueError(f"on_save_error must be 'raise' or 'warn', not {on_save_error!r}")
        if isinstance(recursion_limit, bool) or not isinstance(recursion_limit, int):
            raise TypeError(f"recursion_limit must be an int, not {recursion_limit!r}")
        if recursion_limit < 1:
            raise ValueError(f"recursion_limit must be at least 1, not {recursion_limit}")
        codec_type = getattr(store.codec, "state_type", self.graph.state_type)
        if origin(codec_type) != origin(self.graph.state_type):
            raise TypeError(
                f"the store's codec stores {codec_type!r}, but graph {self.graph.name!r} "
                f"runs on {self.graph.state_type!r}"
            )
        self.store: TypedCheckpointStore[S] = store
        self.trigger = trigger
        self.retention = retention or RetentionPolicy.keep_all()
        self.on_save_error = on_save_error
        self.interrupt_before = self._known_nodes(interrupt_before, "interrupt_before")
        self.interrupt_after = self._known_nodes(interrupt_after, "interrupt_after")
        self.recursion_limit = recursion_limit
        self._graph_hash = self.graph.hash_u64()
        self._state = self.graph.state
        self._inputs: dict[str, tuple[Any]] = {}
        # Pending writes need a codec that can store them; without, a resume reruns
        # every task of the superstep that was running.
        self._writes = isinstance(store.codec, WriteCodec)
        # Moves a trace of an older graph onto this one on resume (graph/_migrate.py).
        self._migrator = Migrator(store, self.graph)
        self._subgraphs = Subgraphs(self)
        # run_sync and friends: one loop for all of them (graph/_sync.py).
        self._blocking = BlockingLoop()

    async def run(self, trace_id: TraceId | str, state: S) -> RunResult[S]:
        """Start a new trace with ``state`` at the graph's first node.

        Raises :class:`~flowpoint.errors.CheckpointConflict` if the trace exists, and
        :class:`~flowpoint.errors.InvalidUpdate` (a ``TypeError``) if ``state`` does
        not fit the graph's state type, naming the field; nothing is saved then.
        """
        trace = validate_trace_id(trace_id)
        self._state.check(state, f"the initial state of trace {trace!r}")
        metadata = {"source": "input"}
        if self.graph.start in self.interrupt_before:
            metadata["interrupt"] = "before"
        first = Checkpoint.first(self.graph.start, state, metadata=metadata)
        await self._save(trace, first, required=True)
        return await self._drive(trace, first, approved=False, restore=False)

    def stream(self, trace_id: TraceId | str, state: S) -> AsyncGenerator[RunEvent, None]:
        """:meth:`run`, yielding its events as they happen; the last is a ``RunFinished``.

        ``async for event in runner.stream(trace, state)`` gets ``CheckpointSaved``,
        ``NodeStarted``, ``NodeFinished``, ``Interrupted`` (right before the end,
        when the run pauses) and ``RunFinished`` (holding the ``RunResult``). The
        run is :meth:`run`'s; after each event it waits until the consumer asks
        for the next. An error of the run is raised from the loop. Leaving the loop early
        cancels the run once the iterator is closed (at once with
        ``contextlib.aclosing``, else when it is collected): the checkpoints saved
        stand, and the next :meth:`resume` goes on from the last one.
        """
        return stream_events(lambda: self.run(trace_id, state), self._finished)

    def stream_resume(
        self, trace_id: TraceId | str, update: Any = None, *, value: Any = _UNSET
    ) -> AsyncGenerator[RunEvent, None]:
        """:meth:`resume`, yielding its events as :meth:`stream` does."""
        return stream_events(lambda: self.resume(trace_id, update, value=value), self._finished)

    def run_sync(self, trace_id: TraceId | str, state: S) -> RunResult[S]:
        """:meth:`run`, blocking: for scripts and notebooks (a running event loop is fine)."""
        return self._blocking.run(self.run(trace_id, state))

    def resume_sync(
        self, trace_id: TraceId | str, update: Any = None, *, value: Any = _UNSET
    ) -> RunResult[S]:
        """:meth:`resume`, blocking, as :meth:`run_sync`."""
        return self._blocking.run(self.resume(trace_id, update, value=value))

    def stream_sync(self, trace_id: TraceId | str, state: S) -> Generator[RunEvent, None, None]:
        """:meth:`stream` as a plain iterator; leaving the loop early cancels the run."""
        return self._blocking.iterate(self.stream(trace_id, state))

    async def resume(
        self, trace_id: TraceId | str, update: Any = None, *, value: Any = _UNSET
    ) -> RunResult[S]:
        """Continue a trace from its latest checkpoint, without rerunning finished nodes.

        ``update`` (a dict of fields, or a whole state) is applied first, and saved
        as a checkpoint whose metadata records it: this is how a human's change
        enters a paused run. ``value`` answers the :func:`~flowpoint.interrupt`
        the run is paused at: it is saved with that checkpoint (metadata
        ``source="resume"``), then the node runs again and the call returns it. A
        trace paused at an ``interrupt()`` and resumed with neither stays paused
        (the same result, nothing run). A trace written by an older version of the
        graph is first moved onto this one by the graph's migrations
        (``Graph.migration``), saved as a new step. Raises
        :class:`~flowpoint.errors.GraphMismatch` if the trace was written by
        another graph and no chain of migrations leads from it,
        :class:`~flowpoint.errors.MigrationFailed` if a migration fails,
        :class:`~flowpoint.errors.TraceNotFound` if it has no checkpoint,
        :class:`~flowpoint.errors.NoPendingInterrupt` for a ``value`` when no
        ``interrupt()`` waits, and :class:`~flowpoint.errors.InvalidInterrupt` for
        a ``value`` that cannot be stored.
        """
        trace = validate_trace_id(trace_id)
        try:
            latest = await self._migrator.latest(trace)
        except GraphMismatch as mismatch:
            raise GraphMismatch(
                mismatch.expected,
                mismatch.actual,
                hint=(
                    f"trace {trace!r} was started by another version of graph "
                    f"{self.graph.name!r}. Finish it with the graph that started it, "
                    f"declare a migration from its graph (@graph.migration(from_hash="
                    f"0x{mismatch.actual:016x}, ...)), or fork it onto this graph: "
                    f"runner.fork(checkpoint_id, new_trace_id, allow_graph_change=True)"
                ),
                migrations=mismatch.migrations,
            ) from None
        if latest is None:
            raise TraceNotFound(f"trace {trace!r} has no checkpoint to resume: run it first")
        asked = self._waiting(latest)
        answering = value is not _UNSET
        if answering and asked is None:
            raise NoPendingInterrupt(trace)
        if asked is not None and not answering and update is None:
            return self._result(trace, "interrupted", latest, 0, True)
        # Resuming a run that paused before its next node is what lets it go on; a
        # superstep paused inside was past that pause already.
        approved = latest.metadata.get("interrupt") in ("before", "inside")
        if update is not None or answering:
            state = latest.state
            metadata: dict[str, Any] = {"source": "update" if update is not None else "resume"}
            if update is not None:
                state = self._state.apply(latest.state, update, "the update")
                metadata["update"] = _describe_update(update)
            cursor = latest.cursor
            if answering:
                cursor = answered(self._cursor_of(latest), latest.cursor, value)
                metadata["answer"] = _describe_update(value)
            if approved:
                # The run still stands at the pause, now with the human's change: a
                # resume after a crash in the node goes on past it, as this one does.
                metadata["interrupt"] = latest.metadata["interrupt"]
            source, latest = (
                latest,
                latest.child(latest.current_node, state, metadata=metadata, cursor=cursor),
            )
            # An answer changes no state: the tasks of the superstep that finished
            # before the pause keep their outputs, carried to the new checkpoint.
            carry = source if update is None else None
            await self._save(trace, latest, required=True, carry=carry)
        return await self._drive(trace, latest, approved=approved, restore=update is None)

    async def fork(
        self,
        checkpoint_id: CheckpointId | str,
        new_trace_id: TraceId | str,
        *,
        allow_graph_change: bool = False,
    ) -> Checkpoint[S]:
        """Start ``new_trace_id`` from an old checkpoint (time travel); resume it to run.

        The new trace's first checkpoint has the old one's state and next node, and
        the old one as its parent. A checkpoint of an older version of the graph
        from which the graph has a chain of migrations (``Graph.migration``) is
        migrated as ``resume`` migrates a trace's latest: its state through each
        migration, its position renamed (metadata ``migrated_from`` and
        ``migration`` say so); a failure is
        :class:`~flowpoint.errors.MigrationFailed`, and nothing is written. A
        checkpoint of another graph without such a chain is refused with
        :class:`~flowpoint.errors.GraphMismatch`, unless ``allow_graph_change=True``:
        the explicit override that moves a run onto a changed graph as it is (its
        state must decode as this graph's, its next node must exist in it).
        """
        trace = validate_trace_id(new_trace_id)
        metadata: dict[str, Any] = {"source": "fork"}
        # The stored checkpoint, and what the fork starts from: it, or it migrated.
        source: Checkpoint[Any] | None
        base: Checkpoint[Any] | None
        try:
            source = base = await self.store.load(checkpoint_id, self._graph_hash)
        except GraphMismatch as mismatch:
            if self.graph.migrations.path(mismatch.actual) is not None:
                moved = await self._migrator.plan_checkpoint(trace, checkpoint_id, mismatch.actual)
                if moved is None:
                    raise TraceNotFound(f"there is no checkpoint {checkpoint_id}") from None
                source, base = moved.source, moved.checkpoint
                metadata["migrated_from"] = f"0x{moved.from_hash:016x}"
                metadata["migration"] = ", ".join(one.name for one in moved.path)
            elif allow_graph_change:
                source = base = await self.store.load(checkpoint_id, None)
            else:
                raise GraphMismatch(
                    mismatch.expected,
                    mismatch.actual,
                    hint=(
                        "pass allow_graph_change=True to fork it onto this graph anyway, or "
                        f"declare a migration from its graph (@graph.migration(from_hash="
                        f"0x{mismatch.actual:016x}, ...))"
                    ),
                    migrations=self.graph.migrations.hashes,
                ) from None
        if source is None or base is None:
            raise TraceNotFound(f"there is no checkpoint {checkpoint_id}")
        try:
            self._cursor_of(base)
        except GraphDefinitionError as exc:
            raise GraphDefinitionError(f"checkpoint {source.checkpoint_id}: {exc}") from None
        metadata["forked_from"] = str(source.checkpoint_id)
        metadata["forked_from_step"] = source.step
        forked: Checkpoint[S] = Checkpoint(
            checkpoint_id=new_checkpoint_id(),
            step=0,
            parent_id=source.checkpoint_id,
            current_node=base.current_node,
            state=base.state,
            created_at=datetime.now(UTC),
            metadata=metadata,
            cursor=base.cursor,
        )
        await self._save(trace, forked, required=True)
        return forked

    # -- the loop ----------------------------------------------------------------------

    async def _drive(
        self, trace: TraceId, parent: Checkpoint[S], *, approved: bool, restore: bool
    ) -> RunResult[S]:
        """Run supersteps from ``parent`` (the last checkpoint written) until END or a pause.

        ``approved`` says the run resumes past a pause before its first superstep;
        ``restore`` that ``parent`` may hold pending writes of its superstep (a
        resume from a stored checkpoint). ``position`` is where the run is, as a
        checkpoint; ``pending`` says it is not in the store yet (the trigger skipped
        it, or its save failed under "warn"). A pause before a superstep is marked
        in its checkpoint's metadata (``interrupt="before"``), so that a resume
        knows the pause was reached.
        """
        position, pending = parent, False
        state = parent.state
        cursor = self._cursor_of(parent)
        nodes_run = steps = 0
        since = 0  # supersteps run since ``parent``, the last checkpoint written
        while cursor.tasks:
            if self._pauses_before(cursor) and not (approved and steps == 0):
                if position.metadata.get("interrupt") != "before":
                    marker = {"source": "pause", "interrupt": "before"}
                    position, pending = self._child(parent, cursor, state, marker), True
                parent, pending = await self._flush(trace, parent, position, pending)
                return self._result(trace, "interrupted", position, nodes_run, not pending)
            if steps == self.recursion_limit:
                await self._flush(trace, parent, position, pending)
                next_up = cursor.current_node() or ""
                raise RecursionLimitReached(trace, self.recursion_limit, next_up)
            step = _Step(trace, parent, since, recorded=not pending)
            first = steps == 0
            # Answers to interrupt() calls belong to the superstep they paused.
            asked = self._interrupts(parent) if first else {}
            outcomes, ran = await self._execute(
                step, state, cursor, restore=restore and first, asked=asked
            )
            nodes_run += ran
            paused = {out.task: out.update for out in outcomes if isinstance(out.update, Paused)}
            if paused:
                return await self._pause_inside(step, state, cursor, asked, paused, nodes_run)
            steps += 1
            since += 1
            new_state, following = await self._commit(step, state, cursor, outcomes)
            pause_after = bool(following.tasks) and any(
                node in self.interrupt_after for node in cursor.nodes
            )
            pause_before = self._pauses_before(following)
            metadata: dict[str, Any] = {"source": "node", "node": summary(cursor.tasks)}
            if pause_after:
                metadata["interrupt"] = "after"
            elif pause_before:
                metadata["interrupt"] = "before"
            # Until it is saved, the next position is the child of the last one written.
            position, pending = self._child(parent, following, new_state, metadata), True
            if (
                pause_after
                or pause_before
                or not following.tasks
                or self._wants_save(state, new_state)
            ):
                parent, pending = await self._flush(trace, parent, position, pending)
                if not pending:
                    since = 0
            state, cursor = new_state, following
            if pause_after:
                return self._result(trace, "interrupted", position, nodes_run, not pending)
        return self._result(trace, "done", position, nodes_run, not pending)

    async def _execute(
        self,
        step: _Step,
        state: S,
        cursor: Cursor,
        *,
        restore: bool,
        asked: Mapping[str, Waiting],
    ) -> tuple[list[Outcome], int]:
        """Run the superstep's tasks; return their outcomes and how many of them ran.

        The one place where tasks start and their outputs are recorded. In a
        superstep of several tasks, each task's update is taken as plain data and
        saved as a pending write against the checkpoint the superstep starts from
        as soon as the task finishes, then typed again by field
        (:meth:`StateType.decode_update`), as a resume reads it back: a run gives
        the same state whether or not it was interrupted. With ``restore``, the
        tasks whose writes are saved do not run again. A task that raises is
        recorded too (its error, at :data:`ERROR_INDEX`), and raised here once the
        others have finished: the first in canonical order. A task that called
        :func:`~flowpoint.interrupt` without an answer in ``asked`` has a
        :class:`Paused` for its update, and nothing recorded.
        """
        tasks = cursor.tasks
        several = len(tasks) > 1
        durable = step.recorded and self._writes
        restored: dict[str, Any] = {}
        if restore and several and durable:
            restored = await self._outputs(step.parent.checkpoint_id, cursor)
        at = step.parent.step + step.since

        async def start(task: Task) -> Any:
            spec = self.graph.nodes[task.node]
            argument = state if task.send is None else self._argument(task)
            record = asked.get(task.id)
            answers = () if record is None else record.answers

            async def attempt(n: int) -> Any:
                context = self._context(step, task, n) if spec.takes_context else None
                if streaming():
                    await emit(NodeStarted(step.trace, at, task.node, task.id, n))
                with silenced():
                    if spec.subgraph is None:
                        return await run_answering(
                            task.id, answers, lambda: call(spec.function, argument, context)
                        )
                    # A subgraph node answers its child trace's questions with the task's.
                    return await run_answering(
                        task.id,
                        answers,
                        lambda: self._subgraphs.run(
                            step.trace,
                            at,
                            task.node,
                            task.id,
                            argument,
                            alone=not several,
                            child_step=None if record is None else record.child_step,
                        ),
                    )

            update = await retrying(spec.retry, attempt)
            # A Command's goto is checked (and its Sends made plain) before anything is saved.
            update = check(
                spec, update, lambda send: self._plain_argument(task.node, send, send, "command")
            )
            if several and not isinstance(update, Paused):
                update = map_update(update, lambda one: self._plain_update(task, one))
            return update

        async def save_outputs(batches: list[tuple[TaskWrite, ...]]) -> None:
            batch = [write for writes in batches for write in writes]
            await self.store.save_writes(step.trace, step.parent.checkpoint_id, batch)

        outputs = GroupCommit(save_outputs)

        async def record(task: Task, update: Any, error: Exception | None) -> Any:
            if error is not None:
                if durable:
                    await self._record_error(step, task, error)
                return None
            if isinstance(update, Paused):
                return update
            if several:
                if durable:
                    output = writes(task.id, OUTPUT_INDEX, UPDATE_CHANNEL, update)
                    await self._saving(step, task, outputs.put(output))
                update = map_update(update, self._state.decode_update)
            if streaming():
                await emit(NodeFinished(step.trace, at, task.node, task.id, returned(update)))
            return update

        pending = [task for task in tasks if task.id not in restored]
        ran = {outcome.task.id: outcome for outcome in await execute(pending, start, record)}
        outcomes = [
            ran.get(task.id)
            or Outcome(task, map_update(restored[task.id], self._state.decode_update))
            for task in tasks
        ]
        failed = [outcome for outcome in outcomes if outcome.error is not None]
        if failed:
            error = failed[0].error
            assert error is not None
            if len(failed) > 1:
                others = ", ".join(repr(outcome.task.id) for outcome in failed[1:])
                error.add_note(f"flowpoint: task(s) {others} of the same superstep failed too")
            raise error
        return outcomes, len(pending)

    async def _outputs(self, checkpoint_id: CheckpointId, cursor: Cursor) -> dict[str, Any]:
        """The plain updates of the superstep's tasks that finished before, by task id."""
        ids = {task.id for task in cursor.tasks}
        stored = await self.store.load_writes(checkpoint_id)
        updates = {
            write.task_id: write.value
            for write in stored
            if write.index == OUTPUT_INDEX
            and write.channel == UPDATE_CHANNEL
            and write.task_id in ids
        }
        nodes = {task.id: self.graph.nodes[task.node] for task in cursor.tasks}
        return with_gotos(updates, stored, nodes, checkpoint_id)

    async def _pause_inside(
        self,
        step: _Step,
        state: S,
        cursor: Cursor,
        asked: Mapping[str, Waiting],
        paused: Mapping[Task, Paused],
        nodes_run: int,
    ) -> RunResult[S]:
        """Save a superstep that ``interrupt()`` paused, to run again once answered.

        The checkpoint holds the state the superstep started from and its tasks,
        with the payloads waiting (:mod:`flowpoint.graph._interrupt`); the outputs
        of its tasks that finished are carried over to it as pending writes.
        """
        stored = pausing(cursor, asked, paused)
        metadata = {"source": "interrupt", "interrupt": "inside", "node": summary(paused)}
        checkpoint = step.parent.child(
            cursor.current_node(), state, metadata=metadata, cursor=stored
        )
        carry = step.parent if step.recorded else None
        saved = await self._save(step.trace, checkpoint, required=False, carry=carry)
        return self._result(step.trace, "interrupted", checkpoint, nodes_run, saved)

    async def _carry_writes(
        self, trace: TraceId, source: Checkpoint[S], target: Checkpoint[S]
    ) -> None:
        """Save the task outputs pending against ``source`` against ``target`` too.

        Without them a resume from ``target`` would run those tasks again: at least
        once still holds, so a store that fails here only warns under "warn".
        """
        if not self._writes:
            return
        try:
            outputs = await self._outputs(source.checkpoint_id, self._cursor_of(target))
            if outputs:
                carried = [
                    write
                    for task, value in outputs.items()
                    for write in writes(task, OUTPUT_INDEX, UPDATE_CHANNEL, value)
                ]
                await self.store.save_writes(trace, target.checkpoint_id, carried)
        except StorageError as exc:
            if self.on_save_error == "raise":
                raise
            warnings.warn(
                f"flowpoint: the finished tasks of step {target.step} of trace {trace!r} were "
                f"not carried over ({exc}); they run again on resume",
                RuntimeWarning,
                stacklevel=3,
            )

    async def _record_error(self, step: _Step, task: Task, error: Exception) -> None:
        """Save what a task raised, replacing an earlier attempt's; never hide ``error``."""
        value = {
            "type": f"{type(error).__module__}.{type(error).__qualname__}",
            "message": str(error)[:_ERROR_MESSAGE_LIMIT],
        }
        write = TaskWrite(task.id, ERROR_INDEX, ERROR_CHANNEL, value)
        saving = self.store.save_writes(
            step.trace, step.parent.checkpoint_id, [write], overwrite=True
        )
        try:
            await self._saving(step, task, saving)
        except CheckpointStoreError as exc:
            error.add_note(f"flowpoint: the error of task {task.id!r} was not recorded: {exc}")

    async def _saving(self, step: _Step, task: Task, saving: Awaitable[Any]) -> None:
        """Await a save of pending writes of ``task``, per ``on_save_error``."""
        try:
            await saving
        except StorageError as exc:
            if self.on_save_error == "raise":
                raise
            warnings.warn(
                f"flowpoint: a pending write of task {task.id!r} of trace {step.trace!r} was "
                f"not saved ({exc}); after a crash the task runs again",
                RuntimeWarning,
                stacklevel=2,
            )

    async def _commit(
        self, step: _Step, state: S, cursor: Cursor, outcomes: list[Outcome]
    ) -> tuple[S, Cursor]:
        """The state after a superstep and the cursor of the next one.

        The one place where a superstep is committed: its updates are applied in
        canonical order, then the edges of the nodes that ran are followed (their
        routers see the state after the whole superstep).
        """
        updates, gotos, follow = updates_and_gotos(
            (outcome.task.node, outcome.task.id, outcome.update) for outcome in outcomes
        )
        new_state: S = self._state.merge(state, updates)
        routes: dict[str, list[str | Send]] = {}
        for node in cursor.nodes:
            # A Command's goto replaces the edges, unless another task of the node had none.
            found: list[str | Send] = list(gotos.get(node, ()))
            for edge in self.graph.edges_after(node) if node in follow else ():
                if isinstance(edge, ConditionalEdge):
                    first = next(task for task in cursor.tasks if task.node == node)
                    context = self._context(step, first) if edge.takes_context else None
                    found.extend(await self._route(node, edge, new_state, context))
                elif edge.target != END:
                    found.append(edge.target)
            routes[node] = found
        return new_state, cursor.after(self.graph, cursor.nodes, routes)

    def _wants_save(self, before: S, after: S) -> bool:
        if self.trigger is TriggerPolicy.EVERY_NODE:
            return True
        if self.trigger is TriggerPolicy.ON_CHANGE:
            try:
                return bool(before != after)
            except Exception:  # a state whose comparison has no truth value: save it
                return True
        return False

    async def _flush(
        self, trace: TraceId, parent: Checkpoint[S], position: Checkpoint[S], pending: bool
    ) -> tuple[Checkpoint[S], bool]:
        """Save ``position`` if pending; return the last written and whether it still is."""
        if pending and await self._save(trace, position, required=False):
            return position, False
        return parent, pending

    async def _route(
        self, node: str, edge: ConditionalEdge, state: S, context: NodeContext | None
    ) -> list[str | Send]:
        """Where the router after ``node`` sends the run: nodes and Sends, END left out.

        A Send's argument is taken as plain data here, checked against its node's
        first parameter, so a bad one fails the run before anything is saved.
        """
        route = await call(edge.router, state, context)
        found: list[str | Send] = []
        for one in route if isinstance(route, list) else [route]:
            if isinstance(one, Send):
                if one.node not in edge.targets or one.node == END:
                    raise InvalidRoute(node, route, edge.targets)
                found.append(Send(one.node, self._plain_argument(node, route, one)))
                continue
            if edge.path_map is not None:
                try:
                    target = edge.path_map[one]
                except (KeyError, TypeError):
                    raise InvalidRoute(node, route, tuple(map(repr, edge.path_map))) from None
            elif isinstance(one, str) and one in edge.targets:
                target = one
            else:
                raise InvalidRoute(node, route, edge.targets)
            if target != END:
                found.append(target)
        return found

    def _plain_argument(
        self, node: str, route: Any, send: Send, kind: Literal["router", "command"] = "router"
    ) -> Any:
        """A Send's argument as plain data, checked to fit the node it is sent to."""
        try:
            plain = to_plain(send.arg)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidRoute(
                node,
                route,
                (),
                reason=f"the argument of {send!r:.60} cannot be stored: {exc}",
                kind=kind,
            ) from None
        expected = self._input_type(send.node)
        if expected is not Any:
            try:
                from_plain(plain, expected)
            except InvalidUpdate as exc:
                raise InvalidRoute(
                    node,
                    route,
                    (),
                    reason=f"node {send.node!r} cannot take its argument: {exc}",
                    kind=kind,
                ) from None
        return plain

    def _argument(self, task: Task) -> Any:
        """What a Send task's node gets: its argument typed as the node's first parameter."""
        expected = self._input_type(task.node)
        return task.arg if expected is Any else from_plain(task.arg, expected)

    def _input_type(self, node: str) -> Any:
        found = self._inputs.get(node)
        if found is None:
            found = self._inputs[node] = (input_type(self.graph.nodes[node].function),)
        return found[0]

    def _plain_update(self, task: Task, update: Any) -> Any:
        """A task's update as plain data, as its pending write stores it."""
        if not isinstance(update, Mapping):
            raise InvalidUpdate(
                f"node {task.id!r} returned a {type(update).__qualname__} in a superstep of "
                f"several tasks; parallel nodes return a dict of the fields they change, "
                f"or None",
                tasks=(task.id,),
            )
        try:
            plain = to_plain(update)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidUpdate(
                f"node {task.id!r} returned an update flowpoint cannot store: {exc}",
                tasks=(task.id,),
            ) from None
        return plain

    def _context(self, step: _Step, task: Task, attempt: int = 1) -> NodeContext:
        parent = step.parent
        context = node_context(
            step.trace, parent.checkpoint_id, parent.step, step.since, task.node, task.id
        )
        return context if attempt == 1 else dataclasses.replace(context, attempt=attempt)

    def _interrupts(self, checkpoint: Checkpoint[S]) -> dict[str, Waiting]:
        try:
            return read_interrupts(checkpoint.cursor)
        except ValueError as exc:
            raise CorruptCheckpoint(checkpoint.checkpoint_id, str(exc)) from None

    def _waiting(self, checkpoint: Checkpoint[S]) -> Waiting | None:
        return waiting(self._interrupts(checkpoint))

    def _finished(self, result: RunResult[S]) -> list[RunEvent]:
        """The last events of a stream: an ``Interrupted`` if the run paused, ``RunFinished``."""
        events: list[RunEvent] = []
        if result.status == "interrupted":
            checkpoint = result.checkpoint
            asked = self._waiting(checkpoint)
            if asked is not None:
                reason: Literal["interrupt", "before", "after"] = "interrupt"
                node: str | None = asked.node
                task: str | None = asked.task
                payload = asked.payload
            else:
                after = checkpoint.metadata.get("interrupt") == "after"
                reason = "after" if after else "before"
                node, task, payload = checkpoint.current_node, None, None
            events.append(
                Interrupted(
                    result.trace_id,
                    checkpoint.step,
                    checkpoint.checkpoint_id,
                    reason,
                    node,
                    task,
                    payload,
                )
            )
        events.append(RunFinished(result.trace_id, result))
        return events

    def _cursor_of(self, checkpoint: Checkpoint[S]) -> Cursor:
        try:
            return Cursor.from_stored(checkpoint.current_node, checkpoint.cursor, self.graph)
        except ValueError as exc:
            if isinstance(exc, GraphDefinitionError):
                raise
            raise CorruptCheckpoint(checkpoint.checkpoint_id, str(exc)) from None

    def _pauses_before(self, cursor: Cursor) -> bool:
        return any(node in self.interrupt_before for node in cursor.nodes)

    @staticmethod
    def _child(
        parent: Checkpoint[S], cursor: Cursor, state: S, metadata: Mapping[str, Any]
    ) -> Checkpoint[S]:
        return parent.child(
            cursor.current_node(), state, metadata=metadata, cursor=cursor.to_stored()
        )

    async def _save(
        self,
        trace: TraceId,
        checkpoint: Checkpoint[S],
        *,
        required: bool,
        carry: Checkpoint[S] | None = None,
    ) -> bool:
        """Save and apply retention; ``False`` if the store failed under ``"warn"``.

        ``required`` saves (the first checkpoint of a trace, a resume's update, a
        fork) always raise: without them there is nothing to continue from. With
        ``carry``, the task outputs pending against that checkpoint are saved
        against this one too, before retention may prune it.
        """
        stamp = child_stamp()
        if stamp:
            checkpoint = dataclasses.replace(checkpoint, metadata={**checkpoint.metadata, **stamp})
        try:
            info = await self.store.save_with_trace(trace, checkpoint, self._graph_hash)
        except StorageError as exc:
            if required or self.on_save_error == "raise":
                raise
            warnings.warn(
                f"flowpoint: step {checkpoint.step} of trace {trace!r} was not saved ({exc}); "
                f"the run goes on without it",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        if carry is not None:
            await self._carry_writes(trace, carry, checkpoint)
        if not self.retention.keeps_all:
            # The checkpoint is saved whatever happens here: a failed prune must not
            # make the run believe otherwise (it would save that step again and conflict).
            keep = self.retention.latest if self.retention.latest is not None else 1
            try:
                await self.store.prune(trace, keep_latest=keep, older_than=self.retention.max_age)
            except StorageError as exc:
                if self.on_save_error == "raise":
                    raise
                warnings.warn(
                    f"flowpoint: step {checkpoint.step} of trace {trace!r} is saved, but "
                    f"pruning its old checkpoints failed ({exc}); they are kept",
                    RuntimeWarning,
                    stacklevel=4,
                )
        if streaming():
            await emit(CheckpointSaved(trace, checkpoint.step, checkpoint.checkpoint_id, info))
        return True

    def _result(
        self,
        trace: TraceId,
        status: Literal["done", "interrupted"],
        checkpoint: Checkpoint[S],
        nodes_run: int,
        durable: bool,
    ) -> RunResult[S]:
        return RunResult(
            trace_id=trace,
            status=status,
            state=checkpoint.state,
            checkpoint=checkpoint,
            next_node=checkpoint.current_node,
            nodes_run=nodes_run,
            durable=durable,
            next_nodes=self._cursor_of(checkpoint).nodes,
            interrupt=asked.payload if (asked := self._waiting(checkpoint)) else None,
        )

    def _known_nodes(self, names: Iterable[str], option: str) -> frozenset[str]:
        if isinstance(names, str):
            raise TypeError(f"{option} takes a list of node names, not the str {names!r}")
        chosen = frozenset(names)
        unknown = sorted(chosen - set(self.graph.nodes))
        if unknown:
            raise GraphDefinitionError(f"{option} names unknown node(s) {unknown}")
        return chosen


@dataclass(frozen=True, slots=True)
class _Step:
    """Where a superstep starts: the last checkpoint written, and supersteps run since it.

    ``recorded`` says the superstep starts at that checkpoint itself, so that its
    tasks' outputs can be saved as pending writes against it.
    """

    trace: TraceId
    parent: Checkpoint[Any]
    since: int
    recorded: bool


def _describe_update(update: Any) -> str:
    """The human's change as JSON for the checkpoint's metadata (keys only if long)."""
    try:
        text = msgspec.json.encode(update, enc_hook=repr).decode()
    except (TypeError, ValueError):
        text = repr(update)
    if len(text) <= _UPDATE_NOTE_LIMIT:
        return text
    keys = [str(key) for key in update] if isinstance(update, dict) else []
    note: dict[str, Any] = {"keys": keys, "type": type(update).__qualname__}
    while len(text := msgspec.json.encode(note).decode()) > _UPDATE_NOTE_LIMIT:
        keys.pop()  # an update of very many keys: name as many as fit
        note["more"] = note.get("more", 0) + 1
    return text
