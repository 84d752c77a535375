"""Log output: human-readable lines, or one JSON object per line (``PIPELINE_LOG_FORMAT``).

Log pipelines in Kubernetes (Fluent Bit, Vector, Loki's promtail) parse one JSON object per
line best; ``json`` gives exactly that on stderr: ``ts`` (UTC, ISO-8601 with milliseconds),
``level``, ``logger``, ``message``, ``pid``, and ``exception`` (the formatted traceback)
when there is one. Nothing is colored when the output is not a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class RepeatLimiter(logging.Filter):
    """Lets a repeated line of the Kafka client through at most once per ``interval_s``.

    While the broker is down aiokafka logs an ERROR line per failed request, ~20 lines a
    second per process. A line is "the same" when it comes from the same logger with the
    same message template (the arguments may differ); the next one let through says how
    many were held back. Only loggers under ``prefixes`` are limited; ours log once per
    episode already.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (passed at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        # The template as logged (another handler's limiter may have annotated record.msg).
        template = record.__dict__.setdefault("repeat_template", str(record.msg))
        key = (record.name, template)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} [{seen[1]} more like this held back]"
        return True


def limit_repeats() -> None:
    """Add a :class:`RepeatLimiter` to every handler of the root logger (once each); call
    after logging is configured."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatLimiter) for f in handler.filters):
            handler.addFilter(RepeatLimiter())


def configure(level: str, log_format: str) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    limit_repeats()


def dict_config(level: str, log_format: str) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for processes whose framework configures logging
    (the faust worker); None keeps the framework's own text format."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
                "level": level,
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


@contextlib.contextmanager
def quiet_client_logs(level: str | int = logging.WARNING) -> Iterator[None]:
    """Silence the ``aiokafka`` logger for the duration, unless ``level`` (the command's
    ``--log-level``) is INFO or more verbose: then its lines are what the user asked for."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    if isinstance(level, int) and level <= logging.INFO:
        yield
        return
    logger = logging.getLogger("aiokafka")
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(saved)
