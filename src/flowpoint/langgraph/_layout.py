"""How a LangGraph checkpoint is laid out as a flowpoint state, and what its header shows.

The state is a map of top-level fields, each the MessagePack of one value (see
:mod:`flowpoint.langgraph._values`), so that flowpoint's delta codec stores a
checkpoint as what changed since the one before it:

==================  ===========================================================
``$checkpoint``     the checkpoint's own fields: ``v``, ``id``, ``ts``,
                    ``updated_channels`` and any others, but not the three below
``$parent``         the LangGraph id of the parent checkpoint, or ``None``
``$versions``       ``channel_versions``
``$seen``           ``versions_seen``
``$metadata``       LangGraph's metadata, whole (it is nested JSON)
``$tagged``         the fields that hold tagged values (classes to build on load);
                    the others are plain data, read as they are
*channel*           one field per channel with a value, named as the channel
                    (``$name`` is written ``$$name``): a list stays a list, so
                    a message appended is an element appended
==================  ===========================================================

Everything above is inside the stored body, encrypted when the codec encrypts.
The flowpoint header (indexed, listed, never encrypted) gets a copy of the
metadata's flat values (``source``, ``step``, ``run_id``...) only when the codec
does not encrypt, so that listings filter on it without decoding; with them, the
key ``langgraph:uncopied`` names the metadata keys left out. A checkpoint whose
flowpoint id is not its LangGraph id names the latter under ``langgraph:id``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from langgraph.checkpoint.base import Checkpoint as LangGraphCheckpoint
from langgraph.checkpoint.base import CheckpointMetadata

from flowpoint.blob import MAX_METADATA_KEY_LENGTH, MAX_NODE_LENGTH, MetadataValue
from flowpoint.errors import CorruptCheckpoint
from flowpoint.ids import CheckpointId
from flowpoint.langgraph._values import Encoded, Tagged, ValueCodec

__all__ = [
    "ADAPTER_GRAPH_HASH",
    "LANGGRAPH_ID_KEY",
    "UNCOPIED_KEY",
    "Layout",
    "Parent",
    "header_filter",
    "header_metadata",
    "header_value",
    "lg_id_of",
    "next_nodes",
]

ADAPTER_GRAPH_HASH: Final = int.from_bytes(
    hashlib.blake2b(b"flowpoint.langgraph layout 1", digest_size=8).digest(), "big"
)
"""The graph hash of every checkpoint the adapter stores: it marks the layout, not a graph."""

CHECKPOINT: Final = "$checkpoint"
PARENT: Final = "$parent"
VERSIONS: Final = "$versions"
SEEN: Final = "$seen"
METADATA: Final = "$metadata"
TAGGED: Final = "$tagged"
_OWN_FIELDS: Final = ("channel_values", "channel_versions", "versions_seen")

LANGGRAPH_ID_KEY: Final = "langgraph:id"
UNCOPIED_KEY: Final = "langgraph:uncopied"
_RESERVED_PREFIXES: Final = ("langgraph:", "flowpoint.")
# What the copy of LangGraph's metadata may take of a header (which also holds the
# delta codec's key and this module's): flowpoint allows 64 keys and 16 KiB.
_COPIED_KEYS: Final = 48
_COPIED_BYTES: Final = 8 * 1024
_COPIED_STRING: Final = 1024
_INT64: Final = range(-(2**63), 2**63)

Fields = Mapping[str, bytes | msgspec.Raw]


@dataclass(frozen=True, slots=True)
class Parent:
    """What a new checkpoint takes from the checkpoint it follows."""

    lg_id: str
    checkpoint_id: CheckpointId
    fields: Mapping[str, bytes | msgspec.Raw]
    versions: Mapping[str, Any]


def channel_key(channel: str) -> str:
    """The field of a channel."""
    return "$" + channel if channel.startswith("$") else channel


def _channel_of(key: str) -> str | None:
    if not key.startswith("$"):
        return key
    return key[1:] if key.startswith("$$") else None


class Layout:
    """Lays LangGraph checkpoints out as fields and reads them back, with a value codec."""

    def __init__(self, values: ValueCodec) -> None:
        self.values = values

    def fields(
        self,
        checkpoint: LangGraphCheckpoint,
        metadata: Mapping[str, Any],
        parent_lg_id: str | None,
        new_versions: Mapping[str, Any],
        parent: Parent | None,
    ) -> dict[str, bytes]:
        """The fields of a checkpoint that follows ``parent`` (if known).

        A channel in ``new_versions`` takes its value from the checkpoint (no value
        there: the channel has none); any other keeps the value the parent stored
        at the same version, whose bytes are reused as they are, or else takes the
        checkpoint's. Channels without a version are not stored, as in LangGraph's
        savers. Raises :class:`~flowpoint.errors.CodecError` for a value that
        cannot be stored.
        """
        encode = self.values.encode
        versions = dict(checkpoint.get("channel_versions") or {})
        own = {key: value for key, value in checkpoint.items() if key not in _OWN_FIELDS}
        encoded = {
            CHECKPOINT: encode(own),
            PARENT: encode(parent_lg_id),
            VERSIONS: encode(versions),
            SEEN: encode(checkpoint.get("versions_seen") or {}),
            METADATA: encode(dict(metadata)),
        }
        kept_tagged = set() if parent is None else self._tagged_keys(parent.fields, None)
        values = checkpoint.get("channel_values") or {}
        for channel, version in versions.items():
            key = channel_key(channel)
            if (
                channel not in new_versions
                and parent is not None
                and parent.versions.get(channel) == version
            ):
                kept = parent.fields.get(key)
                if kept is not None:
                    encoded[key] = Encoded(bytes(kept), kept_tagged is None or key in kept_tagged)
                continue
            if channel in values:
                encoded[key] = encode(values[channel])
        fields = {key: one.data for key, one in encoded.items()}
        fields[TAGGED] = encode(sorted(key for key, one in encoded.items() if one.tagged)).data
        return fields

    def read(
        self, fields: Fields, checkpoint_id: CheckpointId
    ) -> tuple[LangGraphCheckpoint, CheckpointMetadata, str | None]:
        """The LangGraph checkpoint the fields hold, its metadata and its parent's id."""
        tagged = self._tagged_keys(fields, checkpoint_id)
        decoded = self.values.decode_fields(fields, checkpoint_id, tagged, TAGGED)

        def field(key: str) -> Any:
            if key not in decoded:
                raise CorruptCheckpoint(checkpoint_id, f"the stored checkpoint has no {key}")
            return decoded[key]

        own = _mapping_of(field(CHECKPOINT), CHECKPOINT, checkpoint_id)
        versions = _mapping_of(field(VERSIONS), VERSIONS, checkpoint_id)
        seen = _mapping_of(field(SEEN), SEEN, checkpoint_id)
        metadata = _mapping_of(field(METADATA), METADATA, checkpoint_id)
        if not isinstance(own.get("id"), str):
            raise CorruptCheckpoint(checkpoint_id, "the stored checkpoint has no id")
        parent = field(PARENT)
        if parent is not None and not isinstance(parent, str):
            raise CorruptCheckpoint(checkpoint_id, "the stored parent id is not a string")
        values = {
            channel: value
            for key, value in decoded.items()
            if (channel := _channel_of(key)) is not None
        }
        checkpoint = {
            **own,
            "channel_values": values,
            "channel_versions": versions,
            "versions_seen": seen,
        }
        return checkpoint, metadata, parent  # type: ignore[return-value]

    def parent(self, fields: Fields, checkpoint_id: CheckpointId) -> str | None:
        """The LangGraph id of the checkpoint's parent, or ``None``."""
        parent = self._field(fields, PARENT, checkpoint_id)
        if parent is not None and not isinstance(parent, str):
            raise CorruptCheckpoint(checkpoint_id, "the stored parent id is not a string")
        return parent

    def metadata(self, fields: Fields, checkpoint_id: CheckpointId) -> CheckpointMetadata:
        """LangGraph's metadata of the checkpoint."""
        return self._mapping(fields, METADATA, checkpoint_id)  # type: ignore[return-value]

    def versions(self, fields: Fields, checkpoint_id: CheckpointId) -> dict[str, Any]:
        """The checkpoint's ``channel_versions``."""
        return self._mapping(fields, VERSIONS, checkpoint_id)

    def value(self, fields: Fields, channel: str, checkpoint_id: CheckpointId) -> Any:
        """The stored value of ``channel`` (which :meth:`has_value`)."""
        return self._field(fields, channel_key(channel), checkpoint_id)

    def has_value(self, fields: Fields, channel: str) -> bool:
        """Whether the checkpoint stores a value of ``channel``."""
        return channel_key(channel) in fields

    def _tagged_keys(self, fields: Fields, checkpoint_id: CheckpointId | None) -> set[str] | None:
        """The fields that hold tagged values; ``None`` if the checkpoint does not say."""
        raw = fields.get(TAGGED)
        if raw is None:
            return None
        keys = self.values.decode(raw, checkpoint_id, tagged=False)
        if type(keys) is not list or not all(type(key) is str for key in keys):
            raise CorruptCheckpoint(checkpoint_id, f"the stored {TAGGED} is not a list of names")
        return set(keys)

    def _field(self, fields: Fields, key: str, checkpoint_id: CheckpointId) -> Any:
        raw = fields.get(key)
        if raw is None:
            raise CorruptCheckpoint(checkpoint_id, f"the stored checkpoint has no {key} field")
        tagged = self._tagged_keys(fields, checkpoint_id)
        return self.values.decode(
            raw, checkpoint_id, tagged=None if tagged is None else key in tagged
        )

    def _mapping(self, fields: Fields, key: str, checkpoint_id: CheckpointId) -> dict[str, Any]:
        return _mapping_of(self._field(fields, key, checkpoint_id), key, checkpoint_id)


