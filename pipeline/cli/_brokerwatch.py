"""The demo's embedded broker, watched (:class:`BrokerWatch`): a step that needs the broker
is abandoned within seconds of the broker stopping, with one line saying so, instead of
waiting out a client's timeouts (see :mod:`pipeline.cli.demo`)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from pipeline.deadletters.broker import describe
from pipeline.embedded import EmbeddedBroker
from pipeline.errors import EmbeddedServiceError

log = logging.getLogger(__name__)
T = TypeVar("T")

# The embedded broker counts as stopped once it has refused connections for this long
# (checked every PROBE_EVERY_S while a step needs it; one refusal may be a hiccup).
_DOWN_FOR_S = 3.0
PROBE_EVERY_S = 1.0
# How long an abandoned step may take to wind down (a producer waiting for a broker that
# is gone needs more than one cancellation).
_WIND_DOWN_S = 10.0


class BrokerWatch:
    """The demo's embedded broker, watched: :meth:`guard` runs a step that needs it and
    abandons the step when the broker stops accepting connections (see the module
    docstring); :meth:`stopped` is the one-line error that says so."""

    def __init__(self, broker: EmbeddedBroker, log_path: Path) -> None:
        self.broker = broker
        self.log_path = log_path
        self.gone = False  # the broker was found stopped (the workers need not linger)
        self._refusing_since: float | None = None

    def start(self) -> None:
        try:
            self.broker.start()
        except EmbeddedServiceError as exc:
            copy = self._keep_log()
            raise EmbeddedServiceError(f"{exc}{f' (kept as {copy})' if copy else ''}") from exc

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.broker.port), timeout=1.0):
                return True
        except OSError:
            return False

    def down(self) -> bool:
        """Whether the broker has refused connections for ``_DOWN_FOR_S`` (probes now)."""
        if self._accepts():
            self._refusing_since = None
            return False
        now = time.monotonic()
        if self._refusing_since is None:
            self._refusing_since = now
        self.gone = now - self._refusing_since >= _DOWN_FOR_S
        return self.gone

    def stopped(self, step: str) -> EmbeddedServiceError:
        """The error for a broker found stopped during ``step``."""
        self.gone = True
        copy = self._keep_log()
        return EmbeddedServiceError(
            f"the embedded Kafka broker ({self.broker.bootstrap_servers}) stopped while "
            f"{step}: the demo cannot go on and stopped everything it started; run it again"
            + (f" (the broker's log: {copy})" if copy else "")
        )

    def _keep_log(self) -> str | None:
        """Copy the broker's log out of the demo's temporary directory (deleted on exit);
        the copy's path, or None when there is nothing to keep."""
        try:
            if not self.log_path.stat().st_size:
                return None
            fd, name = tempfile.mkstemp(prefix="pipeline-demo-broker-", suffix=".log")
            with os.fdopen(fd, "wb") as out, self.log_path.open("rb") as log_file:
                shutil.copyfileobj(log_file, out)
        except OSError:
            return None
        return name

    async def guard(self, step: str, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (which needs the broker) and return its result; raise
        :meth:`stopped` as soon as the broker is found down, or when ``work`` fails
        because it is. Another Kafka or socket error is raised as an
        :class:`EmbeddedServiceError` naming the step; anything else propagates."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=PROBE_EVERY_S)
                if not task.done() and await asyncio.to_thread(self.down):
                    raise self.stopped(step)
        finally:
            if not task.done():
                await _wind_down(task, step)
        try:
            return task.result()
        except (KafkaError, OSError) as exc:
            if not await asyncio.to_thread(self._accepts):
                raise self.stopped(step) from exc
            raise EmbeddedServiceError(f"{step} failed: {describe(exc)}") from exc

    def check(self, step: str) -> None:
        """Raise :meth:`stopped` if the broker is down (for synchronous waits)."""
        if self.down():
            raise self.stopped(step)


async def _wind_down(task: asyncio.Future[Any], step: str) -> None:
    """Cancel an abandoned step until it ends, for at most ``_WIND_DOWN_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _WIND_DOWN_S
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.done():
        log.warning("%s did not stop within %gs of being abandoned", step, _WIND_DOWN_S)
    elif not task.cancelled():
        task.exception()  # retrieved: its failure is the broker's, reported by the caller
