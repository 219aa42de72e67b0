"""Encrypted stores: ``--keyring FILE`` / ``FLOWPOINT_KEYRING``, and key material never shown."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from uuid import UUID

import pytest

from flowpoint import KeyRing
from tests.cli.conftest import flowpoint, invoke, make_store, one_line_error, write_keyring

KEY = bytes(range(32))
KEY_TEXT = base64.b64encode(KEY).decode()


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[str, UUID]:
    url = f"sqlite:///{tmp_path / 'secret.db'}"
    ids = make_store(url, {"private": 2}, ring=KeyRing({"k1": KEY}, primary="k1"))
    return url, ids["private"][1]


def test_show_with_the_key_ring(encrypted: tuple[str, UUID], tmp_path: Path) -> None:
    url, checkpoint_id = encrypted
    ring = write_keyring(tmp_path / "ring.json", {"k1": KEY}, "k1")
    result = invoke("show", str(checkpoint_id), "--store", url, "--keyring", str(ring), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["state"] == {"count": 1, "items": [0], "name": "private"}
    assert document["encoding"]["key_id"] == "k1"
    assert KEY_TEXT not in result.output


def test_the_key_ring_comes_from_flowpoint_keyring(
    encrypted: tuple[str, UUID], tmp_path: Path
) -> None:
    url, checkpoint_id = encrypted
    ring = write_keyring(tmp_path / "ring.json", {"k1": KEY}, "k1")
    done = flowpoint(
        "show", str(checkpoint_id), "--store", url, env={"FLOWPOINT_KEYRING": str(ring)}
    )
    assert done.returncode == 0, done.stderr
    assert "encrypted with key 'k1'" in done.stdout


def test_show_without_the_key_ring_names_the_key(encrypted: tuple[str, UUID]) -> None:
    url, checkpoint_id = encrypted
    done = flowpoint("show", str(checkpoint_id), "--store", url)
    assert done.returncode == 1
    line = one_line_error(done.stderr)
    assert "encrypted with key 'k1'" in line
    assert "--keyring" in line


def test_a_ring_without_the_key_names_both(encrypted: tuple[str, UUID], tmp_path: Path) -> None:
    url, checkpoint_id = encrypted
    other = write_keyring(tmp_path / "other.json", {"k2": os.urandom(32)}, "k2")
    result = invoke(
        "diff", str(checkpoint_id), str(checkpoint_id), "--store", url, "--keyring", str(other)
    )
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "'k1'" in line
    assert "k2" in line


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "is not JSON"),
        ('["k1"]', "must be a JSON object"),
        ('{"primary": "k1", "keys": {"k1": "%%%"}}', "key 'k1' is not a base64 string"),
        ('{"primary": "k1", "keys": {"k1": 7}}', "key 'k1' is not a base64 string"),
        ('{"primary": "k1", "keys": {"k1": "AAAA"}}', "is 3 bytes"),
        ('{"primary": "k9", "keys": {"k1": "' + KEY_TEXT + '"}}', "primary key 'k9'"),
    ],
)
def test_a_bad_key_ring_is_one_line_that_never_shows_a_key(
    encrypted: tuple[str, UUID], tmp_path: Path, content: str, fragment: str
) -> None:
    url, checkpoint_id = encrypted
    ring = tmp_path / "ring.json"
    ring.write_text(content, encoding="utf-8")
    result = invoke("show", str(checkpoint_id), "--store", url, "--keyring", str(ring))
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert fragment in line
    assert str(ring) in line
    assert KEY_TEXT not in result.output


def test_a_missing_key_ring_file(encrypted: tuple[str, UUID], tmp_path: Path) -> None:
    url, _ = encrypted
    result = invoke("--keyring", str(tmp_path / "nope.json"), "verify", "--store", url)
    assert result.exit_code == 1
    assert "cannot read key ring" in one_line_error(result.stderr)
