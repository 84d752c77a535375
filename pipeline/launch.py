"""Starting ``pipeline worker`` processes from a configuration (the demo, tests, benchmarks).

A :class:`WorkerProcess` runs ``python -m pipeline worker`` with the environment that
:meth:`Config.to_env <pipeline.config.Config.to_env>` derives from the configuration it is
given, so the child sees exactly these settings. It inherits this process's environment
otherwise (PATH, locale); pipeline variables set there are overridden.

:meth:`WorkerProcess.stop` sends SIGTERM and waits (the worker bounds its own shutdown),
then kills; :meth:`WorkerProcess.kill` is for crash tests.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from pipeline.config import Config


class WorkerProcess:
    """One worker process with its own id, web port and log file."""

    def __init__(
        self,
        config: Config,
        *,
        worker_id: str,
        web_port: int,
        log_path: Path,
        log_level: str = "INFO",
        cwd: Path | None = None,
    ) -> None:
        worker = dataclasses.replace(config.worker, worker_id=worker_id, web_port=web_port)
        self.config = dataclasses.replace(config, worker=worker)
        self.worker_id = worker_id
        self.web_port = web_port
        self.log_path = log_path
        self._log_level = log_level
        self._cwd = cwd
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PG"))}
        env.update(self.config.to_env())
        source = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--log-level", self._log_level, "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._cwd,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        """GET a path of the worker's web server: (status, body); (0, error) if down."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError as error:
            return 0, str(error)

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout_s: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                return False
            if self.ready():
                return True
            time.sleep(0.2)
        return False

    def signal(self, sig: int) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def wait(self, timeout_s: float = 60.0) -> int:
        if self.process is None:
            return 0
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait (shutdown bound + margin), then SIGKILL. Returns the exit code."""
        if self.process is None:
            return None
        limit = timeout_s if timeout_s is not None else self.config.worker.shutdown_timeout_s + 5
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
