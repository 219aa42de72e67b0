"""flowpoint as the checkpointer of LangGraph graphs: ``FlowpointSaver``.

::

    from flowpoint.langgraph import FlowpointSaver

    with FlowpointSaver.from_url("sqlite:///agent.db") as saver:
        graph = builder.compile(checkpointer=saver)

Needs the ``langgraph`` extra: ``pip install 'flowpoint[langgraph]'``. The rest of
flowpoint never imports LangGraph.
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401 - checked first, for the message below
except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
    raise ImportError(
        f"flowpoint.langgraph needs LangGraph ({exc.name or exc}): "
        f"pip install 'flowpoint[langgraph]'"
    ) from exc

from flowpoint.langgraph._saver import FlowpointSaver

__all__ = ["FlowpointSaver"]
