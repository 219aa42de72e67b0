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

A delta records the size and the XXH3-64 hash of the state it was made from.
:class:`Rebuild` applies a chain of deltas at the cost of what they hold, checks
each one's size as it goes and the hash of the state the last one leaves, so a
wrong base, a damaged chain or a bug here is caught before anything is decoded.
Nothing here knows state types, encryption or stores: bytes in, bytes out.
"""

from __future__ import annotations

import functools
from typing import Final

import msgspec
import xxhash

from flowpoint.codec._bounds import element_cost
from flowpoint.ids import CheckpointId, TraceId

__all__ = [
    "Budget",
    "Delta",
    "Frame",
    "Rebuild",
    "array_count",
    "diff_fields",
    "encode_array_header",
    "fields_hash",
    "join_fields",
    "split_fields",
    "state_size",
]

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
    ``size`` is the state's bytes; :attr:`held` the memory the frame holds.

    Array elements split out of a field are views of that field's own bytes, never
    of another buffer, so that what a frame holds is what :attr:`held` counts.
    """

    __slots__ = (
        "_elements",
        "_held",
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
        self._held = (
            _HELD_FRAME
            + sum(len(value) for value in fields.values())
            + _HELD_FIELD * len(fields)
            + sum(_held_elements(split) for split in self._elements.values())
        )

    @property
    def held(self) -> int:
        """Bytes of memory the frame holds: its fields, and the elements split out of them.

        Grows when :meth:`elements` splits an array.
        """
        return self._held

    def elements(self, key: str, budget: Budget | None = None) -> list[msgspec.Raw] | None:
        """The elements of array field ``key`` (split once, then kept), or ``None``.

        ``None`` too if splitting them would take more than is left in ``budget``.
        """
        found = self._elements.get(key)
        if found is None:
            found = _split_array(self.fields[key], budget)
            if found is not None:
                self._elements[key] = found
                self._held += _held_elements(found)
        return found

    def __repr__(self) -> str:
        return (
            f"Frame({self.checkpoint_id}, step={self.step}, fields={list(self.fields)}, "
            f"chain {self.chain_length} from step {self.chain_start})"
        )


# What a frame holds besides the bytes of its fields (CPython 3.11, 64-bit, with
# room to spare): the frame and its dict of fields; per field, the bytes object's
# header, its key and its entry; per element split out, a msgspec.Raw and its slot.
_HELD_FRAME = 512
_HELD_FIELD = 160
_HELD_ELEMENT = 64
_HELD_LIST = 64


def _held_elements(elements: list[msgspec.Raw]) -> int:
    return _HELD_LIST + _HELD_ELEMENT * len(elements)


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
    budget: Budget | None = None,
) -> Delta:
    """The delta that turns ``base``'s fields into ``fields`` (of ``size`` bytes, if known).

    Arrays split while diffing are left in ``new_elements``, for the new frame. An
    array whose elements would take more than is left in ``budget`` is replaced
    whole rather than split.
    """
    replaced: dict[str, msgspec.Raw] = {}
    appended: dict[str, tuple[int, bytes]] = {}
    patched: dict[str, tuple[int, dict[int, msgspec.Raw]]] = {}
    for key, value in fields.items():
        old = base.fields.get(key)
        if old is None:
            replaced[key] = msgspec.Raw(value)
        elif old != value:
            change = _array_change(base, key, value, new_elements, budget)
            if isinstance(change, tuple):
                appended[key] = change
            elif isinstance(change, dict):
                patched[key] = (array_count(value) or 0, change)
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


