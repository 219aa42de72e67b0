"""What every command shares: the global options, opening stores, key rings and codecs."""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import typer

from flowpoint.blob import CheckpointInfo
from flowpoint.cli.output import ExitCode, fail
from flowpoint.codec import KeyRing, SerdeCheckpointCodec
from flowpoint.ids import CheckpointId, TraceId, coerce_checkpoint_id
from flowpoint.stores.base import BlobCheckpointStore
from flowpoint.stores.registry import DEFAULT_STORE_URL, open_store

__all__ = [
    "DebugOption",
    "JsonOption",
    "KeyringOption",
    "Settings",
    "StoreOption",
    "TypeOption",
    "import_state_type",
    "load_keyring",
    "make_codec",
    "opened_store",
    "parse_checkpoint_id",
    "require_trace",
    "shown",
    "whole_trace",
]

PAGE = 500
"""Headers read per history call when a command walks a whole trace."""

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


def _local_path(url: str) -> str | None:
    """The file or directory a ``sqlite:`` or ``file:`` URL names; ``None`` for other URLs."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return unquote(parts.path)[1:] or None
    if scheme == "file":
        return unquote(parts.path) or None
    return None


@asynccontextmanager
async def opened_store(url: str, *, must_exist: bool = True) -> AsyncIterator[BlobCheckpointStore]:
    """Open the store at ``url``, closing it afterwards.

    With ``must_exist`` (every command that reads), a SQLite file or store directory
    that is not there is an error rather than a new, empty store made by a typo.
    """
    store = open_store(url)  # an unknown scheme or a malformed URL: ValueError, exit 1
    async with store:
        path = _local_path(url)
        # A local stat: blocking, and as quick as anything the store does next.
        if must_exist and path is not None and not os.path.exists(path):  # noqa: ASYNC240
            fail(f"no store at {shown(url)}: {path} does not exist")
        yield store


async def whole_trace(store: BlobCheckpointStore, trace: TraceId | str) -> list[CheckpointInfo]:
    """Every header of the trace, newest first, read a page at a time."""
    infos: list[CheckpointInfo] = []
    before: int | None = None
    while page := await store.history(trace, PAGE, before):
        infos.extend(page)
        before = page[-1].step
    return infos


async def require_trace(store: BlobCheckpointStore, trace: str, url: str) -> None:
    """Exit 4 unless the store holds at least one checkpoint of ``trace``."""
    if not await store.history(trace, 1):
        fail(f"no trace {trace!r} in {shown(url)}", ExitCode.NOT_FOUND)


def parse_checkpoint_id(value: str, param_hint: str) -> CheckpointId:
    """``value`` as a checkpoint id; a usage error (exit 2) if it is not a UUID."""
    try:
        return coerce_checkpoint_id(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"not a checkpoint id: {value!r:.60}", param_hint=param_hint
        ) from None


def load_keyring(path: Path) -> KeyRing:
    """Read a key ring file: ``{"primary": "id", "keys": {"id": "<base64 of 32 bytes>"}}``.

    Errors name the file and the key id, never a key.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read key ring {path}: {exc.strerror or exc}")
    try:
        document = json.loads(raw)
    except ValueError:
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


def import_state_type(spec: str) -> Any:
    """The class ``module:Qualified.Name`` names; a usage error (exit 2) if it cannot be had."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise typer.BadParameter(
            f"expected MODULE:CLASS (such as 'myapp.states:Research'), not {spec!r}",
            param_hint="'--type'",
        )
    try:
        # The name comes from the operator's command line, never from stored data.
        target: Any = importlib.import_module(module_name)  # noqa: TID251
        for part in qualname.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise typer.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="'--type'"
        ) from None
    except AttributeError:
        raise typer.BadParameter(
            f"module {module_name!r} has no {qualname!r}", param_hint="'--type'"
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
        raise typer.BadParameter(str(exc), param_hint="'--type'") from None
