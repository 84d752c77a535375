"""Settings of the pipeline's own processes and data: topics, workers, the HTTP server,
migrations."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pipeline.config._common import _positive
from pipeline.contract import EventKind
from pipeline.errors import ConfigError
from pipeline.kinds import KINDS


@dataclass(frozen=True)
class TopicsConfig:
    """Topic names: one source topic per event kind, and the dead-letter topic.

    ``sources`` maps a kind to its topic; kinds left out get their declared default
    (:data:`pipeline.kinds.KINDS`). Dead letters of every source topic go to
    ``dead_letters``. After construction ``sources`` holds every kind, read-only.
    """

    sources: Mapping[EventKind, str] = field(default_factory=dict)
    dead_letters: str = "ingest-dlq"

    def __post_init__(self) -> None:
        unknown = set(self.sources) - {spec.kind for spec in KINDS}
        if unknown:
            raise ConfigError(f"no such event kind: {', '.join(sorted(unknown))}")
        full = {spec.kind: self.sources.get(spec.kind, spec.topic) for spec in KINDS}
        object.__setattr__(self, "sources", MappingProxyType(full))
        names = (*full.values(), self.dead_letters)
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"topic names must be non-empty and distinct, got {names}")

    def topic(self, kind: EventKind) -> str:
        """The topic that carries events of ``kind``."""
        return self.sources[kind]

    def kind_of(self, topic: str) -> EventKind | None:
        """The kind whose events ``topic`` carries; None for any other topic."""
        return next((kind for kind, name in self.sources.items() if name == topic), None)

    @property
    def source_topics(self) -> tuple[str, ...]:
        """Every source topic, in the order of :data:`pipeline.kinds.KINDS`."""
        return tuple(self.sources.values())

    def settings(self) -> dict[str, str]:
        """Each topic (sources and dead letters) -> the environment variable naming it."""
        names = {self.topic(spec.kind): spec.topic_setting for spec in KINDS}
        return {**names, self.dead_letters: "PIPELINE_TOPIC_DEAD_LETTERS"}


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one ``pipeline worker`` process."""

    group_id: str = "event-pipeline"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    web_port: int = 6066
    flush_interval_ms: int = 200
    flush_max_records: int = 100_000
    flush_max_events: int = 50_000
    fetch_max_bytes: int = 8 * 1024 * 1024
    revoke_timeout_ms: int = 10_000
    stopped_retry_s: float = 60.0
    flush_connections: int = 1
    dead_letter_max_bytes: int = 900_000
    retry_initial_ms: int = 100
    retry_max_ms: int = 30_000
    shutdown_timeout_s: float = 30.0
    maintenance_interval_s: float = 3_600.0
    rollup_interval_s: float = 300.0
    # How long a starting worker waits for PostgreSQL and the broker to answer before it
    # exits naming the setting to check; 0 waits forever.
    startup_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.group_id:
            raise ConfigError("PIPELINE_GROUP_ID must not be empty")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError(f"PIPELINE_WEB_PORT must be 0..65535, got {self.web_port}")
        _positive("PIPELINE_FLUSH_INTERVAL_MS", self.flush_interval_ms)
        _positive("PIPELINE_FLUSH_MAX_RECORDS", self.flush_max_records)
        _positive("PIPELINE_FLUSH_MAX_EVENTS", self.flush_max_events)
        if self.fetch_max_bytes < 1024 * 1024:
            raise ConfigError(
                f"PIPELINE_FETCH_MAX_BYTES must be at least 1048576 (1 MiB), "
                f"got {self.fetch_max_bytes}"
            )
        _positive("PIPELINE_REVOKE_TIMEOUT_MS", self.revoke_timeout_ms)
        _positive("PIPELINE_STOPPED_RETRY_S", self.stopped_retry_s)
        if self.dead_letter_max_bytes < 1024:
            raise ConfigError(
                f"PIPELINE_DEAD_LETTER_MAX_BYTES must be at least 1024, "
                f"got {self.dead_letter_max_bytes}"
            )
        if not 1 <= self.flush_connections <= 16:
            raise ConfigError(
                f"PIPELINE_FLUSH_CONNECTIONS must be 1..16, got {self.flush_connections}"
            )
        _positive("PIPELINE_RETRY_INITIAL_MS", self.retry_initial_ms)
        if self.retry_max_ms < self.retry_initial_ms:
            raise ConfigError("PIPELINE_RETRY_MAX_MS must be at least PIPELINE_RETRY_INITIAL_MS")
        _positive("PIPELINE_SHUTDOWN_TIMEOUT_S", self.shutdown_timeout_s)
        _positive("PIPELINE_MAINTENANCE_INTERVAL_S", self.maintenance_interval_s)
        _positive("PIPELINE_ROLLUP_INTERVAL_S", self.rollup_interval_s)
        if self.startup_timeout_s < 0:
            raise ConfigError(
                f"PIPELINE_STARTUP_TIMEOUT_S must be >= 0 (0: wait forever), "
                f"got {self.startup_timeout_s}"
            )


