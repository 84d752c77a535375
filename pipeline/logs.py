"""Log output: human-readable lines, or one JSON object per line (``PIPELINE_LOG_FORMAT``).

Log pipelines in Kubernetes (Fluent Bit, Vector, Loki's promtail) parse one JSON object per
line best; ``json`` gives exactly that on stderr: ``ts`` (UTC, ISO-8601 with milliseconds),
``level``, ``logger``, ``message``, ``pid``, and ``exception`` (the formatted traceback)
when there is one. Nothing is colored when the output is not a terminal.
"""

from __future__ import annotations

import logging
import sys
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


def configure(level: str, log_format: str) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


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
