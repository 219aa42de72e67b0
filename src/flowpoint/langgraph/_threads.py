"""LangGraph threads and checkpoint namespaces as flowpoint traces, and back.

A thread's root namespace (``""``) is the trace named like the thread; a
subgraph's namespace is the trace ``<thread>#<namespace>``. In both parts ``%``,
``#`` and characters that are not printable are written as ``%XX``, the bytes of
their UTF-8, so that every trace id is printable text, splits at its one ``#``
and reads back as the thread and namespace it was made from:

>>> trace_for("user-42/session-7", "")
'user-42/session-7'
>>> trace_for("t#1", "tools:4f1c|inner:9a2e")
't%231#tools:4f1c|inner:9a2e'
>>> thread_of("t%231#tools:4f1c|inner:9a2e")
('t#1', 'tools:4f1c|inner:9a2e')
"""

from __future__ import annotations

import functools
import re

from flowpoint.errors import InvalidTraceId
from flowpoint.ids import MAX_TRACE_ID_LENGTH, TraceId, validate_trace_id

__all__ = ["thread_key", "thread_of", "trace_for"]

_SEPARATOR = "#"
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


def thread_key(thread_id: object) -> str:
    """The thread id as the text LangGraph's SQL savers store: ``str()`` of it.

    Raises :class:`~flowpoint.errors.InvalidTraceId` for ``None`` and the empty string.
    """
    if thread_id is None:
        raise InvalidTraceId("the config names no thread_id")
    text = thread_id if isinstance(thread_id, str) else str(thread_id)
    if not text:
        raise InvalidTraceId("a thread_id must not be empty")
    return text


def trace_for(thread_id: str, checkpoint_ns: str) -> TraceId:
    """The trace that holds a thread's checkpoints in one namespace.

    Raises :class:`~flowpoint.errors.InvalidTraceId` (a ``ValueError``) when the
    escaped thread and namespace do not fit in a trace id's 256 characters.
    """
    if not isinstance(checkpoint_ns, str):
        raise InvalidTraceId(f"a checkpoint_ns must be a str, not {type(checkpoint_ns).__name__}")
    return _trace_for(thread_id, checkpoint_ns)


@functools.lru_cache(maxsize=4096)  # every call of the saver names its thread again
def _trace_for(thread_id: str, checkpoint_ns: str) -> TraceId:
    trace = _escape(thread_id)
    if checkpoint_ns:
        trace = f"{trace}{_SEPARATOR}{_escape(checkpoint_ns)}"
    if len(trace) > MAX_TRACE_ID_LENGTH:
        raise InvalidTraceId(
            f"thread {thread_id[:40]!r} with namespace {checkpoint_ns[:80]!r} makes a trace id "
            f"of {len(trace)} characters; flowpoint keeps at most {MAX_TRACE_ID_LENGTH} "
            f"(the thread id, the namespace and '#' between them, with '%', '#' and "
            f"unprintable characters written as %XX): use a shorter thread id"
        )
    return validate_trace_id(trace)


def thread_of(trace_id: str) -> tuple[str, str] | None:
    """The thread and namespace a trace id was made from; ``None`` if no thread makes it."""
    thread_part, _, ns_part = trace_id.partition(_SEPARATOR)
    thread, ns = _unescape(thread_part), _unescape(ns_part)
    if thread is None or ns is None or not thread:
        return None
    if ns_part and not ns:
        return None
    return (thread, ns) if trace_for(thread, ns) == trace_id else None


def _escape(text: str) -> str:
    if text.isprintable() and "%" not in text and _SEPARATOR not in text:
        return text
    try:
        return "".join(
            ch
            if ch.isprintable() and ch not in "%#"
            else "".join(f"%{byte:02X}" for byte in ch.encode("utf-8"))
            for ch in text
        )
    except UnicodeEncodeError:
        raise InvalidTraceId(
            f"{text[:40]!r} holds a lone surrogate, which no trace id can hold"
        ) from None


def _unescape(text: str) -> str | None:
    if "%" not in text:
        return text
    try:
        return _ESCAPED.sub(
            lambda found: bytes.fromhex(found.group().replace("%", "")).decode("utf-8"), text
        )
    except UnicodeDecodeError:
        return None
