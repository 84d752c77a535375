"""The configuration tree: frozen dataclasses built from the environment at the entry point.

:meth:`Config.from_env` is the only place in the package that reads environment variables.
Every other module receives the piece of configuration it needs as an argument. Each class
validates itself on construction and raises :class:`~pipeline.errors.ConfigError` naming the
variable and the accepted values. Secrets (passwords, SASL credentials) never appear in
``repr``.

Units are in the names: ``_ms`` milliseconds, ``_s`` seconds.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, urlsplit, urlunsplit

from pipeline.contract import EventKind
from pipeline.errors import ConfigError
from pipeline.kinds import KINDS

_REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and ``repr``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{_REDACTED}@{netloc[-1]}"))


def _positive(name: str, value: float) -> None:
    if not value > 0:  # NaN too
        raise ConfigError(f"{name} must be greater than 0, got {value!r}")


@dataclass(frozen=True)
class DatabaseConfig:
    """How to reach PostgreSQL.

    ``url`` is a libpq-style URL (``postgresql://user:pass@host:5432/db?sslmode=require``);
    asyncpg understands ``sslmode`` in it. ``statement_timeout_ms`` bounds every statement
    the pipeline runs (0 disables it).
    """

    url: str = field(repr=False)
    pool_min_size: int = 1
    pool_max_size: int = 4
    connect_timeout_s: float = 10.0
    statement_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                f"DATABASE_URL must start with postgresql://, got scheme {scheme!r} "
                f"in {redact_url(self.url)!r}"
            )
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ConfigError(
                "DATABASE_POOL_MIN_SIZE must be at least 1 and at most DATABASE_POOL_MAX_SIZE, "
                f"got {self.pool_min_size} and {self.pool_max_size}"
            )
        _positive("DATABASE_CONNECT_TIMEOUT_S", self.connect_timeout_s)
        if self.statement_timeout_ms < 0:
            raise ConfigError("DATABASE_STATEMENT_TIMEOUT_MS must be 0 (off) or more")

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return (
            f"DatabaseConfig(url={self.redacted_url!r}, pool_min_size={self.pool_min_size}, "
            f"pool_max_size={self.pool_max_size}, connect_timeout_s={self.connect_timeout_s}, "
            f"statement_timeout_ms={self.statement_timeout_ms})"
        )


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Every codec Kafka defines. The worker and the tools read all of them whatever this says.
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaConfig:
    """How to reach the Kafka cluster; the TLS/SASL fields are passed to aiokafka as-is."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "event-pipeline"
    # Idempotent producers (no duplicates on producer retries) need InitProducerId, which
    # Apache Kafka supports and the embedded Tansu broker does not.
    idempotent_producer: bool = True
    # How our producers (the SDK, dead letters, replay) compress record batches. zstd
    # measured best for our JSON records: ~5.8x smaller at ~0.6 us of CPU per event
    # (docs/performance.md, "Compression"). Needs Kafka 2.1 or newer.
    compression_type: str = "zstd"

    def __post_init__(self) -> None:
        if self.compression_type not in COMPRESSION_TYPES:
            raise ConfigError(
                f"KAFKA_COMPRESSION_TYPE must be one of {', '.join(COMPRESSION_TYPES)}, "
                f"got {self.compression_type!r}"
            )
        if not self.bootstrap_servers or not all(self.bootstrap_servers):
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS must list at least one host:port")
        for server in self.bootstrap_servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    f"KAFKA_BOOTSTRAP_SERVERS entries must be host:port, got {server!r}"
                )
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(_SECURITY_PROTOCOLS)}, "
                f"got {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _SASL_MECHANISMS:
                raise ConfigError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(_SASL_MECHANISMS)} "
                    f"when KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required "
                    f"when KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
                )

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)


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
    package = Path(__file__).resolve().parent
    for candidate in (package / "_sql" / "migrations", package.parent / "sql" / "migrations"):
        if candidate.is_dir():
            return candidate
    return package.parent / "sql" / "migrations"


# A new URL starts wherever a comma is followed by a scheme, so that commas inside one URL
# (a multi-host netloc, an unencoded password) do not split it.
_URL_LIST_SPLIT = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_database_urls(text: str, setting: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list (``setting`` names the variable in errors), each
    checked to be a ``postgresql://`` URL; empty entries are ignored."""
    urls = tuple(u.strip().rstrip(",").strip() for u in _URL_LIST_SPLIT.split(text))
    urls = tuple(u for u in urls if u)
    for n, url in enumerate(urls, 1):
        scheme = urlsplit(url).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                f"{setting} entry {n} must start with postgresql://, got {redact_url(url)!r}"
            )
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{setting} lists the same URL twice")
    return urls