def _mapping_of(found: Any, key: str, checkpoint_id: CheckpointId) -> dict[str, Any]:
    if type(found) is not dict:
        raise CorruptCheckpoint(checkpoint_id, f"the stored {key} is not a map")
    return found


_BRANCH: Final = "branch:to:"
_START: Final = "__start__"
_TASKS: Final = "__pregel_tasks"


def next_nodes(checkpoint: Mapping[str, Any]) -> str | None:
    """The nodes a LangGraph checkpoint runs next, for the header's "next node", or ``None``.

    A node is next when a channel that triggers it (``branch:to:<node>``, or
    ``__start__`` for the input) holds a value of a version the node has not seen,
    or when a pending ``Send`` names it. Only a label for operators: LangGraph
    decides what runs from the whole checkpoint and its pending writes.
    """
    values = checkpoint.get("channel_values") or {}
    versions = checkpoint.get("channel_versions") or {}
    seen = checkpoint.get("versions_seen") or {}
    found: set[str] = set()
    for channel in values:
        if not isinstance(channel, str):
            continue
        if channel != _START and not channel.startswith(_BRANCH):
            continue
        node = _START if channel == _START else channel[len(_BRANCH) :]
        node_seen = seen.get(node)
        if not isinstance(node_seen, Mapping) or node_seen.get(channel) != versions.get(channel):
            found.add(node)
    for send in values.get(_TASKS) or ():
        # A Send, or one read from another saver's data and not built (an import's).
        data = send.data if isinstance(send, Tagged) else None
        target = data.get("node") if isinstance(data, dict) else getattr(send, "node", None)
        if isinstance(target, str):
            found.add(target)
    if not found:
        return None
    text = ", ".join(sorted(found))
    return text if len(text) <= MAX_NODE_LENGTH else text[: MAX_NODE_LENGTH - 3] + "..."


