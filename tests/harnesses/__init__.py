"""One harness per backend; the conformance suite runs every test on each of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.harnesses.base import StoreHarness


def _memory() -> Awaitable[StoreHarness]:
    from tests.harnesses.memory import make

    return make()


def _file() -> Awaitable[StoreHarness]:
    from tests.harnesses.file import make

    return make()


def _sqlite() -> Awaitable[StoreHarness]:
    from tests.harnesses.sqlite import make

    return make()


def _postgres() -> Awaitable[StoreHarness]:
    from tests.harnesses.postgres import make

    return make()


def _redis() -> Awaitable[StoreHarness]:
    from tests.harnesses.redis import make

    return make()


def _s3_seaweedfs() -> Awaitable[StoreHarness]:
    from tests.harnesses.s3 import make_seaweedfs

    return make_seaweedfs()


def _s3_moto() -> Awaitable[StoreHarness]:
    from tests.harnesses.s3 import make_moto

    return make_moto()


HARNESSES: dict[str, Callable[[], Awaitable[StoreHarness]]] = {
    "memory": _memory,
    "file": _file,
    "sqlite": _sqlite,
    "postgres": _postgres,
    "redis": _redis,
    "s3-seaweedfs": _s3_seaweedfs,
    "s3-moto": _s3_moto,
}

SHARED_BETWEEN_PROCESSES = frozenset(HARNESSES) - {"memory"}
"""Backends whose storage other processes can open (their harness has a ``store_url``)."""
