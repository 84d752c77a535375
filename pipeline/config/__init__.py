"""The configuration tree: frozen dataclasses built from the environment at the entry point.

:meth:`Config.from_env` is the only place in the package that reads environment variables.
Every other module receives the piece of configuration it needs as an argument. Each class
validates itself on construction and raises :class:`~pipeline.errors.ConfigError` naming the
variable and the accepted values. Secrets (passwords, SASL credentials) never appear in
``repr``.

Units are in the names: ``_ms`` milliseconds, ``_s`` seconds.

Modules: this one (:class:`Config`, the tree's root, and reading the environment),
``services`` (PostgreSQL, Kafka, read replicas), ``processes`` (topics, workers, the HTTP
server, migrations) and ``_common``. Import everything from ``pipeline.config``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pipeline.config._common import redact_url
from pipeline.config.processes import (
    HttpConfig,
    MigrationsConfig,
    TopicsConfig,
    WorkerConfig,
    default_sql_dir,
)
from pipeline.config.services import (
    COMPRESSION_TYPES,
    AnalyticsConfig,
    DatabaseConfig,
    KafkaConfig,
    split_database_urls,
)
from pipeline.errors import ConfigError
from pipeline.kinds import KINDS

__all__ = [
    "COMPRESSION_TYPES",
    "AnalyticsConfig",
    "Config",
    "DatabaseConfig",
    "HttpConfig",
    "KafkaConfig",
    "MigrationsConfig",
    "TopicsConfig",
    "WorkerConfig",
    "default_sql_dir",
    "redact_url",
    "split_database_urls",
]


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
