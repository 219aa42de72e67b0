"""flowpoint's benchmark harness: the workloads of docs/workloads.md, run against flowpoint's
backends and LangGraph's checkpointers in one process, on one machine.

Run it from the repository root::

    python -m benchmarks [--smoke] [--out DIR] [--repeat N] [--only W1,W2,W3]

It writes ``results.json``, ``results.md``, ``latency.png`` and ``bytes.png``.
"""
