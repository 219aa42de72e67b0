"""Storage backends behind one interface, :class:`BlobCheckpointStore`.

This package imports no database driver: each backend module imports its own
driver, and :func:`open_store` imports a backend only when its URL scheme is used.
"""

from flowpoint.stores._base import BlobCheckpointStore, PruneRule
from flowpoint.stores.memory import InMemoryBlobStore

__all__ = ["BlobCheckpointStore", "InMemoryBlobStore", "PruneRule"]
