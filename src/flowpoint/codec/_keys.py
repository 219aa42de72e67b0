"""Keys for encryption at rest: a ring of AES-256 keys, each known by a short id.

A checkpoint's data records the id of the key that sealed it, never the key. New
saves use the ring's primary key; the other keys let older checkpoints still be
read until they are re-encrypted (see :meth:`flowpoint.TypedCheckpointStore.rekey`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_LENGTH",
    "MAX_KEY_ID_LENGTH",
    "NONCE_LENGTH",
    "TAG_LENGTH",
    "KeyRing",
    "check_key_id",
]

KEY_LENGTH = 32
"""Bytes in an AES-256 key."""
NONCE_LENGTH = 12
"""Bytes of the random nonce that starts each sealed body."""
TAG_LENGTH = 16
"""Bytes of the GCM authentication tag that ends each sealed body."""
MAX_KEY_ID_LENGTH = 64
"""Characters in a key id, at most."""

_KEY_ID = re.compile(rf"[!-~]{{1,{MAX_KEY_ID_LENGTH}}}\Z")


def check_key_id(key_id: object) -> str:
    """Return ``key_id`` if it is 1 to 64 printable ASCII characters without spaces.

    Anything else raises ``ValueError`` (the message shows at most 40 characters of it).
    """
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ValueError(
            f"a key id is 1 to {MAX_KEY_ID_LENGTH} printable ASCII characters without spaces "
            f"(such as '2026-11'), not {key_id!r:.40}"
        )
    return key_id


class KeyRing:
    """AES-256-GCM keys by id, one of them the primary that new data is sealed with.

    ``keys`` maps each id (1 to 64 printable ASCII characters without spaces, such
    as ``"2026-11"``) to a 32-byte key, e.g. from ``AESGCM.generate_key(256)`` or
    ``os.urandom(32)``; ``primary`` names the key new saves use. Anything else
    raises ``ValueError``. The ring never shows a key: not in its ``repr``, not in
    an error message, and it refuses to be pickled.

    >>> ring = KeyRing({"2026-01": bytes(32), "2026-11": bytes(range(32))}, primary="2026-11")
    >>> ring
    KeyRing(key_ids=['2026-01', '2026-11'], primary='2026-11')
    >>> "2026-01" in ring
    True

    Rotation: add a new key and make it the primary; rekey the store; then drop the
    old key from the ring.
    """

    __slots__ = ("_ciphers", "_primary")

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        # Imported here: processes that never encrypt do not pay for loading it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not isinstance(keys, Mapping):
            raise ValueError(f"keys must be a mapping of key id to key, not {type(keys).__name__}")
        if not keys:
            raise ValueError("a KeyRing needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        seen: dict[bytes, str] = {}
        for key_id, key in keys.items():
            check_key_id(key_id)
            if not isinstance(key, bytes):
                raise ValueError(
                    f"key {key_id!r} must be bytes, not {type(key).__name__} "
                    f"(decode a hex or base64 key to its {KEY_LENGTH} bytes first)"
                )
            if len(key) != KEY_LENGTH:
                raise ValueError(
                    f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_LENGTH} "
                    f"(make one with AESGCM.generate_key(256) or os.urandom({KEY_LENGTH}))"
                )
            if key in seen:
                raise ValueError(f"keys {seen[key]!r} and {key_id!r} are the same key")
            seen[key] = key_id
            ciphers[key_id] = AESGCM(key)
        if not isinstance(primary, str) or primary not in ciphers:
            raise ValueError(
                f"the primary key {primary!r:.80} is not in the ring (it holds {sorted(ciphers)})"
            )
        self._ciphers = ciphers
        self._primary = primary

    @property
    def primary(self) -> str:
        """The id of the key new data is sealed with."""
        return self._primary

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key in the ring, sorted."""
        return tuple(sorted(self._ciphers))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ciphers

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self.key_ids)!r}, primary={self._primary!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyRing is not pickled: that would write its keys out in clear")

    def encrypt(self, plaintext: bytes | memoryview, associated_data: bytes) -> bytes:
        """Seal ``plaintext`` with the primary key.

        Returns a fresh random nonce, then the ciphertext and its tag.
        ``associated_data`` is authenticated, not stored.
        """
        nonce = os.urandom(NONCE_LENGTH)
        return nonce + self._ciphers[self._primary].encrypt(nonce, plaintext, associated_data)

    def decrypt(
        self, key_id: str, sealed: bytes | memoryview, associated_data: bytes | memoryview
    ) -> bytes:
        """Open what :meth:`encrypt` sealed under the key ``key_id``.

        Raises ``KeyError`` if the ring does not hold ``key_id``, and ``ValueError``
        if authentication fails: a wrong key, or changed data or associated data.
        """
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyError(key_id)
        if len(sealed) < NONCE_LENGTH + TAG_LENGTH:
            raise ValueError(f"sealed data is {len(sealed)} bytes, shorter than a nonce and tag")
        from cryptography.exceptions import InvalidTag

        view = memoryview(sealed)
        try:
            return cipher.decrypt(view[:NONCE_LENGTH], view[NONCE_LENGTH:], associated_data)
        except InvalidTag:
            raise ValueError("authentication failed") from None
