"""Running a graph durably: checkpoint as it goes, pause, resume, fork."""

from __future__ import annotations

import asyncio
import inspect
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal

import msgspec

from flowpoint.checkpoint import Checkpoint, S
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import (
    GraphDefinitionError,
    GraphMismatch,
    InvalidRoute,
    RecursionLimitReached,
    StorageError,
    TraceNotFound,
)
from flowpoint.graph._context import NodeContext, node_context
from flowpoint.graph.builder import END, BuiltGraph, ConditionalEdge, Edge, Graph
from flowpoint.graph.policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph.state import StateType
from flowpoint.ids import CheckpointId, TraceId, new_checkpoint_id, validate_trace_id
from flowpoint.stores.base import BlobCheckpointStore
from flowpoint.typed import TypedCheckpointStore

__all__ = ["RunResult", "Runner"]

_UPDATE_NOTE_LIMIT = 2048


@dataclass(frozen=True, slots=True)
class RunResult(Generic[S]):
    """Where a call to :meth:`Runner.run` or :meth:`Runner.resume` left the trace.

    ``status`` is ``"done"`` when the run reached ``END`` and ``"interrupted"`` when
    it paused; ``next_node`` is where :meth:`Runner.resume` will continue.
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


class Runner(Generic[S]):
    """Runs a graph's traces, saving a checkpoint as the trigger policy says.

    ``store`` is a :class:`~flowpoint.TypedCheckpointStore` for the graph's state
    type, or a blob store (a :class:`~flowpoint.SerdeCheckpointCodec` of the graph's
    state type is added). Each save completes before the next node starts.

    A node runs at least once: a node that was running when the process died runs
    again on resume, so make its side effects idempotent, keyed on the
    :attr:`NodeContext.idempotency_key <flowpoint.NodeContext.idempotency_key>` it
    gets by declaring a second parameter. Nodes that finished and were checkpointed
    never run again.

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
        if _origin(codec_type) != _origin(self.graph.state_type):
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
        self._state = StateType(self.graph.state_type)

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
        return await self._drive(trace, first, approved=False)

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
            latest = latest.child(latest.current_node, state, metadata=metadata)
            await self._save(trace, latest, required=True)
        return await self._drive(trace, latest, approved=approved)

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
        if source.current_node is not None and source.current_node not in self.graph.nodes:
            raise GraphDefinitionError(
                f"checkpoint {source.checkpoint_id} continues at node {source.current_node!r}, "
                f"which graph {self.graph.name!r} does not have"
            )
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
        )
        await self._save(trace, forked, required=True)
        return forked

    # -- the loop ----------------------------------------------------------------------

    async def _drive(
        self, trace: TraceId, parent: Checkpoint[S], *, approved: bool
    ) -> RunResult[S]:
        """Run nodes from ``parent`` (the last checkpoint written) until END or a pause.

        ``approved`` says the run resumes past a pause before its first node.
        ``position`` is where the run is, as a checkpoint; ``pending`` says it is not
        in the store yet (the trigger skipped it, or its save failed under "warn").
        A pause before a node is marked in its checkpoint's metadata
        (``interrupt="before"``), so that a resume knows the pause was reached.
        """
        position, pending = parent, False
        state, node = parent.state, parent.current_node
        nodes_run = 0
        since = 0  # nodes run since ``parent``, the last checkpoint written
        while node is not None:
            if node in self.interrupt_before and not (approved and nodes_run == 0):
                if position.metadata.get("interrupt") != "before":
                    marker = {"source": "pause", "interrupt": "before"}
                    position, pending = parent.child(node, state, metadata=marker), True
                parent, pending = await self._flush(trace, parent, position, pending)
                return self._result(trace, "interrupted", position, nodes_run, not pending)
            if nodes_run == self.recursion_limit:
                await self._flush(trace, parent, position, pending)
                raise RecursionLimitReached(trace, self.recursion_limit, node)
            spec, edge = self.graph.nodes[node], self.graph.edge_after(node)
            context = None
            if spec.takes_context or (isinstance(edge, ConditionalEdge) and edge.takes_context):
                context = node_context(trace, parent.checkpoint_id, parent.step, since, node)
            update = await _call(spec.function, state, context if spec.takes_context else None)
            new_state = self._state.apply(state, update, f"node {node!r}")
            following = await self._route(node, edge, new_state, context)
            nodes_run += 1
            since += 1
            pause_after = node in self.interrupt_after and following is not None
            pause_before = following in self.interrupt_before
            metadata: dict[str, Any] = {"source": "node", "node": node}
            if pause_after:
                metadata["interrupt"] = "after"
            elif pause_before:
                metadata["interrupt"] = "before"
            # Until it is saved, the next position is the child of the last one written.
            position, pending = parent.child(following, new_state, metadata=metadata), True
            if (
                pause_after
                or pause_before
                or following is None
                or self._wants_save(state, new_state)
            ):
                parent, pending = await self._flush(trace, parent, position, pending)
                if not pending:
                    since = 0
            state, node = new_state, following
            if pause_after:
                return self._result(trace, "interrupted", position, nodes_run, not pending)
        return self._result(trace, "done", position, nodes_run, not pending)

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
        self, node: str, edge: Edge, state: S, context: NodeContext | None
    ) -> str | None:
        if not isinstance(edge, ConditionalEdge):
            target = edge.target
        else:
            route = await _call(edge.router, state, context if edge.takes_context else None)
            if edge.path_map is not None:
                try:
                    target = edge.path_map[route]
                except (KeyError, TypeError):
                    raise InvalidRoute(node, route, tuple(map(repr, edge.path_map))) from None
            elif route in edge.targets:
                target = route
            else:
                raise InvalidRoute(node, route, edge.targets)
        return None if target == END else target

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
        )

    def _known_nodes(self, names: Iterable[str], option: str) -> frozenset[str]:
        if isinstance(names, str):
            raise TypeError(f"{option} takes a list of node names, not the str {names!r}")
        chosen = frozenset(names)
        unknown = sorted(chosen - set(self.graph.nodes))
        if unknown:
            raise GraphDefinitionError(f"{option} names unknown node(s) {unknown}")
        return chosen


def _origin(tp: Any) -> Any:
    """``dict`` for ``dict[str, Any]``: the class behind a type, for comparing two."""
    return typing.get_origin(tp) or tp


async def _call(function: Any, state: Any, context: NodeContext | None) -> Any:
    """Call a node or router: async ones are awaited, sync ones run in a worker thread.

    ``context`` is passed as the second argument to a function that declares one.
    """
    args = (state,) if context is None else (state, context)
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


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
