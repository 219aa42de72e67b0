"""The workflow layer: build graphs, fingerprint them, run and resume them durably."""

from flowpoint.graph._builder import END, START, BuiltGraph, Graph, Send
from flowpoint.graph._command import Command
from flowpoint.graph._context import NodeContext
from flowpoint.graph._events import (
    CheckpointSaved,
    Interrupted,
    NodeFinished,
    NodeStarted,
    RunEvent,
    RunFinished,
)
from flowpoint.graph._interrupt import interrupt
from flowpoint.graph._policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph._retry import Retry
from flowpoint.graph._runner import Runner, RunResult

__all__ = [
    "END",
    "START",
    "BuiltGraph",
    "CheckpointSaved",
    "Command",
    "Graph",
    "Interrupted",
    "NodeContext",
    "NodeFinished",
    "NodeStarted",
    "RetentionPolicy",
    "Retry",
    "RunEvent",
    "RunFinished",
    "RunResult",
    "Runner",
    "Send",
    "TriggerPolicy",
    "interrupt",
]
