"""What every command shares: the global options, opening stores, key rings and codecs."""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import re
import shlex
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import typer

from flowpoint.blob import CheckpointInfo
from flowpoint.cli._files import MAX_KEY_RING_SIZE, read_limited
from flowpoint.cli._output import ExitCode, fail
from flowpoint.codec import KeyRing, SerdeCheckpointCodec
from flowpoint.ids import CheckpointId, TraceId, coerce_checkpoint_id
from flowpoint.stores._base import BlobCheckpointStore
from flowpoint.stores._registry import DEFAULT_STORE_URL, open_store

__all__ = [
    "PROGRAM",
    "Access",
    "CheckpointRef",
    "DebugOption",
    "JsonOption",
    "KeyringOption",
    "Settings",
    "StoreOption",
    "TypeOption",
    "command_line",
    "import_object",
    "import_state_type",
    "load_keyring",
    "local_path",
    "make_codec",
    "opened_store",
    "parse_checkpoint_ref",
    "require_trace",
    "resolve_checkpoint",
    "shown",
    "unique_prefixes",
    "whole_trace",
]

PROGRAM = "flowpoint"
"""What the command calls itself, however it was started."""

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Store URL; overrides the global --store / FLOWPOINT_STORE.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of tables.")
]
DebugOption = Annotated[
    bool, typer.Option("--debug", help="Print the traceback of an error.", show_default=False)
]
KeyringOption = Annotated[
    Path | None,
    typer.Option(
        "--keyring",
        metavar="FILE",
        help="Key ring JSON for encrypted stores; overrides the global --keyring.",
        show_default=False,
    ),
]
TypeOption = Annotated[
    str | None,
    typer.Option(
        "--type",
        metavar="MODULE:CLASS",
        help="Decode states into this class (default: plain JSON-like values).",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, as given before the command or after it."""

    store: str = DEFAULT_STORE_URL
    json: bool = False
    debug: bool = False
    keyring: Path | None = None

    @classmethod
    def of(
        cls,
        ctx: typer.Context,
        *,
        store: str | None = None,
        json: bool = False,
        debug: bool = False,
        keyring: Path | None = None,
    ) -> Settings:
        """The root's settings (from ``ctx``), overridden by the command's own options."""
        root = ctx.obj if isinstance(ctx.obj, Settings) else cls()
        return cls(
            store=store if store is not None else root.store,
            json=json or root.json,
            debug=debug or root.debug,
            keyring=keyring if keyring is not None else root.keyring,
        )


_SECRET_PARAMETER = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def shown(url: str) -> str:
    """``url`` as it may be printed: a password, or a query parameter that looks secret, masked.

    >>> shown("postgresql://app:hunter2@db:5432/runs?sslmode=require&password=x")
    'postgresql://app:***@db:5432/runs?sslmode=require&password=***'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL at all: nothing in it is known to be a secret
        return url
    # Edited in place: rebuilding the URL would turn sqlite:///x into sqlite:/x.
    if password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = url.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)
    if parts.query and _SECRET_PARAMETER.search(parts.query):
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, "***" if _SECRET_PARAMETER.search(k) else v) for k, v in pairs]
        url = url.replace(f"?{parts.query}", f"?{urlencode(masked, safe='*')}", 1)
    return url