def default_sql_dir() -> Path:
    """Where the migrations are: the copy inside an installed wheel, else the source tree."""
    package = Path(__file__).resolve().parent.parent  # pipeline/
    for candidate in (package / "_sql" / "migrations", package.parent / "sql" / "migrations"):
        if candidate.is_dir():
            return candidate
    return package.parent / "sql" / "migrations"


@dataclass(frozen=True)
class HttpConfig:
    """Settings of one ``pipeline http`` process (:mod:`pipeline.http`).

    Limits apply per request: ``max_body_bytes`` to the body after decompression,
    ``max_events`` to its events. The per-key token bucket holds ``rate_limit_burst_events``
    events and refills ``rate_limit_events_per_s`` a second (0: no limit). A key is
    remembered ``key_cache_ttl_s`` (so a revocation takes effect within that time). A
    request's events must be acknowledged by the broker within ``publish_timeout_s``
    (else 503); its body must arrive within ``request_timeout_s`` (else 408). On SIGTERM
    in-flight requests get ``shutdown_timeout_s`` to finish."""

    host: str = "0.0.0.0"  # a server listens on every interface; the ingress decides
    port: int = 8080
    max_body_bytes: int = 1_048_576
    max_events: int = 1_000
    request_timeout_s: float = 30.0
    publish_timeout_s: float = 10.0
    rate_limit_events_per_s: float = 5_000.0
    rate_limit_burst_events: int = 10_000
    key_cache_ttl_s: float = 10.0
    keepalive_timeout_s: float = 75.0
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"PIPELINE_HTTP_PORT must be 0..65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError(
                f"PIPELINE_HTTP_MAX_BODY_BYTES must be at least 1024, got {self.max_body_bytes}"
            )
        _positive("PIPELINE_HTTP_MAX_EVENTS", self.max_events)
        _positive("PIPELINE_HTTP_REQUEST_TIMEOUT_S", self.request_timeout_s)
        _positive("PIPELINE_HTTP_PUBLISH_TIMEOUT_S", self.publish_timeout_s)
        if not 0 <= self.rate_limit_events_per_s < float("inf"):
            raise ConfigError(
                "PIPELINE_HTTP_RATE_LIMIT_EVENTS_PER_S must be >= 0 (0: no limit), "
                f"got {self.rate_limit_events_per_s}"
            )
        if self.rate_limit_events_per_s and self.rate_limit_burst_events < self.max_events:
            raise ConfigError(
                "PIPELINE_HTTP_RATE_LIMIT_BURST_EVENTS must be at least PIPELINE_HTTP_MAX_EVENTS "
                f"({self.max_events}), or a full request could never pass; "
                f"got {self.rate_limit_burst_events}"
            )
        if not 0 < self.key_cache_ttl_s <= 300:
            raise ConfigError(
                "PIPELINE_HTTP_KEY_CACHE_TTL_S must be in (0, 300]: it is how long a revoked "
                f"key keeps working; got {self.key_cache_ttl_s}"
            )
        _positive("PIPELINE_HTTP_KEEPALIVE_TIMEOUT_S", self.keepalive_timeout_s)
        _positive("PIPELINE_HTTP_SHUTDOWN_TIMEOUT_S", self.shutdown_timeout_s)

    def to_env(self) -> dict[str, str]:
        """The ``PIPELINE_HTTP_*`` variables that rebuild these settings."""
        return {
            "PIPELINE_HTTP_HOST": self.host,
            "PIPELINE_HTTP_PORT": str(self.port),
            "PIPELINE_HTTP_MAX_BODY_BYTES": str(self.max_body_bytes),
            "PIPELINE_HTTP_MAX_EVENTS": str(self.max_events),
            "PIPELINE_HTTP_REQUEST_TIMEOUT_S": str(self.request_timeout_s),
            "PIPELINE_HTTP_PUBLISH_TIMEOUT_S": str(self.publish_timeout_s),
            "PIPELINE_HTTP_RATE_LIMIT_EVENTS_PER_S": str(self.rate_limit_events_per_s),
            "PIPELINE_HTTP_RATE_LIMIT_BURST_EVENTS": str(self.rate_limit_burst_events),
            "PIPELINE_HTTP_KEY_CACHE_TTL_S": str(self.key_cache_ttl_s),
            "PIPELINE_HTTP_KEEPALIVE_TIMEOUT_S": str(self.keepalive_timeout_s),
            "PIPELINE_HTTP_SHUTDOWN_TIMEOUT_S": str(self.shutdown_timeout_s),
        }


@dataclass(frozen=True)
class MigrationsConfig:
    """Where migrations live and how long a runner waits for another one to finish."""

    directory: Path = field(default_factory=default_sql_dir)
    lock_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("PIPELINE_MIGRATION_LOCK_TIMEOUT_S", self.lock_timeout_s)