@dataclass(frozen=True)
class AnalyticsConfig:
    """Where analyst queries (``pipeline query``) read: ``replicas`` are read replicas in
    order of preference (``ANALYTICS_DATABASE_URL``, comma-separated). Before a query each
    one is checked (reachable within ``check_timeout_s``, in recovery, replay lag under
    ``max_lag_s``); a long-running process reuses a check for ``check_interval_s``. With
    no healthy replica, queries go to the primary (``DATABASE_URL``). Each replica's
    connect and statement timeouts are the primary's (``DATABASE_CONNECT_TIMEOUT_S``,
    ``DATABASE_STATEMENT_TIMEOUT_MS``); the check itself is bounded by ``check_timeout_s``.
    See :mod:`pipeline.analytics.routing`."""

    replicas: tuple[DatabaseConfig, ...] = ()
    max_lag_s: float = 5.0
    check_interval_s: float = 30.0
    check_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        _positive("ANALYTICS_MAX_LAG_S", self.max_lag_s)
        _positive("ANALYTICS_CHECK_INTERVAL_S", self.check_interval_s)
        _positive("ANALYTICS_CHECK_TIMEOUT_S", self.check_timeout_s)
        urls = [r.url for r in self.replicas]
        if len(set(urls)) != len(urls):
            raise ConfigError("ANALYTICS_DATABASE_URL lists the same URL twice")


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


def _http_from_env(reader: _Reader) -> HttpConfig:
    d = HttpConfig()
    return HttpConfig(
        host=reader.text("PIPELINE_HTTP_HOST") or d.host,
        port=reader.integer("PIPELINE_HTTP_PORT", d.port),
        max_body_bytes=reader.integer("PIPELINE_HTTP_MAX_BODY_BYTES", d.max_body_bytes),
        max_events=reader.integer("PIPELINE_HTTP_MAX_EVENTS", d.max_events),
        request_timeout_s=reader.number("PIPELINE_HTTP_REQUEST_TIMEOUT_S", d.request_timeout_s),
        publish_timeout_s=reader.number("PIPELINE_HTTP_PUBLISH_TIMEOUT_S", d.publish_timeout_s),
        rate_limit_events_per_s=reader.number(
            "PIPELINE_HTTP_RATE_LIMIT_EVENTS_PER_S", d.rate_limit_events_per_s
        ),
        rate_limit_burst_events=reader.integer(
            "PIPELINE_HTTP_RATE_LIMIT_BURST_EVENTS", d.rate_limit_burst_events
        ),
        key_cache_ttl_s=reader.number("PIPELINE_HTTP_KEY_CACHE_TTL_S", d.key_cache_ttl_s),
        keepalive_timeout_s=reader.number(
            "PIPELINE_HTTP_KEEPALIVE_TIMEOUT_S", d.keepalive_timeout_s
        ),
        shutdown_timeout_s=reader.number("PIPELINE_HTTP_SHUTDOWN_TIMEOUT_S", d.shutdown_timeout_s),
    )


