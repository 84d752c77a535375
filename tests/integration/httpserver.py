"""A real ``pipeline http`` process for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.config import Config, HttpConfig
from pipeline.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


class HttpServer:
    """``python -m pipeline --log-level DEBUG http`` on a free port, logging to a file."""

    def __init__(self, config: Config, log_path: Path, **http: Any) -> None:
        self.port = free_port()
        self.config = replace(config, http=replace(HttpConfig(), port=self.port, **http))
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> HttpServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PG"))}
        env.update(self.config.to_env())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "--log-level", "DEBUG", "http"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_path.parent,
            )
        if wait:
            self.wait_ready()
        return self

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.get("/readyz") != 200:
            assert self.process is not None
            assert self.process.poll() is None, f"pipeline http exited\n{self.logs()}"
            assert time.monotonic() < deadline, f"pipeline http not ready\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit code (SIGKILL after ``timeout_s``)."""
        p = self.process
        if p is None:
            return 0
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode
