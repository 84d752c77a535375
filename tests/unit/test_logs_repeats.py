"""The Kafka client's repeated lines are limited (pipeline.logs.RepeatLimiter)."""

from __future__ import annotations

import logging

from pipeline.logs import RepeatLimiter
from tests.unit.worker_fakes import FakeClock


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeated_client_line_passes_once_per_interval_and_says_how_many_were_held() -> None:
    clock = FakeClock(0.0)
    limiter = RepeatLimiter(interval_s=10, clock=clock)
    name = "aiokafka.consumer.fetcher"
    assert limiter.filter(record(name, "Failed fetch messages from %s: %s", 1, "down"))
    for n in range(19):
        clock.advance(0.1)
        assert not limiter.filter(record(name, "Failed fetch messages from %s: %s", n, "x"))
    assert limiter.filter(record(name, "Unable to update metadata from %s", 1))  # other line
    clock.advance(9)
    again = record(name, "Failed fetch messages from %s: %s", 1, "down")
    assert limiter.filter(again)
    assert again.getMessage() == "Failed fetch messages from 1: down [19 more like this held back]"
    clock.advance(11)
    quiet = record(name, "Failed fetch messages from %s: %s", 1, "down")
    assert limiter.filter(quiet) and "held back" not in quiet.getMessage()


def test_our_own_lines_are_never_limited() -> None:
    limiter = RepeatLimiter(clock=FakeClock(0.0))
    for _ in range(5):
        assert limiter.filter(record("pipeline.worker.flush", "flush of %s failed", "t"))
