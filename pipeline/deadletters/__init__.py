"""Operator tools for the dead-letter topic: ``pipeline dlq inspect`` and ``pipeline dlq replay``.

- :mod:`~pipeline.deadletters.read`: read a topic from the beginning without a consumer
  group (nothing committed) and parse dead letters, dropping duplicates by key.
- :mod:`~pipeline.deadletters.inspect`: counts by reason and source topic, with samples.
- :mod:`~pipeline.deadletters.replay`: re-publish selected dead letters to their source
  topic, at most once per key, recorded in the compacted ``<dead-letter topic>.replayed``.
- :mod:`~pipeline.deadletters.broker` and :mod:`~pipeline.deadletters.errors`: a broker
  that is down, restarting or refusing the client ends every tool within its broker
  timeout with one classified error (exit 1, or 2 for configuration), never a hang.

The dead-letter format (key and ``x-*`` headers) is written by
:mod:`pipeline.worker.deadletter` and documented in docs/events.md; the procedures are in
docs/operations.md. Nothing here does I/O at import time.
"""

from __future__ import annotations

from pipeline.deadletters.broker import DEFAULT_BROKER_TIMEOUT_S, quiet_client_logs
from pipeline.deadletters.errors import (
    BrokerDownError,
    BrokerRefusedError,
    DeadLetterToolError,
    TopicNotFoundError,
)
from pipeline.deadletters.inspect import Summary, inspect_dead_letters, summarize, summary_as_json
from pipeline.deadletters.read import (
    DeadLetter,
    DeadLetters,
    Filters,
    read_dead_letters,
    read_topics,
)
from pipeline.deadletters.replay import (
    Replayed,
    ReplayIncompleteError,
    ReplayPlan,
    execute_replay,
    markers_topic,
    plan_replay,
    prepare_replay,
)

__all__ = [
    "DEFAULT_BROKER_TIMEOUT_S",
    "BrokerDownError",
    "BrokerRefusedError",
    "DeadLetter",
    "DeadLetterToolError",
    "DeadLetters",
    "Filters",
    "ReplayIncompleteError",
    "ReplayPlan",
    "Replayed",
    "Summary",
    "TopicNotFoundError",
    "execute_replay",
    "inspect_dead_letters",
    "markers_topic",
    "plan_replay",
    "prepare_replay",
    "quiet_client_logs",
    "read_dead_letters",
    "read_topics",
    "summarize",
    "summary_as_json",
]