def local_path(url: str) -> str | None:
    """The file or directory a ``sqlite:`` or ``file:`` URL names; ``None`` for other URLs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return unquote(parts.path)[1:] or None
    if scheme == "file":
        return unquote(parts.path) or None
    return None


Access = Literal["read", "change", "create"]
"""How a command uses a store: only ``read`` it, ``change`` it, or ``create`` it if new."""


@asynccontextmanager
async def opened_store(url: str, access: Access) -> AsyncIterator[BlobCheckpointStore]:
    """Open the store at ``url`` for ``access``, closing it afterwards.

    A store only read is opened read-only: nothing in it changes, no table, file
    or key is made, and storage that is not a flowpoint store (an empty file,
    another application's database, a text file) makes the first call fail with a
    :class:`~flowpoint.errors.StorageError` that says so (exit 1). A SQLite file or
    store directory that is not there is an error rather than a new, empty store
    made by a typo, unless the command may ``create`` it; then its directory must
    be there.
    """
    # An unknown scheme or a malformed URL: ValueError, exit 1.
    store = open_store(url, read_only=access == "read")
    async with store:
        path = local_path(url)
        # Local stats: blocking, and as quick as anything the store does next.
        if path is not None and not os.path.exists(path):  # noqa: ASYNC240
            if access != "create":
                fail(f"no store at {shown(url)}: {path} does not exist")
            parent = os.path.dirname(path) or "."
            sqlite = urlsplit(url).scheme.lower() == "sqlite"
            if sqlite and not os.path.isdir(parent):  # noqa: ASYNC240
                fail(f"cannot make a store at {shown(url)}: no directory {parent}")
        yield store


async def whole_trace(store: BlobCheckpointStore, trace: TraceId | str) -> list[CheckpointInfo]:
    """Every header of the trace, newest first."""
    return [info async for info in store.iter_history(trace)]


async def require_trace(store: BlobCheckpointStore, trace: str, url: str) -> None:
    """Exit 4 unless the store holds at least one checkpoint of ``trace``, damaged or not."""
    if not await store.history_entries(trace, 1):
        fail(f"no trace {trace!r} in {shown(url)}", ExitCode.NOT_FOUND)


def command_line(settings: Settings, *words: str, store: str | None = None) -> str:
    """``flowpoint WORDS`` as a shell command that reads the same store as this one.

    It names the store (``store``, by default the command's), and the key ring,
    unless they are what the command would read anyway (the default, or the
    environment's ``FLOWPOINT_STORE`` and ``FLOWPOINT_KEYRING``); a password in the
    store URL is masked, never printed.
    """
    parts = [PROGRAM, *words]
    url = settings.store if store is None else store
    if url != os.environ.get("FLOWPOINT_STORE", DEFAULT_STORE_URL):
        parts += ["--store", shown(url)]
    if settings.keyring is not None and str(settings.keyring) != os.environ.get(
        "FLOWPOINT_KEYRING"
    ):
        parts += ["--keyring", str(settings.keyring)]
    return shlex.join(parts)


_ID_SHAPE = "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh"
"""Where a checkpoint id's text has hex digits and where it has dashes."""


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """A checkpoint as a person names it: its whole id, or the start of its id."""

    text: str
    whole: CheckpointId | None

    @property
    def prefix(self) -> str:
        """The start of the id, lowercase, as ``BlobCheckpointStore.ids_with_prefix`` takes it."""
        return self.text.lower()


def parse_checkpoint_ref(value: str, param_hint: str) -> CheckpointRef:
    """``value`` as a whole checkpoint id or the start of one (``01a219cb-c63a``).

    Anything else is a usage error (exit 2): an id's start has its hex digits and
    dashes where an id has them.
    """
    text = value.strip()
    try:
        return CheckpointRef(text, coerce_checkpoint_id(text))
    except ValueError:
        pass
    if 0 < len(text) < len(_ID_SHAPE) and all(
        char == "-" if shape == "-" else char in string.hexdigits
        for char, shape in zip(text, _ID_SHAPE, strict=False)
    ):
        return CheckpointRef(text, None)
    raise typer.BadParameter(
        f"not a checkpoint id or the start of one: {value!r:.60} "
        f"(ids read like 01a219cb-c63a-7371-abb7-04e9e3769072)",
        param_hint=param_hint,
    )


_NAMED_CANDIDATES = 5
"""How many of the ids that an ambiguous start matches an error names."""


async def resolve_checkpoint(
    store: BlobCheckpointStore, ref: CheckpointRef, url: str
) -> CheckpointId:
    """The id ``ref`` names; a whole id is taken as it is, whether stored or not.

    The start of an id must be the start of exactly one stored id: none is "not
    found" (exit 4), several a usage error (exit 2) that names them.
    """
    if ref.whole is not None:
        return ref.whole
    found = await store.ids_with_prefix(ref.prefix, limit=2)
    if not found:
        fail(f"no checkpoint id starts with {ref.text!r} in {shown(url)}", ExitCode.NOT_FOUND)
    if len(found) > 1:
        some = await store.ids_with_prefix(ref.prefix, limit=_NAMED_CANDIDATES + 1)
        named = ", ".join(str(one) for one in some[:_NAMED_CANDIDATES])
        fail(
            f"{ref.text!r} starts more than one checkpoint id ({named}"
            f"{', ...' if len(some) > _NAMED_CANDIDATES else ''}): give more of the id",
            ExitCode.USAGE,
        )
    return found[0]


async def unique_prefixes(
    store: BlobCheckpointStore, ids: list[CheckpointId], shortest: int = 8
) -> dict[CheckpointId, str]:
    """For each of ``ids``, the shortest start of it that no other id in the store has.

    What a command prints for a person to copy: any command that takes a checkpoint
    id takes it. An id the store does not hold (deleted meanwhile) is given whole.
    """
    prefixes: dict[CheckpointId, str] = {}
    for checkpoint_id in ids:
        text = str(checkpoint_id)
        length = shortest
        while length < len(text):
            # A start that ends in a dash is never the shortest.
            found = [] if text[length - 1] == "-" else await store.ids_with_prefix(text[:length])
            if found == [checkpoint_id]:
                break
            length += 1
        prefixes[checkpoint_id] = text[:length]
    return prefixes


def load_keyring(path: Path) -> KeyRing:
    """Read a key ring file: ``{"primary": "id", "keys": {"id": "<base64 of 32 bytes>"}}``.

    The file is read only up to :data:`~flowpoint.cli._files.MAX_KEY_RING_SIZE`.
    Errors name the file and the key id, never a key.
    """
    raw = read_limited(path, MAX_KEY_RING_SIZE, "key ring")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        fail(f'key ring {path} is not JSON: expected {{"primary": ..., "keys": {{...}}}}')
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("primary"), str)
        or not isinstance(document.get("keys"), dict)
    ):
        fail(
            f"key ring {path} must be a JSON object "
            f'{{"primary": "<key id>", "keys": {{"<key id>": "<base64 of 32 bytes>"}}}}'
        )
    keys: dict[str, bytes] = {}
    for key_id, encoded in document["keys"].items():
        try:
            if not isinstance(encoded, str):
                raise TypeError
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError, binascii.Error):
            fail(f"key ring {path}: key {key_id!r:.70} is not a base64 string")
    try:
        return KeyRing(keys, primary=document["primary"])
    except ValueError as exc:  # KeyRing's messages name key ids and sizes, never keys
        fail(f"key ring {path}: {exc}")


