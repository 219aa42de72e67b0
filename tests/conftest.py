from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _stop_servers() -> Iterator[None]:
    """Stop the S3 servers that tests started on first use (tests/servers.py)."""
    yield
    from tests import servers

    servers.stop_all()
