"""How much memory decoding a body would build, estimated from its bytes before it is decoded.

A MessagePack or JSON body of a few bytes per value can decode into objects of
tens of bytes each: a ~2 KB zstd frame of 64 million empty arrays decodes to
about 4.5 GiB of lists. :func:`check_decoded_size` walks the encoded bytes and
adds up what each value decodes to (an upper bound for CPython 3.11, the slot
in its container included), and refuses a body whose total passes the limit,
before anything is decoded.

What containers cost depends on the state type (:class:`Costs`: dicts and lists,
or class instances with their defaults, or sets); the rest does not. A body
shorter than ``limit / Costs.per_byte`` is passed without a look (136 bytes per
byte for dicts and lists: 7.5 MiB under a 1 GiB limit), since no byte of it can
decode to more. A JSON body is estimated from counts of its punctuation, at C speed.
A MessagePack body is walked: at C speed over runs of values whose size their
first byte gives (numbers, short strings, empty containers), and a step in
Python for each container with elements or long string.

:func:`element_cost` is what array elements split out one by one (each a
``msgspec.Raw``) take, which deltas count against the same limit.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Final

__all__ = ["PLAIN", "Costs", "check_decoded_size", "element_cost"]

# Bytes a decoded value takes (CPython 3.11, 64-bit, rounded up), its slot in its
# container included.
_ENTRY = 160  # a map's entry: its slot in the dict's table, with room for resizing
_STR = 72  # the str object's header, and its slot; then up to 4 bytes per UTF-8 byte
_BIN = 56
_EXT = 112
_NUMBER = 48  # an int or float object (large ints included), and its slot
_SMALL = 8  # a value CPython shares (None, bools, small ints, "", 1-character strings)
_RAW = 64  # a msgspec.Raw split out of an array, and its slot


@dataclasses.dataclass(frozen=True, slots=True)
class Costs:
    """What containers decode to, at most, for one state type (the rest does not depend on it).

    ``map_base`` is an empty map (a dict, or the largest class instance the type
    declares, defaults filled in); ``array_base`` an empty array and
    ``array_element`` each element's share (more where the type holds sets).
    ``per_byte`` is the most an encoded byte can decode to: no body shorter than
    ``limit / per_byte`` passes ``limit``.
    """

    map_base: int
    array_base: int
    array_element: int
    per_byte: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        per_byte = 8 + max(
            self.map_base + _SMALL,
            (self.map_base + _ENTRY + 2 * _SMALL + 1) // 2,  # {0: {0: ...}}: 2 bytes a level
            self.array_base + self.array_element,  # [[...]]: one byte a level
        )
        object.__setattr__(self, "per_byte", per_byte)


PLAIN: Final = Costs(map_base=80, array_base=72, array_element=8)
"""Maps decode to dicts, arrays to lists."""
# Values whose size the first byte gives take at most this per byte (a negative
# fixint: one byte, an int object and its slot), but for empty maps and arrays,
# counted apart.
_FLAT_PER_BYTE = 48
_WINDOW = 1 << 20  # bytes walked at once in one run

# MessagePack: for each first byte whose value has a fixed size, the size and the cost.
_FIXED: dict[int, tuple[int, int]] = {}
for _b in range(0x00, 0x80):
    _FIXED[_b] = (1, _SMALL)
for _b in range(0xE0, 0x100):
    _FIXED[_b] = (1, _SMALL if _b >= 0xFB else _NUMBER)  # -5..-1 are shared
for _b in (0xC0, 0xC2, 0xC3, 0xA0):
    _FIXED[_b] = (1, _SMALL)
_FIXED[0x80] = (1, 0)  # empty containers: what they cost depends on the state type
_FIXED[0x90] = (1, 0)
for _n in range(1, 32):
    _FIXED[0xA0 | _n] = (1 + _n, _STR + 4 * _n)
for _b, _size in ((0xCA, 5), (0xCB, 9), (0xCD, 3), (0xCE, 5), (0xCF, 9)):
    _FIXED[_b] = (_size, _NUMBER)
for _b, _size in ((0xD0, 2), (0xD1, 3), (0xD2, 5), (0xD3, 9)):
    _FIXED[_b] = (_size, _NUMBER)
_FIXED[0xCC] = (2, _SMALL)  # 0 to 255: shared
for _b, _n in ((0xD4, 1), (0xD5, 2), (0xD6, 4), (0xD7, 8), (0xD8, 16)):
    _FIXED[_b] = (2 + _n, _EXT + _n)


def _flat_pattern() -> re.Pattern[bytes]:
    """A run of values whose size the first byte (or, for short str8/bin8, the second) gives."""
    by_size: dict[int, list[int]] = {}
    for byte, (size, _) in _FIXED.items():
        by_size.setdefault(size, []).append(byte)
    branches = [
        b"["
        + b"".join(re.escape(bytes([b])) for b in sorted(firsts))
        + b"]"
        + (b"[\\s\\S]{%d}" % (size - 1) if size > 1 else b"")
        for size, firsts in sorted(by_size.items())
    ]
    for marker in (b"\\xc4", b"\\xd9"):  # bin8 and str8 of up to 31 bytes
        lengths = [re.escape(bytes([n])) + b"[\\s\\S]{%d}" % n for n in range(32)]
        branches.append(marker + b"(?:" + b"|".join(lengths) + b")")
    # Possessive: nothing is ever given back, so the engine keeps no state per value.
    return re.compile(b"(?:" + b"|".join(branches) + b")++")


_FLAT = _flat_pattern()
# Values CPython shares, each a slot and nothing more: nil, bools, small ints, "" and
# 1-character ASCII strings.
_SHARED = re.compile(rb"(?:[\x00-\x7f\xa0\xc0\xc2\xc3\xfb-\xff]|\xcc[\s\S]|\xa1[\x00-\x7f])++")


@functools.cache
def _same(first: int) -> re.Pattern[bytes]:
    """A run of values with the same first byte and so the same size and cost."""
    size = _FIXED[first][0]
    marker = re.escape(bytes([first]))
    if size == 1:
        return re.compile(marker + b"++")
    return re.compile(b"(?:" + marker + b"[\\s\\S]{%d})++" % (size - 1))


def check_decoded_size(
    data: bytes | memoryview, body_format: str, limit: int, costs: Costs = PLAIN
) -> None:
    """Raise ``ValueError`` if decoding ``data`` could build more than ``limit`` bytes.

    ``body_format`` is ``"msgpack"`` or ``"json"`` (anything else is not checked:
    the decoder refuses it). Malformed data is estimated up to where it breaks,
    which is as far as a decoder goes before it fails.
    """
    if len(data) * costs.per_byte <= limit:
        return
    if isinstance(data, memoryview):
        data = data.tobytes()
    if body_format == "msgpack":
        estimate = _msgpack_size(data, limit, costs)
    elif body_format == "json":
        estimate = _json_size(data, costs)
    else:
        return
    if estimate > limit:
        raise ValueError(
            f"{len(data)} bytes that would decode to over {limit} bytes of objects "
            f"(max_decoded_size)"
        )


def element_cost(count: int) -> int:
    """Bytes that ``count`` array elements split out one by one take."""
    return PLAIN.array_base + _RAW * count


def _msgpack_size(data: bytes, limit: int, costs: Costs) -> int:
    """Add up what each value in ``data`` decodes to, stopping once past ``limit``.

    Values are taken in the order they are written, headers and all, without
    following which container holds which: a container is charged for the
    elements its header announces.
    """
    end = len(data)
    pos = cost = 0
    fixed_of = _FIXED.get
    while pos < end and cost <= limit:
        first = data[pos]
        fixed = fixed_of(first)
        if fixed is None:
            step = _msgpack_step(data, pos, costs)
            if step is None:
                break  # malformed: a decoder stops here too
            cost, pos = cost + step[0], step[1]
            continue
        size, each = fixed
        if first == 0x80:
            each = costs.map_base + _SMALL
        elif first == 0x90:
            each = costs.array_base + _SMALL
        after = pos + size
        if after >= end or data[after] not in _FIXED:  # a value alone
            cost, pos = cost + each, after
            continue
        stop = min(end, pos + _WINDOW)
        if each == _SMALL:  # shared values (and short ints), of any kind: 8 bytes a byte at most
            run = _SHARED.match(data, pos, stop)
            if run is not None:
                cost, pos = cost + _SMALL * (run.end() - pos), run.end()
                continue
        if data[after] == first:  # values of one kind in a row: counted exactly
            run = _same(first).match(data, pos, stop)
            same = 1 if run is None else (run.end() - pos) // size
            if same > 1:
                cost, pos = cost + same * each, pos + same * size
                continue
        flat = _FLAT.match(data, pos, stop)
        length = size if flat is None else flat.end() - pos
        cost += (
            _FLAT_PER_BYTE * length
            + (costs.map_base + _SMALL - _FLAT_PER_BYTE) * data.count(0x80, pos, pos + length)
            + (costs.array_base + _SMALL - _FLAT_PER_BYTE) * data.count(0x90, pos, pos + length)
        )
        pos += length
    return cost


def _msgpack_step(data: bytes, pos: int, costs: Costs) -> tuple[int, int] | None:
    """The cost of the value whose header is at ``pos``, and where the next one starts.

    For the values whose size depends on more than their first byte: containers
    with elements, long strings, binary and extension values.
    """
    first = data[pos]
    if 0x81 <= first <= 0x8F:
        return _map(costs, first & 0x0F), pos + 1
    if 0x91 <= first <= 0x9F:
        return _array(costs, first & 0x0F), pos + 1
    width = _LENGTH_WIDTH.get(first)
    if width is None or pos + 1 + width > len(data):
        return None
    length = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    start = pos + 1 + width
    if first in (0xDC, 0xDD):
        return _array(costs, length), start
    if first in (0xDE, 0xDF):
        return _map(costs, length), start
    if first in (0xD9, 0xDA, 0xDB):
        return _STR + 4 * length, start + length
    if first in (0xC4, 0xC5, 0xC6):
        return _BIN + length, start + length
    return _EXT + length, start + 1 + length  # ext 8/16/32: a type byte, then the data


def _map(costs: Costs, entries: int) -> int:
    return _SMALL + costs.map_base + _ENTRY * entries


def _array(costs: Costs, elements: int) -> int:
    return _SMALL + costs.array_base + costs.array_element * elements


# Bytes of the length (or count) after the first byte of variable-size values.
_LENGTH_WIDTH = {
    0xC4: 1, 0xC5: 2, 0xC6: 4,  # bin
    0xC7: 1, 0xC8: 2, 0xC9: 4,  # ext
    0xD9: 1, 0xDA: 2, 0xDB: 4,  # str
    0xDC: 2, 0xDD: 4,  # array
    0xDE: 2, 0xDF: 4,  # map
}  # fmt: skip


def _json_size(data: bytes, costs: Costs) -> int:
    """What JSON ``data`` decodes to, at most, counted from its punctuation alone.

    Every value follows a ``[``, a ``,`` or a ``:`` (or starts the body); a string
    has two quotes; a character takes at most 4 bytes in a str. Punctuation inside
    strings is counted too, which only makes the estimate larger.
    """

    def count(char: bytes) -> int:
        return data.count(char)

    arrays, maps, entries = count(b"["), count(b"{"), count(b":")
    values = arrays + count(b",") + entries + 1
    return (
        costs.array_base * arrays
        + costs.map_base * maps
        + _ENTRY * entries
        + (_NUMBER + costs.array_element) * values
        + (_STR // 2) * count(b'"')
        + 4 * len(data)
    )
