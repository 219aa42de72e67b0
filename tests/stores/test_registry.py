"""open_store: URLs to backends, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowpoint import Checkpoint, InMemoryBlobStore, TypedCheckpointStore, open_store
from flowpoint.stores.file import FileBlobStore
from flowpoint.stores.sqlite import SqliteBlobStore


def test_memory() -> None:
    assert isinstance(open_store("memory://"), InMemoryBlobStore)


def test_file_urls(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/store")
    assert isinstance(store, FileBlobStore)
    assert repr(store) == f"FileBlobStore({str(tmp_path / 'store')!r})"
    spaced = open_store(f"file://{tmp_path}/with%20space")
    assert repr(spaced) == f"FileBlobStore({str(tmp_path / 'with space')!r})"


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///runs.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(relative, SqliteBlobStore)
    assert repr(relative) == f"SqliteBlobStore({str(tmp_path / 'runs.db')!r}, durability='full')"
    assert repr(absolute).startswith(f"SqliteBlobStore({str(tmp_path / 'abs.db')!r}")


def test_sqlite_options_from_the_url_and_from_keywords(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db?durability=normal&busy_timeout=2.5")
    assert repr(store).endswith("durability='normal')")
    overridden = open_store(f"sqlite:///{tmp_path}/x.db?durability=normal", durability="full")
    assert repr(overridden).endswith("durability='full')")


def test_the_default_is_a_sqlite_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert repr(open_store()).startswith(f"SqliteBlobStore({str(tmp_path / 'flowpoint.db')!r}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres-ish://x", "unknown store URL"),
        ("nothing-at-all", "unknown store URL"),
        ("", "unknown store URL"),
        ("memory://somewhere", "just 'memory://'"),
        ("file://otherhost/dir", "local directory"),
        ("file://", "needs a directory"),
        ("file:///dir?opt=1", "takes no options"),
        ("sqlite://host/x.db", "sqlite:///relative.db"),
        ("sqlite:///", "needs a file name"),
        ("sqlite:///x.db?cache=shared", "unknown SQLite URL option"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout must be a number"),
        ("sqlite:///x.db?durability=sometimes", "durability must be"),
        ("sqlite:///:memory:", "memory://"),
    ],
)
def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"memory://, file://, sqlite://"):
        open_store("mongodb://x")


def test_a_url_must_be_text() -> None:
    with pytest.raises(ValueError, match="must be a str"):
        open_store(b"memory://")  # type: ignore[arg-type]


async def test_typed_open_wires_store_and_codec(tmp_path: Path) -> None:
    async with TypedCheckpointStore.open(
        f"sqlite:///{tmp_path}/t.db", dict, format="json"
    ) as store:
        checkpoint = Checkpoint.first("a", {"k": "v"})
        await store.save_with_trace("t", checkpoint, 1)
        raw = await store.store.load(checkpoint.checkpoint_id)
        assert raw is not None
        assert b'{"k":"v"}' in raw.data


def test_typed_open_refuses_unknown_codec_options() -> None:
    options: dict[str, Any] = {"compresion": "zstd"}  # misspelt on purpose
    with pytest.raises(TypeError):
        TypedCheckpointStore.open("memory://", dict, **options)
