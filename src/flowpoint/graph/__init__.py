"""The workflow layer: build graphs, fingerprint them, run and resume them durably."""

from flowpoint.graph._builder import END, START, BuiltGraph, Graph, Send
from flowpoint.graph._command import Command
from flowpoint.graph._context import NodeContext
from flowpoint.graph._policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph._runner import Runner, RunResult

__all__ = [
    "END",
    "START",
    "BuiltGraph",
    "Command",
    "Graph",
    "NodeContext",
    "RetentionPolicy",
    "RunResult",
    "Runner",
    "Send",
    "TriggerPolicy",
]
