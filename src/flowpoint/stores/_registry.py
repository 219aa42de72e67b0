"""``open_store(url)``: pick a backend by URL scheme, importing it only when used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from flowpoint.stores._base import BlobCheckpointStore

__all__ = ["DEFAULT_STORE_URL", "open_store"]

DEFAULT_STORE_URL = "sqlite:///flowpoint.db"
"""The default store: a SQLite file named ``flowpoint.db`` in the current directory."""


def _memory(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.memory import InMemoryBlobStore

    parts = urlsplit(url)
    if parts.netloc or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"a memory store URL is just 'memory://', not {url!r}")
    return InMemoryBlobStore(**options)


def _file(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.file import FileBlobStore

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file store URL names a local directory (file:///dir), not {url!r}")
    if parts.query:
        raise ValueError(f"a file store URL takes no options: {url!r}")
    path = unquote(parts.path)
    if not path:
        raise ValueError(f"a file store URL needs a directory: {url!r}")
    return FileBlobStore(Path(path), **options)


def _sqlite(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.sqlite import SqliteBlobStore

    # As in SQLAlchemy: sqlite:///relative.db and sqlite:////absolute/path.db.
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"a SQLite URL is sqlite:///relative.db or sqlite:////absolute.db, not {url!r}"
        )
    path = unquote(parts.path)[1:]
    if not path:
        raise ValueError(f"a SQLite URL needs a file name: {url!r}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    unknown = query.keys() - {"durability", "busy_timeout"}
    if unknown:
        raise ValueError(f"unknown SQLite URL option(s) {sorted(unknown)} in {url!r}")
    url_options: dict[str, Any] = {}
    if "durability" in query:
        url_options["durability"] = query["durability"]
    if "busy_timeout" in query:
        try:
            url_options["busy_timeout"] = float(query["busy_timeout"])
        except ValueError:
            raise ValueError(f"busy_timeout must be a number of seconds in {url!r}") from None
    return SqliteBlobStore(Path(path), **(url_options | options))


def _postgres(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.postgres import PostgresBlobStore

    return PostgresBlobStore.from_url(url, **options)


def _redis(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.redis import RedisBlobStore

    return RedisBlobStore.from_url(url, **options)


def _s3(url: str, options: dict[str, Any]) -> BlobCheckpointStore:
    from flowpoint.stores.s3 import S3BlobStore

    return S3BlobStore.from_url(url, **options)


_BACKENDS: dict[str, Callable[[str, dict[str, Any]], BlobCheckpointStore]] = {
    "memory": _memory,
    "file": _file,
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
    "redis": _redis,
    "rediss": _redis,
    "s3": _s3,
}


def open_store(
    url: str = DEFAULT_STORE_URL, *, read_only: bool = False, **options: Any
) -> BlobCheckpointStore:
    """Open the blob store a URL names; ``options`` go to the backend's constructor.

    ==========================  ===================================================
    ``memory://``               :class:`~flowpoint.stores.memory.InMemoryBlobStore`
    ``file:///dir``             :class:`~flowpoint.stores.file.FileBlobStore`
    ``sqlite:///path.db``       :class:`~flowpoint.stores.sqlite.SqliteBlobStore`
                                (``?durability=normal&busy_timeout=10``)
    ``postgresql://…``          :class:`~flowpoint.stores.postgres.PostgresBlobStore`
    ``redis://…``               :class:`~flowpoint.stores.redis.RedisBlobStore`
    ``s3://bucket/prefix?…``    :class:`~flowpoint.stores.s3.S3BlobStore`
    ==========================  ===================================================

    The server backends need their extra (``pip install 'flowpoint[postgres]'``,
    ``[redis]``, ``[s3]``); without it, opening one raises an ``ImportError`` that
    names the extra.

    Opening connects to nothing: a backend opens its files or connections on first
    use. Use the result as ``async with open_store(url) as store:``. An unknown
    scheme or a malformed URL raises ``ValueError``.

    ``read_only=True`` opens a store that changes nothing: its methods that write
    raise :class:`~flowpoint.errors.StorageError`, and nothing is created or
    migrated. The first call to one over a missing directory or file, or over a
    SQLite file or PostgreSQL database without flowpoint's tables, raises
    :class:`~flowpoint.errors.StorageError` saying it is not a flowpoint store.

    >>> type(open_store("memory://")).__name__
    'InMemoryBlobStore'
    """
    if not isinstance(url, str):
        raise ValueError(f"a store URL must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition(":")
    backend = _BACKENDS.get(scheme.lower()) if sep else None
    if backend is None:
        known = ", ".join(f"{name}://" for name in _BACKENDS)
        raise ValueError(f"unknown store URL {url!r}: flowpoint opens {known}")
    return backend(url, {**options, "read_only": read_only})
