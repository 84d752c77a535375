"""A starting worker waits for its services within PIPELINE_STARTUP_TIMEOUT_S, then exits
naming the setting to check (pipeline.worker.runtime.WorkerRuntime._until_ready)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import KafkaConnectionError

from pipeline.config import Config, DatabaseConfig, KafkaConfig, WorkerConfig
from pipeline.errors import BrokerUnreachableError, ConfigError, StartupTimeoutError
from pipeline.worker.runtime import WorkerRuntime

CONFIG = Config(
    database=DatabaseConfig(url="postgresql://pipeline@db/pipeline"),
    kafka=KafkaConfig(bootstrap_servers=("kafka:9092",)),
    worker=WorkerConfig(retry_initial_ms=1, retry_max_ms=2, startup_timeout_s=0.05),
)


def runtime() -> WorkerRuntime:
    return WorkerRuntime(CONFIG)


@pytest.mark.asyncio
async def test_a_service_that_never_answers_ends_start_up_naming_the_setting() -> None:
    rt = runtime()
    rt._startup_deadline = 0.0  # already due: the first transient failure ends it
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        raise BrokerUnreachableError("cannot reach the Kafka broker at kafka:9092")

    with pytest.raises(StartupTimeoutError) as caught:
        await rt._until_ready("the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", step)
    message = str(caught.value)
    assert "check KAFKA_BOOTSTRAP_SERVERS" in message
    assert "PIPELINE_STARTUP_TIMEOUT_S" in message
    assert "\n" not in message
    assert calls == 1


@pytest.mark.asyncio
async def test_transient_failures_are_retried_until_the_service_answers() -> None:
    rt = runtime()
    failures = [KafkaConnectionError("down"), BrokerUnreachableError("still down")]

    async def step() -> None:
        if failures:
            raise failures.pop(0)

    await rt._until_ready("the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", step)
    assert failures == []


@pytest.mark.asyncio
async def test_a_configuration_error_is_raised_at_once() -> None:
    rt = runtime()

    async def step() -> None:
        raise ConfigError("topic api-calls does not exist: create it or set PIPELINE_TOPIC_...")

    with pytest.raises(ConfigError):
        await rt._until_ready("the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", step)


def test_the_timeout_is_validated_and_zero_means_forever() -> None:
    assert WorkerConfig(startup_timeout_s=0).startup_timeout_s == 0
    with pytest.raises(ConfigError, match="PIPELINE_STARTUP_TIMEOUT_S"):
        WorkerConfig(startup_timeout_s=-1)


@pytest.mark.asyncio
async def test_a_step_that_hangs_ends_at_the_deadline() -> None:
    rt = runtime()
    rt._startup_deadline = time.monotonic() + 0.2

    async def step() -> None:
        await asyncio.sleep(3600)  # e.g. joining a group that never assigns

    with pytest.raises(StartupTimeoutError, match="KAFKA_BOOTSTRAP_SERVERS"):
        await asyncio.wait_for(
            rt._until_ready("the Kafka broker", "KAFKA_BOOTSTRAP_SERVERS", step), 5
        )
    assert rt.metrics.registry.get_sample_value("pipeline_broker_available") == 0
