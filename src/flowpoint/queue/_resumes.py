"""A queued resume's update and answer, as the runs table keeps them until a worker applies them.

``queue.resume(trace, update, value=...)`` stores ``{"update": ..., "value": ...}``
(plain data, MessagePack) with the run. A queue whose codec has a key ring seals
it with the ring's primary key, bound to the run's trace id, and stores
``{"key": <key id>, "sealed": <nonce, ciphertext and tag>}`` instead: what a human
gives a paused run is as secret as the run's state.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowpoint.codec import KeyRing
from flowpoint.errors import CodecError, CorruptCheckpoint
from flowpoint.graph._state import to_plain

__all__ = ["decode_resume", "encode_resume"]

_FIELDS = frozenset({"update", "value"})
_SEALED = frozenset({"key", "sealed"})


def encode_resume(given: dict[str, Any], ring: KeyRing | None, trace: str) -> bytes:
    """``given`` as the runs table keeps it; ``TypeError`` if it is not plain data."""
    try:
        plain = msgspec.msgpack.encode(to_plain(given))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the resume of run {trace!r} cannot be stored: {exc}") from None
    if ring is None:
        return plain
    sealed = ring.encrypt(plain, _bound_to(trace))
    return msgspec.msgpack.encode({"key": ring.primary, "sealed": sealed})


def decode_resume(
    stored: bytes, ring: KeyRing | None, trace: str, *, allow_unencrypted: bool = False
) -> dict[str, Any]:
    """The ``{"update": ..., "value": ...}`` a queued resume holds.

    A sealed one needs ``ring`` (:class:`~flowpoint.errors.CodecError` without it,
    or without its key); with ``ring``, an unsealed one is refused unless
    ``allow_unencrypted``, as the codec refuses unencrypted states. Anything
    unreadable is :class:`~flowpoint.errors.CorruptCheckpoint`.
    """
    found = _decoded(stored, trace)
    if isinstance(found, dict) and set(found) == _SEALED:
        key, sealed = found["key"], found["sealed"]
        if not isinstance(key, str) or not isinstance(sealed, bytes):
            raise CorruptCheckpoint(None, f"run {trace!r}: its queued resume is damaged")
        if ring is None or key not in ring:
            raise CodecError(
                f"run {trace!r}: its queued resume is encrypted with key {key!r}, which this "
                f"queue's codec does not hold (RunQueue.open(url, codec=SerdeCheckpointCodec("
                f"encryption=KeyRing(...))))"
            )
        try:
            opened = ring.decrypt(key, sealed, _bound_to(trace))
        except ValueError as exc:
            raise CorruptCheckpoint(None, f"run {trace!r}: its queued resume: {exc}") from None
        found = _decoded(opened, trace)
    elif ring is not None and not allow_unencrypted:
        raise CodecError(
            f"run {trace!r}: its queued resume is not encrypted, and this queue's codec "
            f"encrypts (allow_unencrypted=True reads it)"
        )
    if not isinstance(found, dict) or not set(found) <= _FIELDS:
        raise CorruptCheckpoint(
            None, f"run {trace!r}: a queued resume holds {type(found).__name__}"
        )
    return found


def _decoded(data: bytes, trace: str) -> Any:
    try:
        return msgspec.msgpack.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CorruptCheckpoint(None, f"run {trace!r}: its queued resume: {exc}") from None


def _bound_to(trace: str) -> bytes:
    """What a sealed resume is bound to: moved to another run, it does not open."""
    return b"flowpoint resume\x00" + trace.encode("utf-8", "surrogatepass")
