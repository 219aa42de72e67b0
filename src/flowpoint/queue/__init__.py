"""Many workers, one run each: a durable run queue with leases and fencing.

:class:`RunQueue` keeps runs in the SQLite or PostgreSQL database of their
checkpoints; :class:`Worker` processes claim them, each run by one worker at a
time, under a lease whose epoch fences every save (see
:mod:`flowpoint.stores._fenced`). Nothing here imports a database driver until
a queue is opened.
"""

from flowpoint.queue._base import QueuedRun, RunQueue, RunStatus
from flowpoint.queue._worker import Worker

__all__ = ["QueuedRun", "RunQueue", "RunStatus", "Worker"]
