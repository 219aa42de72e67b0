"""States stored as their changes: a state's top-level fields, and the delta between two.

A MessagePack state whose top level is a map with string keys (a dict, a
dataclass, a ``TypedDict``, a Struct, a pydantic model) splits into its fields,
each kept as the raw MessagePack of its value: a :class:`Frame`. A :class:`Delta`
says how the next state's fields differ from a frame's, field by field:

- a field left out is unchanged;
- ``replaced`` gives a field's whole new value (a new field, too);
- ``appended`` gives the elements added at the end of an array (a chat history);
- ``patched`` gives an array's new length and the elements that changed (records
  edited in place);
- ``keys`` gives the field order when fields were removed or reordered.

Rebuilding a state from a frame and a delta is checked against the size and the
XXH3-64 hash of the state the delta was made from, so a wrong base, a damaged
chain or a bug here is caught before anything is decoded. Nothing here knows
state types, encryption or stores: bytes in, bytes out.
"""

from __future__ import annotations

import functools
from typing import Final

import msgspec
import xxhash

from flowpoint.ids import CheckpointId, TraceId

__all__ = ["Delta", "Frame", "apply_delta", "diff_fields", "join_fields", "split_fields"]

_MAX_ARRAY: Final = 2**32 - 1
_field_decoder = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_element_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_key_encoder = msgspec.msgpack.Encoder()