class Rebuild:
    """A state rebuilt from a frame through one delta after another.

    Each :meth:`apply` costs what its delta holds, not what the state holds: fields
    are kept as they are until the end (an array appended to keeps its pieces; one
    patched keeps its elements), so a chain of many small deltas on a large state
    costs the deltas plus one join of the state, in :meth:`finish`.

    Checked as each delta is applied: what it names exists and fits (fields, arrays,
    element indices), and the state it leaves has the size the delta records, at
    most ``max_state_size`` (sizes are kept per field, so this costs nothing). The
    hash is checked once, by :meth:`finish`, on the state the last delta leaves:
    an earlier delta that went wrong either shows there, or was overwritten by a
    later one, and then the state is still exactly the one the last delta was made
    from. ``ValueError`` says what does not fit.
    """

    def __init__(self, base: Frame, max_state_size: int, budget: Budget | None = None) -> None:
        self.max_state_size = max_state_size
        self._budget = Budget(None) if budget is None else budget
        self._order = list(base.fields)
        self._keys = set(self._order)
        self._values: dict[str, bytes | _Array] = dict(base.fields)
        # The state's bytes but for its map header: each key and its value.
        self._entries = base.size - len(_map_header(len(self._order)))

    @property
    def size(self) -> int:
        """Bytes of the state as it stands."""
        return len(_map_header(len(self._order))) + self._entries

    def apply(self, delta: Delta) -> None:
        """Change the state as ``delta`` says; ``ValueError`` if it does not fit."""
        if not 0 <= delta.state_size <= self.max_state_size:
            raise ValueError(
                f"the state would be {delta.state_size} bytes, over {self.max_state_size}"
            )
        keys = self._keys
        if delta.keys is not None:
            keys = set(delta.keys)
            if len(keys) != len(delta.keys):
                raise ValueError("the delta lists a field twice")
        seen: set[str] = set()
        for names in (delta.replaced, delta.appended, delta.patched):
            for key in names:
                if key in seen:
                    raise ValueError(f"the delta changes field {key!r:.80} twice")
                seen.add(key)
        stray = seen - keys
        if stray:
            raise ValueError(f"the delta changes fields it then leaves out: {sorted(stray)!r:.120}")
        values = self._values
        if delta.keys is not None:
            for key in [key for key in values if key not in keys]:
                self._set(key, None)
        for key, raw in delta.replaced.items():
            self._set(key, bytes(raw))
        for key, (count, tail) in delta.appended.items():
            array = self._array(key, "appends to")
            before = array.size
            array.append(key, count, tail)
            self._entries += array.size - before
        for key, (length, changes) in delta.patched.items():
            array = self._array(key, "patches")
            before = array.size
            array.patch(key, length, changes)
            self._entries += array.size - before
        if delta.keys is not None:
            for key in delta.keys:
                if key not in values:
                    raise ValueError(f"field {key!r:.80} is in neither the base nor the delta")
            self._order, self._keys = list(delta.keys), keys
        if self.size != delta.state_size:
            raise ValueError(
                f"the rebuilt state is {self.size} bytes, the delta says {delta.state_size}"
            )

    def finish(self, state_hash: int) -> dict[str, bytes]:
        """The fields of the state, checked against ``state_hash`` (the last delta's)."""
        fields = {key: _value(self._values[key]) for key in self._order}
        if fields_hash(fields) != state_hash:
            raise ValueError(
                "the rebuilt state's hash differs from the one the delta records: "
                "a wrong base or a damaged chain"
            )
        return fields

    def _set(self, key: str, value: bytes | None) -> None:
        """Replace (or, with ``None``, remove) a field, keeping the size."""
        old = self._values.pop(key, None)
        if old is not None:
            self._entries -= len(_key_bytes(key)) + _value_size(old)
        if value is not None:
            self._values[key] = value
            self._entries += len(_key_bytes(key)) + len(value)

    def _array(self, key: str, action: str) -> _Array:
        value = self._values.get(key)
        if value is None:
            raise ValueError(f"the delta {action} field {key!r:.80}, which the base lacks")
        if isinstance(value, _Array):
            return value
        header = _array_header(value)
        if header is None:
            raise ValueError(f"the delta {action} field {key!r:.80}, which is not an array")
        array = self._values[key] = _Array(header[0], memoryview(value)[header[1] :], self._budget)
        return array


# -- arrays -----------------------------------------------------------------------------