def header_metadata(
    metadata: Mapping[str, Any], *, copy: bool, lg_id: str | None
) -> dict[str, MetadataValue]:
    """The flowpoint header's metadata for a checkpoint with LangGraph ``metadata``.

    ``copy`` (the codec does not encrypt): the flat values, and the names of the
    keys left out. ``lg_id``: the LangGraph id, when the flowpoint id is another.
    """
    header: dict[str, MetadataValue] = {}
    if lg_id is not None:
        header[LANGGRAPH_ID_KEY] = lg_id
    if not copy:
        return header
    uncopied: list[str] = []
    budget = _COPIED_BYTES
    for key, value in metadata.items():
        size = _copied_size(key, value)
        if size is None or size > budget or len(header) >= _COPIED_KEYS:
            uncopied.append(key)
            continue
        header[key] = value
        budget -= size
    try:
        left_out: str | None = msgspec.json.encode(uncopied).decode()
    except (msgspec.EncodeError, TypeError, UnicodeEncodeError):  # a lone surrogate, say
        left_out = None
    if left_out is None or len(left_out) > _COPIED_STRING:
        # Too many to name, or a key JSON cannot hold: the header then says nothing,
        # and filters decode.
        return {LANGGRAPH_ID_KEY: lg_id} if lg_id is not None else {}
    header[UNCOPIED_KEY] = left_out
    return header


