"""The configuration tree: defaults, parsing, validation, redaction."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import Config, DatabaseConfig, KafkaConfig, WorkerConfig, redact_url
from pipeline.contract import EventKind
from pipeline.errors import ConfigError


def test_defaults_without_any_variable() -> None:
    config = Config.from_env({})
    assert config.database is None and config.kafka is None
    assert (
        config.topics.topic(EventKind.API_CALL) == "api-calls"
        and config.topics.dead_letters == "ingest-dlq"
    )
    assert config.worker.flush_interval_ms == 200
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        config.require_database()
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        config.require_kafka()


def test_values_from_the_environment() -> None:
    config = Config.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db:5432/events?sslmode=require",
            "DATABASE_POOL_MAX_SIZE": "8",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
            "PIPELINE_GROUP_ID": "billing",
            "PIPELINE_FLUSH_INTERVAL_MS": "250",
            "PIPELINE_TOPIC_API_CALLS": "calls",
        }
    )
    assert config.require_database().pool_max_size == 8
    assert config.require_kafka().bootstrap_servers == ("k1:9092", "k2:9092")
    assert config.worker.group_id == "billing" and config.worker.flush_interval_ms == 250
    assert config.topics.topic(EventKind.API_CALL) == "calls"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.worker.group_id = "other"  # type: ignore[misc]


def test_pg_variables_compose_a_url() -> None:
    db = Config.from_env(
        {"PGHOST": "db", "PGPORT": "6432", "PGUSER": "u", "PGPASSWORD": "p@ss", "PGDATABASE": "e",
         "PGSSLMODE": "verify-full"}
    ).require_database()  # fmt: skip
    assert db.url == "postgresql://u:p%40ss@db:6432/e?sslmode=verify-full"
    socket_db = Config.from_env({"PGHOST": "/run/pg", "PGDATABASE": "e"}).require_database()
    assert socket_db.url == "postgresql://postgres@/e?host=/run/pg"
    url = Config.from_env({"DATABASE_URL": "postgresql://a@b/c", "PGHOST": "x"}).require_database()
    assert url.url == "postgresql://a@b/c"  # DATABASE_URL wins


def test_secrets_never_appear_in_repr() -> None:
    config = Config.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db/events",
            "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    text = repr(config)
    assert "s3cret" not in text and "hunter2" not in text
    assert "postgresql://app:***@db/events" in text
    assert redact_url("postgresql://a@b/c") == "postgresql://a@b/c"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must start with postgresql://"),
        ({"DATABASE_URL": "postgresql://x/y", "DATABASE_POOL_MAX_SIZE": "0"}, "POOL_MIN_SIZE"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_SECURITY_PROTOCOL": "TLS"}, "one of PLAINTEXT"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "MECHANISM"),
        ({"PIPELINE_FLUSH_INTERVAL_MS": "soon"}, "PIPELINE_FLUSH_INTERVAL_MS must be an integer"),
        ({"PIPELINE_FLUSH_MAX_RECORDS": "0"}, "PIPELINE_FLUSH_MAX_RECORDS must be greater than 0"),
        ({"PIPELINE_WEB_PORT": "70000"}, "PIPELINE_WEB_PORT"),
        ({"PIPELINE_RETRY_INITIAL_MS": "10", "PIPELINE_RETRY_MAX_MS": "5"}, "RETRY_MAX_MS"),
        ({"PIPELINE_TOPIC_LOGS": "api-calls"}, "distinct"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_COMPRESSION_TYPE": "brotli"}, "one of none"),
        ({"ANALYTICS_DATABASE_URL": "postgresql://a/b, mysql://c/d"}, "entry 2 must start"),
        ({"ANALYTICS_DATABASE_URL": "replica:5432/db"}, "ANALYTICS_DATABASE_URL entry 1"),
        ({"ANALYTICS_DATABASE_URL": "postgresql://a/b,postgresql://a/b"}, "same URL twice"),
        ({"ANALYTICS_MAX_LAG_S": "0"}, "ANALYTICS_MAX_LAG_S must be greater than 0"),
        ({"ANALYTICS_MAX_LAG_S": "five"}, "ANALYTICS_MAX_LAG_S must be a number"),
        ({"ANALYTICS_CHECK_INTERVAL_S": "-1"}, "ANALYTICS_CHECK_INTERVAL_S"),
        ({"ANALYTICS_CHECK_TIMEOUT_S": "0"}, "ANALYTICS_CHECK_TIMEOUT_S"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_compression_defaults_to_zstd_and_accepts_every_kafka_codec() -> None:
    assert KafkaConfig(bootstrap_servers=("k:1",)).compression_type == "zstd"
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        env = {"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_COMPRESSION_TYPE": codec.upper()}
        assert Config.from_env(env).require_kafka().compression_type == codec


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError):
        DatabaseConfig(url="postgresql://x/y", pool_min_size=3, pool_max_size=2)
    with pytest.raises(ConfigError):
        KafkaConfig(bootstrap_servers=())
    with pytest.raises(ConfigError):
        WorkerConfig(group_id="")


def test_to_env_round_trips() -> None:
    config = Config.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db/events",
            "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "pw",
            "KAFKA_IDEMPOTENT_PRODUCER": "false",
            "PIPELINE_GROUP_ID": "g",
            "PIPELINE_WORKER_ID": "w7",
            "PIPELINE_FLUSH_MAX_EVENTS": "123",
            "PIPELINE_ROLLUP_INTERVAL_S": "300",
            "ANALYTICS_DATABASE_URL": "postgresql://analyst:pw@replica/events",
        }
    )
    assert config.worker.flush_max_events == 123
    assert config.worker.rollup_interval_s == 300
    assert [r.url for r in config.analytics.replicas] == ["postgresql://analyst:pw@replica/events"]
    assert "pw" not in repr(config)
    assert Config.from_env(config.to_env()) == config


def test_every_variable_to_env_writes_is_one_from_env_reads() -> None:
    """A variable written by to_env but ignored by from_env would silently reset to its
    default in every worker process the demo or the tests start."""
    base = Config.from_env(
        {
            "DATABASE_URL": "postgresql://a@b/c",
            "KAFKA_BOOTSTRAP_SERVERS": "k:1",
            "ANALYTICS_DATABASE_URL": "postgresql://r1@b/c,postgresql://r2@b/c",
        }
    )
    for name, value in base.to_env().items():
        changed = {**base.to_env(), name: _different(name, value)}
        assert Config.from_env(changed) != base, f"from_env ignores {name}"


def _different(name: str, value: str) -> str:
    """A valid value for ``name`` other than ``value``."""
    if value in ("true", "false"):
        return "false" if value == "true" else "true"
    if name.endswith("_URL"):  # DATABASE_URL, and every URL of ANALYTICS_DATABASE_URL
        return value.replace("@b/c", "@b/other")
    if name == "KAFKA_BOOTSTRAP_SERVERS":
        return "k:2"
    if name == "KAFKA_SECURITY_PROTOCOL":
        return "SSL"
    if name == "PIPELINE_LOG_FORMAT":
        return "json" if value == "text" else "text"
    if name == "KAFKA_COMPRESSION_TYPE":
        return "lz4" if value != "lz4" else "none"
    try:
        return str(int(value) + 1)
    except ValueError:
        pass
    try:
        return str(float(value) + 1)
    except ValueError:
        return value + "-x"


def test_log_format_is_text_or_json() -> None:
    assert Config.from_env({}).log_format == "text"
    assert Config.from_env({"PIPELINE_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="PIPELINE_LOG_FORMAT"):
        Config.from_env({"PIPELINE_LOG_FORMAT": "xml"})


def test_analytics_replicas_are_a_comma_separated_list() -> None:
    default = Config.from_env({})
    assert default.analytics.replicas == ()
    assert (default.analytics.max_lag_s, default.analytics.check_interval_s) == (5.0, 30.0)
    config = Config.from_env(
        {
            "ANALYTICS_DATABASE_URL": " postgresql://an:p,w@r1:5432/e , postgresql://h1,h2/e,"
            "postgres://an@/e?host=/run/pg,",
            "ANALYTICS_MAX_LAG_S": "2.5",
            "ANALYTICS_CHECK_INTERVAL_S": "10",
        }
    )
    # A comma splits only where a new URL starts: not in a password or a multi-host URL.
    assert [r.url for r in config.analytics.replicas] == [
        "postgresql://an:p,w@r1:5432/e", "postgresql://h1,h2/e", "postgres://an@/e?host=/run/pg",
    ]  # fmt: skip
    assert config.analytics.max_lag_s == 2.5 and config.analytics.check_interval_s == 10
    assert Config.from_env(config.to_env()) == config


def test_replicas_take_the_primarys_connect_and_statement_timeouts() -> None:
    env = {
        "ANALYTICS_DATABASE_URL": "postgresql://a@r1/e,postgresql://a@r2/e",
        "DATABASE_CONNECT_TIMEOUT_S": "3.5",
        "DATABASE_STATEMENT_TIMEOUT_MS": "1500",
    }
    replicas_only = Config.from_env(env)
    assert {
        (r.connect_timeout_s, r.statement_timeout_ms) for r in replicas_only.analytics.replicas
    } == {(3.5, 1500)}
    assert Config.from_env(replicas_only.to_env()) == replicas_only  # without a primary too
    both = Config.from_env({**env, "DATABASE_URL": "postgresql://a@p/e"})
    assert both.database is not None and both.database.statement_timeout_ms == 1500
    assert both.analytics.replicas[1].connect_timeout_s == 3.5
    assert Config.from_env(both.to_env()) == both


def test_replica_passwords_never_appear_in_repr() -> None:
    config = Config.from_env(
        {"ANALYTICS_DATABASE_URL": "postgresql://a:s3cret@r1/e,postgresql://b:hunter2@r2/e"}
    )
    text = repr(config)
    assert "s3cret" not in text and "hunter2" not in text
    assert "postgresql://a:***@r1/e" in text and "postgresql://b:***@r2/e" in text
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"ANALYTICS_DATABASE_URL": "postgresql://a/b,mysql://u:s3cret@h/d"})
    assert "s3cret" not in str(raised.value)
