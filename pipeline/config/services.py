"""Settings of the services the pipeline talks to: PostgreSQL (the primary and read
replicas for analyst queries) and Kafka. Secrets never appear in ``repr``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pipeline.config._common import _positive, redact_url
from pipeline.errors import ConfigError


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
