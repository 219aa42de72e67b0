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


HARNESSES: dict[str, Callable[[], Awaitable[StoreHarness]]] = {
    "memory": _memory,
    "file": _file,
    "sqlite": _sqlite,
}
