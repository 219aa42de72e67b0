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
"""

from __future__ import annotations

import hashlib
import inspect
from typing import TYPE_CHECKING, Any

from flowpoint.codec import SerdeCheckpointCodec
from flowpoint.errors import InvalidUpdate, WorkflowError
from flowpoint.graph._builder import BuiltGraph, Subgraph, same_state
from flowpoint.graph._state import WholeState
from flowpoint.ids import MAX_TRACE_ID_LENGTH, TraceId, validate_trace_id
from flowpoint.typed import TypedCheckpointStore

if TYPE_CHECKING:
    from flowpoint.graph._runner import Runner

__all__ = ["Subgraphs", "child_trace"]

# Hex digits of the digest that stands for a child trace's name when it does not fit.
_DIGEST = 16


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
        self, trace: TraceId, step: int, node: str, task_id: str, state: Any, *, alone: bool
    ) -> Any:
        """Run (or resume) subgraph node ``node``'s trace for the task; return the node's update.

        ``step`` is the step the task runs at and ``alone`` says it is the only
        task of its superstep: a subgraph without ``output=`` replaces the
        parent's state, which only a lone task may do.
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
        child = child_trace(trace, task_id, step)
        latest = await runner.store.load_latest(child, runner.graph.hash_u64())
        if latest is None:
            start = state if spec.input is None else await _called(spec.input, state)
            result = await runner.run(child, start)
        else:  # a run of this node that a crash interrupted: go on inside it
            result = await runner.resume(child)
        if result.status != "done":
            raise WorkflowError(
                f"subgraph node {node!r} paused at {result.next_node!r} (trace {child!r}); a "
                f"subgraph cannot pause its parent's run"
            )
        if spec.output is None:
            return WholeState(result.state)
        return await _called(spec.output, state, result.state)


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