class Delta(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """How one state's fields differ from its base's (the body of a delta checkpoint)."""

    state_size: int
    state_hash: int
    keys: list[str] | None = None
    replaced: dict[str, msgspec.Raw] = {}
    appended: dict[str, tuple[int, bytes]] = {}
    patched: dict[str, tuple[int, dict[int, msgspec.Raw]]] = {}


class Frame:
    """One stored state as raw fields, with where it sits in its chain of deltas.

    ``chain_start`` is the step of the full checkpoint (keyframe) the chain begins
    with; ``chain_length`` and ``chain_size`` count the deltas since then and
    their stored bytes; ``keyframe_size`` is the keyframe's stored bytes, and
    ``stored_ratio`` its stored bytes over its state's (what compression made of it).
    """

    __slots__ = (
        "_elements",
        "chain_length",
        "chain_size",
        "chain_start",
        "checkpoint_id",
        "fields",
        "keyframe_size",
        "size",
        "step",
        "stored_ratio",
        "trace_id",
    )

    def __init__(
        self,
        checkpoint_id: CheckpointId,
        trace_id: TraceId,
        step: int,
        fields: dict[str, bytes],
        *,
        chain_start: int,
        chain_length: int,
        chain_size: int,
        keyframe_size: int,
        stored_ratio: float | None = None,
        elements: dict[str, list[msgspec.Raw]] | None = None,
        size: int | None = None,
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.trace_id = trace_id
        self.step = step
        self.fields = fields
        self.chain_start = chain_start
        self.chain_length = chain_length
        self.chain_size = chain_size
        self.keyframe_size = keyframe_size
        self.size = state_size(fields) if size is None else size
        self.stored_ratio = (
            keyframe_size / max(self.size, 1) if stored_ratio is None else stored_ratio
        )
        self._elements: dict[str, list[msgspec.Raw]] = elements if elements is not None else {}

    def elements(self, key: str) -> list[msgspec.Raw] | None:
        """The elements of array field ``key`` (split once, then kept), or ``None``."""
        found = self._elements.get(key)
        if found is None:
            found = _split_array(self.fields[key])
            if found is not None:
                self._elements[key] = found
        return found

    def __repr__(self) -> str:
        return (
            f"Frame({self.checkpoint_id}, step={self.step}, fields={list(self.fields)}, "
            f"chain {self.chain_length} from step {self.chain_start})"
        )


def split_fields(state: bytes | memoryview) -> dict[str, bytes] | None:
    """The top-level fields of a MessagePack state; ``None`` if it is not a map of str keys."""
    try:
        raw = _field_decoder.decode(state)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None
    return {key: bytes(value) for key, value in raw.items()}


def state_size(fields: dict[str, bytes]) -> int:
    """Bytes of the state :func:`join_fields` builds from ``fields``."""
    return len(_map_header(len(fields))) + sum(
        len(_key_bytes(key)) + len(value) for key, value in fields.items()
    )


def join_fields(fields: dict[str, bytes]) -> bytes:
    """The MessagePack map of ``fields``, in their order."""
    parts = [_map_header(len(fields))]
    for key, value in fields.items():
        parts.append(_key_bytes(key))
        parts.append(value)
    return b"".join(parts)


def fields_hash(fields: dict[str, bytes]) -> int:
    """XXH3-64 of :func:`join_fields`, without building it."""
    digest = xxhash.xxh3_64(_map_header(len(fields)))
    for key, value in fields.items():
        digest.update(_key_bytes(key))
        digest.update(value)
    return digest.intdigest()


def diff_fields(
    base: Frame,
    fields: dict[str, bytes],
    new_elements: dict[str, list[msgspec.Raw]],
    size: int | None = None,
) -> Delta:
    """The delta that turns ``base``'s fields into ``fields`` (of ``size`` bytes, if known).

    Arrays split while diffing are left in ``new_elements``, for the new frame.
    """
    replaced: dict[str, msgspec.Raw] = {}
    appended: dict[str, tuple[int, bytes]] = {}
    patched: dict[str, tuple[int, dict[int, msgspec.Raw]]] = {}
    for key, value in fields.items():
        old = base.fields.get(key)
        if old is None:
            replaced[key] = msgspec.Raw(value)
        elif old != value:
            change = _array_change(base, key, value, new_elements)
            if isinstance(change, tuple):
                appended[key] = change
            elif isinstance(change, dict):
                patched[key] = (_array_count(value) or 0, change)
            else:
                replaced[key] = msgspec.Raw(value)
    same_order = list(base.fields) == list(fields)
    return Delta(
        state_size=state_size(fields) if size is None else size,
        state_hash=fields_hash(fields),
        keys=None if same_order else list(fields),
        replaced=replaced,
        appended=appended,
        patched=patched,
    )


def apply_delta(
    base: Frame,
    delta: Delta,
    max_state_size: int,
    new_elements: dict[str, list[msgspec.Raw]] | None = None,
) -> dict[str, bytes]:
    """``base``'s fields changed as ``delta`` says, checked against its size and hash.

    Arrays patched element by element are left split in ``new_elements``.

    Raises ``ValueError`` saying what does not fit: a delta that names fields
    or elements its base lacks, grows past ``max_state_size``, or rebuilds
    another state than the one it was made from.
    """
    if not 0 <= delta.state_size <= max_state_size:
        raise ValueError(f"the state would be {delta.state_size} bytes, over {max_state_size}")
    keys = list(base.fields) if delta.keys is None else delta.keys
    if len(set(keys)) != len(keys):
        raise ValueError("the delta lists a field twice")
    changed = (delta.replaced.keys(), delta.appended.keys(), delta.patched.keys())
    seen: set[str] = set()
    for names in changed:
        for key in names:
            if key in seen:
                raise ValueError(f"the delta changes field {key!r:.80} twice")
            seen.add(key)
    fields: dict[str, bytes] = {}
    for key in keys:
        if key in delta.replaced:
            value: bytes | None = bytes(delta.replaced[key])
        elif key in delta.appended:
            value = _append(base, key, *delta.appended[key])
        elif key in delta.patched:
            length, changes = delta.patched[key]
            value = _patch(base, key, length, changes, {} if new_elements is None else new_elements)
        else:
            value = base.fields.get(key)
        if value is None:
            raise ValueError(f"field {key!r:.80} is in neither the base nor the delta")
        fields[key] = value
    stray = seen - fields.keys()
    if stray:
        raise ValueError(f"the delta changes fields it then leaves out: {sorted(stray)!r:.120}")
    rebuilt_size = state_size(fields)
    if rebuilt_size != delta.state_size:
        raise ValueError(
            f"the rebuilt state is {rebuilt_size} bytes, the delta says {delta.state_size}"
        )
    if fields_hash(fields) != delta.state_hash:
        raise ValueError("the rebuilt state's hash differs from the delta's: wrong base")
    return fields


# -- arrays -----------------------------------------------------------------------------


def _array_change(
    base: Frame, key: str, value: bytes, new_elements: dict[str, list[msgspec.Raw]]
) -> tuple[int, bytes] | dict[int, msgspec.Raw] | None:
    """How array field ``key`` changed: appended elements, patched ones, or ``None``."""
    old = base.fields[key]
    old_header = _array_header(old)
    new_header = _array_header(value)
    if old_header is None or new_header is None:
        return None
    old_count, old_start = old_header
    new_count, new_start = new_header
    old_body = memoryview(old)[old_start:]
    # startswith compares in place: slicing 100 KB arrays to compare them costs far more.
    if new_count >= old_count and value.startswith(old_body, new_start):
        return new_count - old_count, value[new_start + len(old_body) :]
    # Patching needs both arrays split: worth it only for long arrays.
    if new_count < 16:
        return None
    old_elements = base.elements(key)
    elements = _split_array(value)
    if old_elements is None or elements is None:
        return None
    new_elements[key] = elements
    pairs = zip(elements, old_elements, strict=False)  # the shorter decides; the rest below
    changed = [index for index, (new, old) in enumerate(pairs) if new != old]
    changed.extend(range(len(old_elements), len(elements)))
    changes = {index: elements[index] for index in changed}
    if sum(len(element) + 5 for element in changes.values()) > len(value) // 2:
        return None
    return changes


def _append(base: Frame, key: str, count: int, tail: bytes) -> bytes | None:
    old = base.fields.get(key)
    header = None if old is None else _array_header(old)
    if old is None or header is None:
        raise ValueError(f"the delta appends to field {key!r:.80}, which is not an array")
    old_count, start = header
    if count < 0 or old_count + count > _MAX_ARRAY:
        raise ValueError(f"the delta appends {count} elements to field {key!r:.80}")
    return b"".join((_encode_array_header(old_count + count), memoryview(old)[start:], tail))


def _patch(
    base: Frame,
    key: str,
    length: int,
    changes: dict[int, msgspec.Raw],
    new_elements: dict[str, list[msgspec.Raw]],
) -> bytes | None:
    if key not in base.fields:
        raise ValueError(f"the delta patches field {key!r:.80}, which the base lacks")
    old_elements = base.elements(key)
    if old_elements is None:
        raise ValueError(f"the delta patches field {key!r:.80}, which is not an array")
    if not 0 <= length <= len(old_elements) + len(changes):
        raise ValueError(f"the delta gives field {key!r:.80} an impossible length {length}")
    elements = old_elements[:length]
    for index, element in sorted(changes.items()):
        if not 0 <= index < length:
            raise ValueError(f"the delta patches element {index} of {length} in {key!r:.80}")
        if index < len(elements):
            elements[index] = element
        elif index == len(elements):
            elements.append(element)
        else:
            raise ValueError(f"the delta leaves a hole at element {len(elements)} of {key!r:.80}")
    if len(elements) != length:
        raise ValueError(f"the delta leaves field {key!r:.80} short of its length {length}")
    new_elements[key] = elements
    return _encode_array_header(length) + b"".join(elements)


def _split_array(value: bytes) -> list[msgspec.Raw] | None:
    if _array_header(value) is None:
        return None
    try:
        return _element_decoder.decode(value)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None


def _array_count(value: bytes) -> int | None:
    header = _array_header(value)
    return None if header is None else header[0]


def _array_header(value: bytes) -> tuple[int, int] | None:
    """``(element count, header length)`` of a MessagePack array, or ``None``."""
    if not value:
        return None
    first = value[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1
    if first == 0xDC and len(value) >= 3:
        return int.from_bytes(value[1:3], "big"), 3
    if first == 0xDD and len(value) >= 5:
        return int.from_bytes(value[1:5], "big"), 5
    return None


def _encode_array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 2**16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x80 | count,))
    if count < 2**16:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


@functools.lru_cache(maxsize=1024)
def _key_bytes(key: str) -> bytes:
    return _key_encoder.encode(key)
