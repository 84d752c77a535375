"""Running one worker process: faust's Worker with a bounded shutdown.

faust handles SIGTERM/SIGINT by stopping its services; that can hang (a stuck broker
connection, a flush retrying against a dead PostgreSQL). A watchdog thread started by the
first signal ends the process after ``shutdown_timeout_s`` no matter what. Whatever was
not acked then is redelivered to the next owner and skipped or applied according to the
PostgreSQL watermark, so a forced exit never loses or doubles data.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import faust

from pipeline.config import Config
from pipeline.metrics import Metrics
from pipeline.worker.app import create_app
from pipeline.worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class _BoundedWorker(faust.Worker):
    shutdown_timeout_s: float = 30.0
    runtime: WorkerRuntime | None = None

    def _arm_watchdog(self) -> None:
        timeout = self.shutdown_timeout_s

        def expire() -> None:
            log.error("shutdown took longer than %.0fs; exiting now", timeout)
            os._exit(1)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()

    def _on_sigterm(self) -> None:
        self._arm_watchdog()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_watchdog()
        super()._on_sigint()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.runtime is not None:
            await self.runtime.stop()


def run_worker(config: Config, *, log_level: str = "INFO", metrics: Metrics | None = None) -> Any:
    """Run a worker until it is told to stop; never returns normally (SystemExit)."""
    runtime = WorkerRuntime(config, metrics)
    app = create_app(config, runtime)
    worker = _BoundedWorker(app, loglevel=log_level, quiet=True, redirect_stdouts=False)
    worker.shutdown_timeout_s = config.worker.shutdown_timeout_s
    worker.runtime = runtime
    return worker.execute_from_commandline()
