"""Every test under tests/integration talks to the real broker and/or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from pipeline.config import DatabaseConfig, KafkaConfig
from tests.integration.harness import Pipeline
from tests.integration.restartable import RestartableBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture
async def stack(
    migrated_database: DatabaseConfig, kafka: KafkaConfig, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    """One test's pipeline: unique topics and group, its own database, workers it starts."""
    pipeline = Pipeline(migrated_database, kafka, tmp_path)
    await pipeline.create_topics()
    try:
        yield pipeline
    finally:
        pipeline.stop_all()


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[RestartableBroker]:
    """A broker of this test's own, started, whose data outlives its process (Tansu on a
    moto S3 server): the test may ``stop()`` it and ``start_again()`` on the same port.
    Logs under ``tmp_path/restartable-broker``. Without ``moto[server]`` (dev extra) the
    test errors: it never skips."""
    broker = RestartableBroker(tmp_path / "restartable-broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
