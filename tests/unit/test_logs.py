"""JSON log lines: one object per line, parseable, with the traceback inside."""

from __future__ import annotations

import logging

import orjson

from pipeline.logs import JsonFormatter


def test_a_record_is_one_json_object_on_one_line() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "pipeline.worker", logging.ERROR, __file__, 1, "flush of %s failed", ("api",), None
        )
        import sys

        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "pipeline.worker"
    assert entry["message"] == "flush of api failed"
    assert "ValueError: boom" in entry["exception"]
    assert entry["ts"].endswith("+00:00")