def import_state_type(spec: str | None) -> Any:
    """The class ``--type module:Qualified.Name`` names, or ``Any`` without ``--type``.

    Errors are :func:`import_object`'s: call it inside :func:`~flowpoint.cli._output.run`
    (before any event loop starts), so that a module that raises as it is imported
    is one line too.
    """
    if spec is None:
        return Any
    return import_object(spec, "'--type'", "MODULE:CLASS (such as 'myapp.states:Research')")


def import_object(spec: str, param_hint: str, expected: str) -> Any:
    """What ``module:Qualified.Name`` names, for the parameter ``param_hint``.

    A ``spec`` of another shape (``expected`` says which), a module that cannot be
    found or an attribute it lacks is a usage error (exit 2). Any other exception
    the module raises as it is imported is an error (exit 1) naming the module.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise typer.BadParameter(f"expected {expected}, not {spec!r}", param_hint=param_hint)
    try:
        # The name comes from the operator's command line, never from stored data.
        target: Any = importlib.import_module(module_name)  # noqa: TID251
    except ImportError as exc:
        raise typer.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint=param_hint
        ) from None
    except (Exception, SystemExit) as exc:
        fail(f"importing {module_name!r} raised {type(exc).__name__}: {' '.join(str(exc).split())}")
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise typer.BadParameter(
            f"module {module_name!r} has no {qualname!r}", param_hint=param_hint
        ) from None
    return target


def make_codec(
    settings: Settings, state_type: Any = Any, *, allow_unencrypted: bool = False
) -> SerdeCheckpointCodec[Any]:
    """The codec that decodes states for inspection: ``state_type`` and the key ring, if any.

    A ``state_type`` the codec cannot handle is a usage error (exit 2).
    """
    ring = None if settings.keyring is None else load_keyring(settings.keyring)
    try:
        return SerdeCheckpointCodec(
            state_type, encryption=ring, allow_unencrypted=allow_unencrypted
        )
    except TypeError as exc:
        fail(f"invalid value for '--type': {exc}", ExitCode.USAGE)
