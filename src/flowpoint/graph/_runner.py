"""Running a graph durably: checkpoint as it goes, pause, resume, fork."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Iterable, Mapping
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
    RecursionLimitReached,
    StorageError,
    TraceNotFound,
)
from flowpoint.graph._builder import END, BuiltGraph, ConditionalEdge, Graph, Send
from flowpoint.graph._context import NodeContext, input_type, node_context
from flowpoint.graph._cursor import Cursor, Task, summary
from flowpoint.graph._policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph._state import from_plain, to_plain
from flowpoint.graph._superstep import GroupCommit, Outcome, call, execute
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
    ``on_save_error="warn"``.
    """

    trace_id: TraceId
    status: Literal["done", "interrupted"]
    state: S
    checkpoint: Checkpoint[S]
    next_node: str | None
    nodes_run: int
    durable: bool
    next_nodes: tuple[str, ...] = ()


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

    async def resume(self, trace_id: TraceId | str, update: Any = None) -> RunResult[S]:
        """Continue a trace from its latest checkpoint, without rerunning finished nodes.

        ``update`` (a dict of fields, or a whole state) is applied first, and saved
        as a checkpoint whose metadata records it: this is how a human's change
        enters a paused run. Raises :class:`~flowpoint.errors.GraphMismatch` if the
        trace was written by another graph, and
        :class:`~flowpoint.errors.TraceNotFound` if it has no checkpoint.
        """
        trace = validate_trace_id(trace_id)
        try:
            latest = await self.store.load_latest(trace, self._graph_hash)
        except GraphMismatch as mismatch:
            raise GraphMismatch(
                mismatch.expected,
                mismatch.actual,
                hint=(
                    f"trace {trace!r} was started by another version of graph "
                    f"{self.graph.name!r}. Finish it with the graph that started it, or "
                    f"fork it onto this graph: "
                    f"runner.fork(checkpoint_id, new_trace_id, allow_graph_change=True)"
                ),
            ) from None
        if latest is None:
            raise TraceNotFound(f"trace {trace!r} has no checkpoint to resume: run it first")
        # Resuming a run that paused before its next node is what lets it go on.
        approved = latest.metadata.get("interrupt") == "before"
        if update is not None:
            state = self._state.apply(latest.state, update, "the update")
            metadata = {"source": "update", "update": _describe_update(update)}
            if approved:
                # The run still stands at the pause, now with the human's change: a
                # resume after a crash in the node goes on past it, as this one does.
                metadata["interrupt"] = "before"
            latest = latest.child(
                latest.current_node, state, metadata=metadata, cursor=latest.cursor
            )
            await self._save(trace, latest, required=True)
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
        the old one as its parent. With ``allow_graph_change=True`` the checkpoint
        may come from another version of the graph: this is the explicit override
        that moves a run onto a changed graph (its next node must exist in it).
        """
        trace = validate_trace_id(new_trace_id)
        expected = None if allow_graph_change else self._graph_hash
        try:
            source = await self.store.load(checkpoint_id, expected)
        except GraphMismatch as mismatch:
            raise GraphMismatch(
                mismatch.expected,
                mismatch.actual,
                hint="pass allow_graph_change=True to fork it onto this graph anyway",
            ) from None
        if source is None:
            raise TraceNotFound(f"there is no checkpoint {checkpoint_id}")
        try:
            self._cursor_of(source)
        except GraphDefinitionError as exc:
            raise GraphDefinitionError(f"checkpoint {source.checkpoint_id}: {exc}") from None
        forked: Checkpoint[S] = Checkpoint(
            checkpoint_id=new_checkpoint_id(),
            step=0,
            parent_id=source.checkpoint_id,
            current_node=source.current_node,
            state=source.state,
            created_at=datetime.now(UTC),
            metadata={
                "source": "fork",
                "forked_from": str(source.checkpoint_id),
                "forked_from_step": source.step,
            },
            cursor=source.cursor,
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
            restoring = restore and steps == 0
            outcomes, ran = await self._execute(step, state, cursor, restore=restoring)
            nodes_run += ran
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
        self, step: _Step, state: S, cursor: Cursor, *, restore: bool
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
        others have finished: the first in canonical order.
        """
        tasks = cursor.tasks
        several = len(tasks) > 1
        durable = step.recorded and self._writes
        restored: dict[str, Any] = {}
        if restore and several and durable:
            restored = await self._restore(step, cursor)

        async def start(task: Task) -> Any:
            spec = self.graph.nodes[task.node]
            context = self._context(step, task) if spec.takes_context else None
            argument = state if task.send is None else self._argument(task)
            update = await call(spec.function, argument, context)
            if several and update is not None:
                update = self._plain_update(task, update)
            return update

        async def save_outputs(writes: list[TaskWrite]) -> None:
            await self.store.save_writes(step.trace, step.parent.checkpoint_id, writes)

        outputs = GroupCommit(save_outputs)

        async def record(task: Task, update: Any, error: Exception | None) -> Any:
            if error is not None:
                if durable:
                    await self._record_error(step, task, error)
                return None
            if not several:
                return update
            if durable:
                write = TaskWrite(task.id, OUTPUT_INDEX, UPDATE_CHANNEL, update)
                await self._saving(step, task, outputs.put(write))
            return self._state.decode_update(update)

        pending = [task for task in tasks if task.id not in restored]
        ran = {outcome.task.id: outcome for outcome in await execute(pending, start, record)}
        outcomes = [
            ran.get(task.id) or Outcome(task, self._state.decode_update(restored[task.id]))
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

    async def _restore(self, step: _Step, cursor: Cursor) -> dict[str, Any]:
        """The plain updates of the superstep's tasks that finished before, by task id."""
        ids = {task.id for task in cursor.tasks}
        return {
            write.task_id: write.value
            for write in await self.store.load_writes(step.parent.checkpoint_id)
            if write.index == OUTPUT_INDEX
            and write.channel == UPDATE_CHANNEL
            and write.task_id in ids
        }

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
        new_state: S = self._state.merge(
            state, [(outcome.task.id, outcome.update) for outcome in outcomes]
        )
        routes: dict[str, list[str | Send]] = {}
        for node in cursor.nodes:
            found: list[str | Send] = []
            for edge in self.graph.edges_after(node):
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

    def _plain_argument(self, node: str, route: Any, send: Send) -> Any:
        """A Send's argument as plain data, checked to fit the node it is sent to."""
        try:
            plain = to_plain(send.arg)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidRoute(
                node, route, (), reason=f"the argument of {send!r:.60} cannot be stored: {exc}"
            ) from None
        expected = self._input_type(send.node)
        if expected is not Any:
            try:
                from_plain(plain, expected)
            except InvalidUpdate as exc:
                raise InvalidRoute(
                    node, route, (), reason=f"node {send.node!r} cannot take its argument: {exc}"
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

    def _context(self, step: _Step, task: Task) -> NodeContext:
        parent = step.parent
        return node_context(
            step.trace, parent.checkpoint_id, parent.step, step.since, task.node, task.id
        )

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

    async def _save(self, trace: TraceId, checkpoint: Checkpoint[S], *, required: bool) -> bool:
        """Save and apply retention; ``False`` if the store failed under ``"warn"``.

        ``required`` saves (the first checkpoint of a trace, a resume's update, a
        fork) always raise: without them there is nothing to continue from.
        """
        try:
            await self.store.save_with_trace(trace, checkpoint, self._graph_hash)
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
