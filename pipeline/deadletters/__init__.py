"""Operator tools for the dead-letter topic: ``pipeline dlq inspect`` and ``pipeline dlq replay``.

- :mod:`~pipeline.deadletters.read`: read a topic from the beginning without a consumer
  group (nothing committed) and parse dead letters, dropping duplicates by key.
- :mod:`~pipeline.deadletters.inspect`: counts by reason and source topic, with samples.
- :mod:`~pipeline.deadletters.replay`: re-publish selected dead letters to their source
  topic, at most once per key, recorded in the compacted ``<dead-letter topic>.replayed``.

The dead-letter format (key and ``x-*`` headers) is written by
:mod:`pipeline.worker.deadletter` and documented in docs/events.md; the procedures are in
docs/operations.md. Nothing here does I/O at import time.
"""

from __future__ import annotations

from pipeline.deadletters.inspect import Summary, inspect_dead_letters, summarize, summary_as_json
from pipeline.deadletters.read import (
    DeadLetter,
    DeadLetters,
    DeadLetterToolError,
    Filters,
    TopicNotFoundError,
    read_dead_letters,
    read_topics,
)
from pipeline.deadletters.replay import (
    Replayed,
    ReplayPlan,
    execute_replay,
    markers_topic,
    plan_replay,
    prepare_replay,
)

__all__ = [
    "DeadLetter",
    "DeadLetterToolError",
    "DeadLetters",
    "Filters",
    "ReplayPlan",
    "Replayed",
    "Summary",
    "TopicNotFoundError",
    "execute_replay",
    "inspect_dead_letters",
    "markers_topic",
    "plan_replay",
    "prepare_replay",
    "read_dead_letters",
    "read_topics",
    "summarize",
    "summary_as_json",
]
