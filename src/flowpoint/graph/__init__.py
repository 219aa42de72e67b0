"""The workflow layer: build graphs, fingerprint them, run and resume them durably."""

from flowpoint.graph._context import NodeContext
from flowpoint.graph.builder import END, START, BuiltGraph, Graph, Send
from flowpoint.graph.policies import RetentionPolicy, TriggerPolicy
from flowpoint.graph.runner import Runner, RunResult

__all__ = [
    "END",
    "START",
    "BuiltGraph",
    "Graph",
    "NodeContext",
    "RetentionPolicy",
    "RunResult",
    "Runner",
    "Send",
    "TriggerPolicy",
]