@dataclass(frozen=True)
class MigrationsConfig:
    """Where migrations live and how long a runner waits for another one to finish."""

    directory: Path = field(default_factory=default_sql_dir)
    lock_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("PIPELINE_MIGRATION_LOCK_TIMEOUT_S", self.lock_timeout_s)


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``database`` and ``kafka`` are ``None`` when not configured:
    commands that need them say so (or start embedded services, for ``pipeline demo``).
    ``analytics`` says where ``pipeline query`` reads: read replicas, checked before use,
    with ``database`` (the primary) as the fallback."""

    database: DatabaseConfig | None = None
    kafka: KafkaConfig | None = None
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    migrations: MigrationsConfig = field(default_factory=MigrationsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    state_dir: Path = field(default_factory=lambda: Path(".state"))
    log_format: str = "text"

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"PIPELINE_LOG_FORMAT must be text or json, got {self.log_format!r}")

    def require_database(self) -> DatabaseConfig:
        """Return the database settings or raise a :class:`ConfigError` that says what to do."""
        if self.database is None:
            raise ConfigError(
                "no database configured: set DATABASE_URL (or PGHOST/PGDATABASE/...) to a "
                "PostgreSQL server, or run `pipeline demo --keep`, which starts embedded "
                "services and prints the DATABASE_URL to export"
            )
        return self.database

    def require_kafka(self) -> KafkaConfig:
        """Return the Kafka settings or raise a :class:`ConfigError` that says what to do."""
        if self.kafka is None:
            raise ConfigError(
                "no Kafka configured: set KAFKA_BOOTSTRAP_SERVERS=host:port[,host:port], or "
                "run `pipeline demo --keep`, which starts embedded services and prints it"
            )
        return self.kafka

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` rebuild this configuration
        (for starting worker processes). Per-process settings (worker id, web port) are
        included; secrets are included too, so never log the result."""
        env: dict[str, str] = {}
        if self.database is not None:
            d = self.database
            env.update(
                DATABASE_URL=d.url,
                DATABASE_POOL_MIN_SIZE=str(d.pool_min_size),
                DATABASE_POOL_MAX_SIZE=str(d.pool_max_size),
                DATABASE_CONNECT_TIMEOUT_S=str(d.connect_timeout_s),
                DATABASE_STATEMENT_TIMEOUT_MS=str(d.statement_timeout_ms),
            )
        a = self.analytics
        if a.replicas:
            env["ANALYTICS_DATABASE_URL"] = ",".join(r.url for r in a.replicas)
            if self.database is None:  # the replicas' timeouts are DATABASE_*'s (from_env)
                env.update(
                    DATABASE_CONNECT_TIMEOUT_S=str(a.replicas[0].connect_timeout_s),
                    DATABASE_STATEMENT_TIMEOUT_MS=str(a.replicas[0].statement_timeout_ms),
                )
        env.update(
            ANALYTICS_MAX_LAG_S=str(a.max_lag_s),
            ANALYTICS_CHECK_INTERVAL_S=str(a.check_interval_s),
            ANALYTICS_CHECK_TIMEOUT_S=str(a.check_timeout_s),
        )
        if self.kafka is not None:
            k = self.kafka
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=k.bootstrap,
                KAFKA_SECURITY_PROTOCOL=k.security_protocol,
                KAFKA_CLIENT_ID=k.client_id,
                KAFKA_IDEMPOTENT_PRODUCER="true" if k.idempotent_producer else "false",
                KAFKA_COMPRESSION_TYPE=k.compression_type,
            )
            optional = {
                "KAFKA_SASL_MECHANISM": k.sasl_mechanism,
                "KAFKA_SASL_USERNAME": k.sasl_username,
                "KAFKA_SASL_PASSWORD": k.sasl_password,
                "KAFKA_SSL_CAFILE": k.ssl_cafile,
                "KAFKA_SSL_CERTFILE": k.ssl_certfile,
                "KAFKA_SSL_KEYFILE": k.ssl_keyfile,
            }
            env.update({name: value for name, value in optional.items() if value})
        t, w = self.topics, self.worker
        env.update({spec.topic_setting: t.topic(spec.kind) for spec in KINDS})
        env.update(
            PIPELINE_TOPIC_DEAD_LETTERS=t.dead_letters,
            PIPELINE_GROUP_ID=w.group_id,
            PIPELINE_WORKER_ID=w.worker_id,
            PIPELINE_WEB_PORT=str(w.web_port),
            PIPELINE_FLUSH_INTERVAL_MS=str(w.flush_interval_ms),
            PIPELINE_FLUSH_MAX_RECORDS=str(w.flush_max_records),
            PIPELINE_FLUSH_MAX_EVENTS=str(w.flush_max_events),
            PIPELINE_FETCH_MAX_BYTES=str(w.fetch_max_bytes),
            PIPELINE_REVOKE_TIMEOUT_MS=str(w.revoke_timeout_ms),
            PIPELINE_STOPPED_RETRY_S=str(w.stopped_retry_s),
            PIPELINE_FLUSH_CONNECTIONS=str(w.flush_connections),
            PIPELINE_DEAD_LETTER_MAX_BYTES=str(w.dead_letter_max_bytes),
            PIPELINE_RETRY_INITIAL_MS=str(w.retry_initial_ms),
            PIPELINE_RETRY_MAX_MS=str(w.retry_max_ms),
            PIPELINE_SHUTDOWN_TIMEOUT_S=str(w.shutdown_timeout_s),
            PIPELINE_MAINTENANCE_INTERVAL_S=str(w.maintenance_interval_s),
            PIPELINE_ROLLUP_INTERVAL_S=str(w.rollup_interval_s),
            PIPELINE_STARTUP_TIMEOUT_S=str(w.startup_timeout_s),
            PIPELINE_MIGRATIONS_DIR=str(self.migrations.directory),
            PIPELINE_MIGRATION_LOCK_TIMEOUT_S=str(self.migrations.lock_timeout_s),
            PIPELINE_STATE_DIR=str(self.state_dir),
            PIPELINE_LOG_FORMAT=self.log_format,
        )
        env.update(self.http.to_env())
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build and validate the configuration from ``env`` (default: ``os.environ``).

        Raises :class:`ConfigError` for a malformed or out-of-range value.
        """
        e = os.environ if env is None else env
        reader = _Reader(e)
        database = _database_from_env(reader)
        replica_urls = split_database_urls(
            reader.text("ANALYTICS_DATABASE_URL") or "", "ANALYTICS_DATABASE_URL"
        )
        d_analytics = AnalyticsConfig()
        connect_s, statement_ms = _database_timeouts(reader)
        analytics = AnalyticsConfig(
            replicas=tuple(
                DatabaseConfig(
                    url=url, connect_timeout_s=connect_s, statement_timeout_ms=statement_ms
                )
                for url in replica_urls
            ),
            max_lag_s=reader.number("ANALYTICS_MAX_LAG_S", d_analytics.max_lag_s),
            check_interval_s=reader.number(
                "ANALYTICS_CHECK_INTERVAL_S", d_analytics.check_interval_s
            ),
            check_timeout_s=reader.number("ANALYTICS_CHECK_TIMEOUT_S", d_analytics.check_timeout_s),
        )
        bootstrap = reader.text("KAFKA_BOOTSTRAP_SERVERS")
        kafka = (
            KafkaConfig(
                bootstrap_servers=tuple(s.strip() for s in bootstrap.split(",") if s.strip()),
                security_protocol=reader.text("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
                sasl_mechanism=reader.text("KAFKA_SASL_MECHANISM"),
                sasl_username=reader.text("KAFKA_SASL_USERNAME"),
                sasl_password=reader.text("KAFKA_SASL_PASSWORD"),
                ssl_cafile=reader.text("KAFKA_SSL_CAFILE"),
                ssl_certfile=reader.text("KAFKA_SSL_CERTFILE"),
                ssl_keyfile=reader.text("KAFKA_SSL_KEYFILE"),
                client_id=reader.text("KAFKA_CLIENT_ID") or "event-pipeline",
                idempotent_producer=reader.flag("KAFKA_IDEMPOTENT_PRODUCER", True),
                compression_type=(reader.text("KAFKA_COMPRESSION_TYPE") or "zstd").lower(),
            )
            if bootstrap
            else None
        )
        topics = TopicsConfig(
            sources={spec.kind: reader.text(spec.topic_setting) or spec.topic for spec in KINDS},
            dead_letters=reader.text("PIPELINE_TOPIC_DEAD_LETTERS") or TopicsConfig.dead_letters,
        )
        d_worker = WorkerConfig()
        worker = WorkerConfig(
            group_id=reader.text("PIPELINE_GROUP_ID") or d_worker.group_id,
            worker_id=reader.text("PIPELINE_WORKER_ID") or d_worker.worker_id,
            web_port=reader.integer("PIPELINE_WEB_PORT", d_worker.web_port),
            flush_interval_ms=reader.integer(
                "PIPELINE_FLUSH_INTERVAL_MS", d_worker.flush_interval_ms
            ),
            flush_max_records=reader.integer(
                "PIPELINE_FLUSH_MAX_RECORDS", d_worker.flush_max_records
            ),
            flush_max_events=reader.integer("PIPELINE_FLUSH_MAX_EVENTS", d_worker.flush_max_events),
            fetch_max_bytes=reader.integer("PIPELINE_FETCH_MAX_BYTES", d_worker.fetch_max_bytes),
            revoke_timeout_ms=reader.integer(
                "PIPELINE_REVOKE_TIMEOUT_MS", d_worker.revoke_timeout_ms
            ),
            stopped_retry_s=reader.number("PIPELINE_STOPPED_RETRY_S", d_worker.stopped_retry_s),
            flush_connections=reader.integer(
                "PIPELINE_FLUSH_CONNECTIONS", d_worker.flush_connections
            ),
            dead_letter_max_bytes=reader.integer(
                "PIPELINE_DEAD_LETTER_MAX_BYTES", d_worker.dead_letter_max_bytes
            ),
            retry_initial_ms=reader.integer("PIPELINE_RETRY_INITIAL_MS", d_worker.retry_initial_ms),
            retry_max_ms=reader.integer("PIPELINE_RETRY_MAX_MS", d_worker.retry_max_ms),
            shutdown_timeout_s=reader.number(
                "PIPELINE_SHUTDOWN_TIMEOUT_S", d_worker.shutdown_timeout_s
            ),
            maintenance_interval_s=reader.number(
                "PIPELINE_MAINTENANCE_INTERVAL_S", d_worker.maintenance_interval_s
            ),
            rollup_interval_s=reader.number(
                "PIPELINE_ROLLUP_INTERVAL_S", d_worker.rollup_interval_s
            ),
            startup_timeout_s=reader.number(
                "PIPELINE_STARTUP_TIMEOUT_S", d_worker.startup_timeout_s
            ),
        )
        sql_dir = reader.text("PIPELINE_MIGRATIONS_DIR")
        migrations = MigrationsConfig(
            directory=Path(sql_dir) if sql_dir else default_sql_dir(),
            lock_timeout_s=reader.number("PIPELINE_MIGRATION_LOCK_TIMEOUT_S", 60.0),
        )
        return cls(
            database=database,
            kafka=kafka,
            analytics=analytics,
            topics=topics,
            worker=worker,
            migrations=migrations,
            http=_http_from_env(reader),
            state_dir=Path(reader.text("PIPELINE_STATE_DIR") or ".state"),
            log_format=(reader.text("PIPELINE_LOG_FORMAT") or "text").lower(),
        )


class _Reader:
    """Typed access to environment variables with error messages that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if value and value.strip() else None

    def integer(self, name: str, default: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def number(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        return value


def _database_from_env(reader: _Reader) -> DatabaseConfig | None:
    """DATABASE_URL wins; otherwise the libpq PG* variables compose a URL."""
    url = reader.text("DATABASE_URL")
    if url is None:
        pg = {k: reader.text(k) for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")}
        if pg["PGHOST"] is None and pg["PGDATABASE"] is None:
            return None
        user = quote(pg["PGUSER"] or "postgres", safe="")
        password = f":{quote(pg['PGPASSWORD'], safe='')}" if pg["PGPASSWORD"] else ""
        host = pg["PGHOST"] or "localhost"
        query = ""
        if host.startswith("/"):  # a unix-socket directory goes in the query string
            query, host = f"host={quote(host, safe='/')}", ""
        port = f":{pg['PGPORT']}" if pg["PGPORT"] and host else ""
        sslmode = reader.text("PGSSLMODE")
        if sslmode:
            query = f"{query}&sslmode={sslmode}" if query else f"sslmode={sslmode}"
        url = f"postgresql://{user}{password}@{host}{port}/{pg['PGDATABASE'] or 'postgres'}"
        url = f"{url}?{query}" if query else url
    d = DatabaseConfig(url="postgresql://x@y/z")
    connect_s, statement_ms = _database_timeouts(reader)
    return DatabaseConfig(
        url=url,
        pool_min_size=reader.integer("DATABASE_POOL_MIN_SIZE", d.pool_min_size),
        pool_max_size=reader.integer("DATABASE_POOL_MAX_SIZE", d.pool_max_size),
        connect_timeout_s=connect_s,
        statement_timeout_ms=statement_ms,
    )


def _database_timeouts(reader: _Reader) -> tuple[float, int]:
    """DATABASE_CONNECT_TIMEOUT_S and DATABASE_STATEMENT_TIMEOUT_MS: the primary's, and
    every read replica's of ANALYTICS_DATABASE_URL alike."""
    d = DatabaseConfig(url="postgresql://x@y/z")
    return (
        reader.number("DATABASE_CONNECT_TIMEOUT_S", d.connect_timeout_s),
        reader.integer("DATABASE_STATEMENT_TIMEOUT_MS", d.statement_timeout_ms),
    )