class Budget:
    """Bytes that array elements split out one by one may still take (``None``: no bound)."""

    __slots__ = ("left",)

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, count: int) -> bool:
        """Count ``count`` elements against the budget; ``False`` (counting nothing) if over."""
        if self.left is None:
            return True
        cost = element_cost(count)
        if cost > self.left:
            return False
        self.left -= cost
        return True

    def split(self, value: bytes) -> list[msgspec.Raw] | None:
        """The elements of array ``value``; ``ValueError`` if they would pass the budget."""
        header = _array_header(value)
        if header is not None and not self.take(header[0]):
            raise ValueError(
                f"an array of {header[0]} elements would split into more than is left of "
                f"max_decoded_size"
            )
        return _split_array(value)


class _Array:
    """An array field being rebuilt: its element count and its body.

    The body is kept as the pieces it was appended in, until a patch needs its
    elements one by one; then as its elements (copies, never views of a delta's
    buffer, which would keep the whole delta alive).
    """

    __slots__ = ("body_size", "budget", "count", "elements", "pieces")

    def __init__(self, count: int, body: memoryview, budget: Budget) -> None:
        self.budget = budget
        self.count = count
        self.pieces: list[bytes | memoryview] = [body]
        self.elements: list[bytes | msgspec.Raw] | None = None
        self.body_size = len(body)

    @property
    def size(self) -> int:
        return len(encode_array_header(self.count)) + self.body_size

    def append(self, key: str, count: int, tail: bytes) -> None:
        if count < 0 or self.count + count > _MAX_ARRAY:
            raise ValueError(f"the delta appends {count} elements to field {key!r:.80}")
        if self.elements is not None:
            added = self.budget.split(encode_array_header(count) + tail)
            if added is None or len(added) != count:
                raise ValueError(
                    f"the delta appends to field {key!r:.80} what is not {count} elements"
                )
            self.elements.extend(added)
        else:
            self.pieces.append(tail)
        self.count += count
        self.body_size += len(tail)

    def patch(self, key: str, length: int, changes: dict[int, msgspec.Raw]) -> None:
        elements = self._split(key)
        if not 0 <= length <= len(elements) + len(changes):
            raise ValueError(f"the delta gives field {key!r:.80} an impossible length {length}")
        for dropped in elements[length:]:
            self.body_size -= len(dropped)
        del elements[length:]
        for index, element in sorted(changes.items()):
            if not 0 <= index < length:
                raise ValueError(f"the delta patches element {index} of {length} in {key!r:.80}")
            new = bytes(element)
            if index < len(elements):
                self.body_size += len(new) - len(elements[index])
                elements[index] = new
            elif index == len(elements):
                self.body_size += len(new)
                elements.append(new)
            else:
                raise ValueError(
                    f"the delta leaves a hole at element {len(elements)} of {key!r:.80}"
                )
        if len(elements) != length:
            raise ValueError(f"the delta leaves field {key!r:.80} short of its length {length}")
        self.count = length

    def encoded(self) -> bytes:
        parts = self.pieces if self.elements is None else self.elements
        return b"".join((encode_array_header(self.count), *parts))

    def _split(self, key: str) -> list[bytes | msgspec.Raw]:
        if self.elements is None:
            found = self.budget.split(self.encoded())
            if found is None:
                raise ValueError(f"the delta patches field {key!r:.80}, which is not an array")
            self.elements = list(found)
            self.pieces = []
        return self.elements


def _value(value: bytes | _Array) -> bytes:
    return value.encoded() if isinstance(value, _Array) else value


def _value_size(value: bytes | _Array) -> int:
    return value.size if isinstance(value, _Array) else len(value)


def _array_change(
    base: Frame,
    key: str,
    value: bytes,
    new_elements: dict[str, list[msgspec.Raw]],
    budget: Budget | None,
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
    old_elements = base.elements(key, budget)
    elements = _split_array(value, budget)
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


def _split_array(value: bytes, budget: Budget | None = None) -> list[msgspec.Raw] | None:
    header = _array_header(value)
    if header is None or (budget is not None and not budget.take(header[0])):
        return None
    try:
        return _element_decoder.decode(value)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None


def array_count(value: bytes) -> int | None:
    """The element count of a MessagePack array, or ``None`` if ``value`` is not one."""
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


def encode_array_header(count: int) -> bytes:
    """The MessagePack header of an array of ``count`` elements."""
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
