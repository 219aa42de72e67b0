"""A worker process of the queue's process tests: ``python -m tests.queue.worker_process URL``.

It serves :func:`tests.queue.graphs.chain` until SIGTERM. With ``--events FILE`` it
records the worker's events (claims, saves, lost leases, settled runs) as JSON lines,
each with the worker, the run, the lease's epoch and the step.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import timedelta
from pathlib import Path

from flowpoint import RunQueue, Worker
from tests.queue import graphs


class _EventFile(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event is None:
            return
        facts = {
            key: getattr(record, key, None) for key in ("event", "trace_id", "epoch", "worker")
        }
        facts["step"] = getattr(record, "step", None)
        self._file.write(json.dumps(facts) + "\n")
        self._file.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--log", type=Path)
    parser.add_argument("--events", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll", type=float, default=0.2)
    args = parser.parse_args()
    if args.events is not None:
        logger = logging.getLogger("flowpoint.worker")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(_EventFile(args.events))
    worker = Worker(
        RunQueue.open(args.url),
        graphs=[graphs.chain(args.log, args.delay)],
        concurrency=args.concurrency,
        lease=timedelta(seconds=args.lease),
        poll_interval=timedelta(seconds=args.poll),
    )
    print(worker.worker_id, flush=True)
    worker.run()


if __name__ == "__main__":
    main()