def _copied_size(key: object, value: object) -> int | None:
    """The bytes ``key: value`` takes in a header, or ``None`` if it cannot go there."""
    if (
        not isinstance(key, str)
        or not key
        or len(key) > MAX_METADATA_KEY_LENGTH
        or key.startswith(_RESERVED_PREFIXES)
    ):
        return None
    if isinstance(value, str):
        if len(value) > _COPIED_STRING:
            return None
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if value not in _INT64:
            return None
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
    else:
        return None
    try:  # measured as flowpoint measures metadata: compact JSON
        return len(msgspec.json.encode({key: value}))
    except (msgspec.EncodeError, UnicodeEncodeError):  # a lone surrogate
        return None


def _uncopied(header: Mapping[str, MetadataValue]) -> set[str] | None:
    """The metadata keys the header's copy leaves out; ``None`` if it has no copy."""
    left_out = header.get(UNCOPIED_KEY)
    if not isinstance(left_out, str):
        return None
    try:
        keys = json.loads(left_out)
    except ValueError:
        return None
    return {key for key in keys if isinstance(key, str)} if isinstance(keys, list) else None


def _copied(uncopied: set[str], key: object) -> bool:
    return isinstance(key, str) and key not in uncopied and not key.startswith(_RESERVED_PREFIXES)


def header_value(header: Mapping[str, MetadataValue], key: str) -> tuple[bool, Any]:
    """``(True, metadata.get(key))`` when the header's copy tells it, else ``(False, None)``."""
    uncopied = _uncopied(header)
    if uncopied is None or not _copied(uncopied, key):
        return False, None
    return True, header.get(key)


def header_filter(header: Mapping[str, MetadataValue], wanted: Mapping[str, Any]) -> bool | None:
    """Whether LangGraph metadata with this header copy matches ``wanted``.

    As LangGraph's savers compare: every ``metadata.get(key) == value``. ``None``
    when the header cannot tell (its copy leaves out a wanted key, or there is no copy).
    """
    uncopied = _uncopied(header)
    if uncopied is None:
        return None
    undecided = False
    for key, value in wanted.items():
        if not _copied(uncopied, key):
            undecided = True
        elif value != header.get(key):
            return False
    return None if undecided else True


def lg_id_of(checkpoint_id: CheckpointId, header: Mapping[str, MetadataValue]) -> str:
    """The LangGraph id of a checkpoint with this flowpoint id and header metadata."""
    found = header.get(LANGGRAPH_ID_KEY)
    return found if isinstance(found, str) else str(checkpoint_id)
