"""Node context: what a node or router learns about the step it runs at.

A function declares that it wants it by its second positional parameter::

    def charge(order: Order, ctx: NodeContext) -> dict: ...

The parameter is passed when it is annotated ``NodeContext``, or when it is
required and unannotated; a second parameter with a default of its own is left
alone, so a function of the state alone, or with options of its own, is called
as before.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowpoint.errors import GraphDefinitionError
from flowpoint.ids import CheckpointId, TraceId

__all__ = ["NodeContext", "input_type", "node_context", "takes_context"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class NodeContext:
    """Where a node runs, for a node or router that declares a second parameter.

    - ``trace_id``: the trace being run.
    - ``step``: the step the node runs at: the step of ``checkpoint_id``, plus the
      supersteps run since it that had no checkpoint of their own (under the
      ``ON_CHANGE`` and ``MANUAL`` triggers). Under the default trigger it is the
      step of ``checkpoint_id``, and the superstep's result is saved as ``step + 1``.
    - ``node``: the node's name; a router gets the context of the node it routes
      after.
    - ``checkpoint_id``: the checkpoint the node starts from: the last one saved
      on the way to it (under the default trigger, the one holding the state the
      node receives).
    - ``idempotency_key``: 32 hex characters, the same every time this node runs
      at this point of the trace (a rerun after a crash, a retry) and different
      for every other run of a node, including the other tasks of its superstep
      (each ``Send`` to a node is a task of its own). Key external side effects
      on it (a payment API's idempotency key, a unique column), and a side
      effect a rerun repeats happens once. A resume with an update, or a fork,
      starts from a new checkpoint, so what runs after it gets new keys.
    - ``attempt``: 1 for the first try at this step in this process, then 2, 3,
      ... for the tries a node's :class:`~flowpoint.Retry` policy makes, under
      the same idempotency key.
    """

    trace_id: TraceId
    step: int
    node: str
    checkpoint_id: CheckpointId
    idempotency_key: str
    attempt: int = 1


def node_context(
    trace_id: TraceId,
    checkpoint_id: CheckpointId,
    step: int,
    since: int,
    node: str,
    task_id: str | None = None,
) -> NodeContext:
    """The context of a task of ``node``, ``since`` supersteps after the checkpoint it starts from.

    The key depends only on the trace, that checkpoint, ``since`` and the task's
    id (``task_id``, the node's name by default: a node triggered by edges), so
    a rerun from the same checkpoint derives the same key in any process.
    """
    task = node if task_id is None else task_id
    material = json.dumps(["flowpoint.node", trace_id, str(checkpoint_id), since, task])
    key = hashlib.blake2b(material.encode("utf-8"), digest_size=16).hexdigest()
    return NodeContext(trace_id, step + since, node, checkpoint_id, key)


def input_type(function: Callable[..., Any]) -> Any:
    """The type ``function``'s first parameter is annotated with; ``Any`` when there is none.

    A ``Send``'s argument, stored as plain data, is given to its node as this type.
    """
    try:
        signature = _signature(function)
    except (TypeError, ValueError):
        return Any
    for parameter in signature.parameters.values():
        if parameter.kind in _POSITIONAL or parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            annotation = parameter.annotation
            if annotation is inspect.Parameter.empty or isinstance(annotation, str):
                return Any  # none, or one that does not resolve: plain data
            return Any if parameter.kind is inspect.Parameter.VAR_POSITIONAL else annotation
    return Any


def takes_context(function: Callable[..., Any], role: str) -> bool:
    """Whether ``function`` (``role`` names it in errors) wants a :class:`NodeContext`.

    Raises :class:`~flowpoint.errors.GraphDefinitionError` for a signature that
    cannot be called with the state (and a context): no parameter, more than two
    required ones, a required keyword-only one, or a ``NodeContext`` parameter
    that is not the second positional one.
    """
    try:
        signature = _signature(function)
    except (TypeError, ValueError):  # no signature to read (some builtins): f(state) it is
        return False
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    keywords = [
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if keywords:
        raise GraphDefinitionError(
            f"{role} requires keyword-only parameter(s) {keywords}; it is called with the "
            f"state, and a NodeContext if it declares one as its second parameter"
        )
    if not positional and not variadic:
        raise GraphDefinitionError(f"{role} takes no parameter; it is called with the state")
    required = [p.name for p in positional if p.default is inspect.Parameter.empty]
    if len(required) > 2:
        raise GraphDefinitionError(
            f"{role} requires {len(required)} parameters {required}; it is called with the "
            f"state, and a NodeContext if it declares one as its second parameter"
        )
    for index, parameter in enumerate(parameters):
        context = _is_context(parameter.annotation)
        if context and not (index == 1 and parameter.kind in _POSITIONAL):
            raise GraphDefinitionError(
                f"{role} annotates its parameter {parameter.name!r} NodeContext; the node "
                f"context is passed as the second positional parameter only"
            )
    if len(positional) < 2:
        return False
    second = positional[1]
    if _is_context(second.annotation):
        return True
    if second.default is not inspect.Parameter.empty:
        return False  # an option of the function's own: left to its default
    if second.annotation is not inspect.Parameter.empty:
        raise GraphDefinitionError(
            f"{role} requires a second parameter {second.name!r} annotated "
            f"{_annotation_name(second.annotation)}; the runner passes a NodeContext there "
            f"(annotate it flowpoint.NodeContext)"
        )
    return True


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(function, eval_str=True)
    except (TypeError, ValueError):
        raise
    except Exception:  # postponed annotations that do not resolve: judged as strings
        return inspect.signature(function)


def _is_context(annotation: Any) -> bool:
    """``NodeContext``, or ``NodeContext | None``, resolved or as a string."""
    if annotation is NodeContext or NodeContext in typing.get_args(annotation):
        return True
    return isinstance(annotation, str) and re.search(r"\bNodeContext\b", annotation) is not None


def _annotation_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__qualname__", None) or repr(annotation)
