"""A Kafka broker that survives a restart: Tansu keeping its data in an S3 server.

The bundled Tansu stores data in memory or in S3 only, so the test suite runs moto's
S3-compatible server (``moto[server]``, a dev dependency) as a child process and points
Tansu at it with ``--storage-engine s3://tansu/``. Stopping the broker process is then an
outage, not data loss: moto keeps every object, and a broker started again on the same
port serves every topic, record and committed offset.

It is slow next to the memory broker: each produce request and each offset commit is an
S3 object, fetches list a partition's objects, and moto is one Python process. Keep tests
to tens or a few hundred records and give clients generous timeouts.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

from pipeline.config import KafkaConfig
from pipeline.embedded import EmbeddedBroker, free_port, stop_process
from pipeline.errors import EmbeddedServiceError

BUCKET = "tansu"

T = TypeVar("T")


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class S3Server:
    """moto's S3 server on ``127.0.0.1:<port>`` as a child process, its log in ``log_path``.

    Objects live in the server's memory: they outlast any broker using it and die with
    :meth:`stop`. ``start()`` returns once the server answers HTTP and ``bucket`` exists.
    """

    def __init__(self, *, log_path: Path, port: int | None = None, bucket: str = BUCKET) -> None:
        self.port = port or free_port()
        self.bucket = bucket
        self.log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server, create the bucket; return the endpoint URL.

        Raises :class:`EmbeddedServiceError` (never skips) when ``moto[server]`` is not
        installed, the server exits, or it does not answer within ``timeout_s``.
        """
        if self.running:
            raise EmbeddedServiceError(f"the S3 server on port {self.port} is running already")
        missing = [
            m for m in ("moto", "flask", "flask_cors") if importlib.util.find_spec(m) is None
        ]
        if missing:
            raise EmbeddedServiceError(
                f"the restartable broker needs moto's S3 server ({', '.join(missing)} missing): "
                "pip install 'moto[server]>=5' (part of the dev extra)"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise EmbeddedServiceError(
                    f"moto's S3 server exited with code {code} on start (port {self.port}):\n"
                    f"{log_tail(self.log_path)}"
                )
            with contextlib.suppress(OSError):
                self._request("GET", "/")  # S3 ListBuckets: any answer means it serves
                break
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServiceError(
                    f"moto's S3 server did not answer on {self.endpoint} in {timeout_s}s:\n"
                    f"{log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        status = self._request("PUT", f"/{self.bucket}")
        if status != 200:
            self.stop()
            raise EmbeddedServiceError(f"creating bucket {self.bucket!r} answered HTTP {status}")
        return self.endpoint

    def _request(self, method: str, path: str) -> int:
        # http.client, not urllib: no proxy from the environment may stand in between.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (its process group; SIGKILL after ``timeout_s``). Idempotent."""
        process, self._process = self._process, None
        try:
            if process is not None:
                stop_process(process, timeout_s=timeout_s)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RestartableBroker:
    """A Tansu broker on ``s3://tansu/`` in an :class:`S3Server`, both children of the test.

    Logs: ``log_dir/moto.log`` and ``log_dir/tansu.log`` (appended to across restarts);
    :meth:`logs` returns their tails for an assertion message. Ports are chosen at
    construction and never change, so clients keep one bootstrap address throughout.
    :attr:`timings` holds how many seconds the last of each step took (``s3_start``,
    ``broker_start``, ``broker_stop``, ``broker_restart``).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.broker_log = log_dir / "tansu.log"
        self.s3 = S3Server(log_path=log_dir / "moto.log")
        self.broker = EmbeddedBroker(
            log_path=self.broker_log,
            storage_url=f"s3://{self.s3.bucket}/",
            env={
                "AWS_ENDPOINT": self.s3.endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1",
                "NO_PROXY": "127.0.0.1",  # Tansu talks to moto directly, whatever the machine
                "no_proxy": "127.0.0.1",
            },
        )
        self.timings: dict[str, float] = {}

    def _timed(self, step: str, action: Callable[[], T]) -> T:
        began = time.monotonic()
        result = action()
        self.timings[step] = time.monotonic() - began
        return result

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def running(self) -> bool:
        """Whether the broker process runs (the S3 server runs from start() to close())."""
        return self.broker.running

    def kafka_config(self) -> KafkaConfig:
        """Settings for this broker (no idempotent producer: Tansu has none)."""
        return self.broker.kafka_config()

    def start(self) -> str:
        """Start the S3 server, then the broker; return ``host:port`` once it accepts TCP.
        Raises :class:`EmbeddedServiceError` (with what to install or the logs) otherwise,
        leaving nothing running."""
        self._timed("s3_start", self.s3.start)
        try:
            return self._timed("broker_start", self.broker.start)
        except BaseException:
            self.s3.stop()
            raise

    def stop(self, *, kill: bool = False) -> None:
        """The outage: stop the broker process (SIGTERM; ``kill``: SIGKILL at once, a crash).
        Returns once it is gone and its port refuses connections; the S3 server keeps the
        data. On SIGTERM Tansu first serves its connected clients for up to ~5 s."""
        self._timed("broker_stop", lambda: self.broker.stop(kill=kill))

    def start_again(self) -> str:
        """Start the broker again on the same port and storage; return ``host:port`` once it
        accepts TCP. Every topic, record and committed offset is there."""
        if not self.s3.running:
            raise EmbeddedServiceError("the S3 server is not running: call start() first")
        return self._timed("broker_restart", self.broker.start)

    def close(self) -> None:
        """Stop the broker (SIGKILL: its data is discarded, so no drain to wait out) and the
        S3 server. Idempotent; leaves no process behind unless even SIGKILL failed (then it
        raises)."""
        try:
            self.broker.stop(kill=True)
        finally:
            self.s3.stop()

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` of Tansu's and moto's logs, for an assertion message."""
        return (
            f"--- {self.broker_log} ---\n{log_tail(self.broker_log, lines)}\n"
            f"--- {self.s3.log_path} ---\n{log_tail(self.s3.log_path, lines)}"
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
