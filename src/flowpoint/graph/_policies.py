"""When a runner saves checkpoints, and how many it keeps."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["RetentionPolicy", "TriggerPolicy"]


class TriggerPolicy(enum.Enum):
    """When a :class:`~flowpoint.Runner` saves a checkpoint.

    Whatever the policy, a runner saves the first checkpoint of a run, every
    pause (interrupt), and the end of a run, so that a pause or a finished run is
    always durable. Between those:

    - ``EVERY_NODE`` (the default): after every superstep (every node, in a graph
      without parallel branches). A resume reruns at most the superstep that was
      running.
    - ``ON_CHANGE``: after a superstep that changed the state (compared with
      ``==``; a node that mutates the state in place instead of returning an
      update is not seen as a change). A resume reruns the supersteps since the
      last change.
    - ``MANUAL``: nowhere else. A resume reruns everything since the last pause.
    """

    EVERY_NODE = "every_node"
    ON_CHANGE = "on_change"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many checkpoints of a trace a runner keeps; applied after each save.

    The latest checkpoint is always kept, so a trace can always be resumed.

    >>> RetentionPolicy.keep_latest(10)
    RetentionPolicy(latest=10, max_age=None)
    """

    latest: int | None = None
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if self.latest is not None and (
            isinstance(self.latest, bool) or not isinstance(self.latest, int) or self.latest < 1
        ):
            raise ValueError(f"a retention policy keeps at least 1 checkpoint, not {self.latest!r}")
        if self.max_age is not None and (
            not isinstance(self.max_age, timedelta) or self.max_age <= timedelta(0)
        ):
            raise ValueError(f"max_age must be a positive timedelta, not {self.max_age!r}")

    @classmethod
    def keep_all(cls) -> RetentionPolicy:
        """Keep every checkpoint (the default)."""
        return cls()

    @classmethod
    def keep_latest(cls, count: int) -> RetentionPolicy:
        """Keep the newest ``count`` checkpoints of each trace."""
        return cls(latest=count)

    @classmethod
    def keep_for(cls, max_age: timedelta) -> RetentionPolicy:
        """Keep checkpoints younger than ``max_age`` (and always the latest)."""
        return cls(max_age=max_age)

    @property
    def keeps_all(self) -> bool:
        """Whether this policy never deletes anything."""
        return self.latest is None and self.max_age is None
