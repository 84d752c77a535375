"""The shape of an event kind's declaration (see :mod:`pipeline.kinds`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import Event, EventKind
from pipeline.worker.writes import Writer

__all__ = ["KindSpec"]


@dataclass(frozen=True)
class KindSpec:
    """One event kind's declaration.

    - ``kind`` / ``event``: the contract (``decode_record(kind, ...)`` yields ``event``).
    - ``topic``: the default topic name; ``topic_setting`` the environment variable that
      overrides it (read only by :meth:`pipeline.config.Config.from_env`).
    - ``writer``: the tables and the SQL that store a batch of these events; its
      ``tables`` are all time-partitioned and each needs a ``partition_policies`` row.
    """

    kind: EventKind
    event: type[Event]
    topic: str
    topic_setting: str
    writer: Writer
