"""Subgraph nodes: a graph run as a node of another, durably, as a trace of its own.

A subgraph node's run is a trace in the parent runner's store, named after the
parent trace, the task and the step it runs at (:func:`child_trace`)::

    "ticket-7/research@3"          # node "research", run from step 3 of "ticket-7"
    "ticket-7/research#2@5"        # the third Send to "research" at step 5

The name depends only on where the node runs, so a parent resumed after a crash
reruns the node under the same name, and the runner resumes that trace instead
of starting it again: the subgraph's nodes that had finished do not run again.
A subgraph that had finished gives its final state at once. Each run of the
node at another step (a loop) is a trace of its own.

The subgraph runs with the parent runner's trigger, retention, error policy and
recursion limit, and without pauses of its own (pause before or after the
subgraph node in the parent instead). What it raises is the parent node's failure.

An ``interrupt()`` in one of its nodes pauses the parent too: the subgraph node
asks the parent's resume for the answer, as a node calling ``interrupt()``
would, with the child's payload. On the parent's resume the node runs again and
hands the new answer down (``resume(child, value=...)``). Which of the parent's
answers the child has had is a count that every checkpoint of the child trace
carries in its metadata (:data:`ANSWERS_KEY`), written with the checkpoint that
records the answer: so after a crash between the child's pause and the
parent's, the parent's old answer is not handed to the child's new question.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flowpoint.checkpoint import Checkpoint
from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import CorruptCheckpoint, InvalidUpdate
from flowpoint.graph._builder import BuiltGraph, Subgraph, same_state
from flowpoint.graph._interrupt import NodePaused, given_answers
from flowpoint.graph._state import WholeState
from flowpoint.ids import MAX_TRACE_ID_LENGTH, TraceId, validate_trace_id
from flowpoint.typed import TypedCheckpointStore

if TYPE_CHECKING:
    from flowpoint.graph._runner import Runner

__all__ = ["ANSWERS_KEY", "Subgraphs", "child_stamp", "child_trace"]

# Hex digits of the digest that stands for a child trace's name when it does not fit.
_DIGEST = 16

ANSWERS_KEY = "parent_answers"
"""Metadata of a child trace's checkpoints: how many of the parent's answers it has had."""

# The count the runner of a child trace adds to the metadata of each checkpoint it saves.
_DELIVERED: ContextVar[int] = ContextVar("flowpoint_parent_answers", default=0)


def child_stamp() -> Mapping[str, Any]:
    """The metadata every checkpoint saved now takes besides its own (a child trace's count)."""
    delivered = _DELIVERED.get()
    return {ANSWERS_KEY: delivered} if delivered else {}


class Subgraphs:
    """The runners of a graph's subgraph nodes, over the parent runner's blob store."""

    def __init__(self, parent: Runner[Any]) -> None:
        self._runners: dict[str, Runner[Any]] = {}
        self._specs: dict[str, Subgraph] = {}
        for node in parent.graph.nodes.values():
            if node.subgraph is None:
                continue
            graph = node.subgraph.graph
            store = _child_store(parent.store, parent.graph, graph, node.name)
            self._specs[node.name] = node.subgraph
            self._runners[node.name] = type(parent)(
                graph,
                store,
                trigger=parent.trigger,
                retention=parent.retention,
                on_save_error=parent.on_save_error,
                recursion_limit=parent.recursion_limit,
            )

    async def run(
        self,
        trace: TraceId,
        step: int,
        node: str,
        task_id: str,
        state: Any,
        *,
        alone: bool,
        child_step: int | None = None,
    ) -> Any:
        """Run (or resume) subgraph node ``node``'s trace for the task; return the node's update.

        ``step`` is the step the task runs at and ``alone`` says it is the only
        task of its superstep: a subgraph without ``output=`` replaces the
        parent's state, which only a lone task may do. ``child_step``, for a
        task whose child trace asked the parent a question, is the step that
        trace is named after: the task's runs after each answer, at later steps,
        go on in it.
        """
        spec = self._specs[node]
        if spec.output is None and not alone:
            raise InvalidUpdate(
                f"subgraph node {node!r} runs in a superstep of several tasks, where it cannot "
                f"replace the whole state; give it output=(parent state, subgraph final "
                f"state -> dict of the fields it changes)",
                tasks=(task_id,),
            )
        runner = self._runners[node]
        named_at = step if child_step is None else child_step
        child = child_trace(trace, task_id, named_at)
        latest = await runner.store.load_latest(child, runner.graph.hash_u64())
        delivered = 0 if latest is None else _answers_had(latest)
        with _stamped(delivered):
            if latest is None:
                start = state if spec.input is None else await _called(spec.input, state)
                result = await runner.run(child, start)
            else:  # a run of this node that a crash or a pause interrupted: go on inside it
                result = await runner.resume(child)  # one waiting on an answer stays so
        answers = given_answers()
        while result.status != "done":
            if delivered >= len(answers):
                # Asked of the parent's resume, as the node's own interrupt() would ask.
                raise NodePaused(result.interrupt, named_at)
            delivered += 1
            with _stamped(delivered):
                result = await runner.resume(child, value=answers[delivered - 1])
        if spec.output is None:
            return WholeState(result.state)
        return await _called(spec.output, state, result.state)


@contextmanager
def _stamped(delivered: int) -> Iterator[None]:
    """Checkpoints saved inside carry ``delivered`` (none when 0: a subgraph never asked)."""
    token = _DELIVERED.set(delivered)
    try:
        yield
    finally:
        _DELIVERED.reset(token)


def _answers_had(latest: Checkpoint[Any]) -> int:
    """How many of the parent's answers the child trace whose latest is ``latest`` has had."""
    count = latest.metadata.get(ANSWERS_KEY, 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise CorruptCheckpoint(
            latest.checkpoint_id, f"its metadata {ANSWERS_KEY!r} is {count!r}, not a count"
        )
    return count


def child_trace(parent: TraceId, task_id: str, step: int) -> TraceId:
    """The trace of the task ``task_id``'s subgraph run at ``step`` of trace ``parent``.

    ``"<parent>/<task id>@<step>"``; when that is too long for a trace id or holds
    characters a trace id may not, its printable start and a digest of the whole.
    """
    name = f"{parent}/{task_id}@{step}"
    if len(name) <= MAX_TRACE_ID_LENGTH and name.isprintable():
        return TraceId(name)
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    start = "".join(char if char.isprintable() else "?" for char in name)
    return validate_trace_id(f"{start[: MAX_TRACE_ID_LENGTH - _DIGEST - 1]}~{digest}")


def _child_store(
    store: TypedCheckpointStore[Any], parent: BuiltGraph[Any], child: BuiltGraph[Any], node: str
) -> TypedCheckpointStore[Any]:
    """A store of the subgraph's states over the parent's blob store, with the same settings."""
    if same_state(child.state_type, parent.state_type):
        return store
    codec = store.codec
    if not isinstance(codec, SerdeCheckpointCodec):
        raise TypeError(
            f"subgraph node {node!r} runs on {child.state_type!r}, and the store's codec "
            f"{codec!r} stores {parent.state_type!r} only; use a SerdeCheckpointCodec (the "
            f"subgraph's states are stored with its settings)"
        )
    return TypedCheckpointStore(store.store, codec.for_state(child.state_type))


async def _called(function: Any, *args: Any) -> Any:
    """What a mapping function returns: a sync one is called, an async one awaited."""
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
