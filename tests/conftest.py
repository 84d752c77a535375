"""Fixtures shared by every test: real services, started by the suite itself.

- ``pg_admin``: a PostgreSQL server. The embedded one (pgserver, PostgreSQL 16) unless
  DATABASE_URL / PG* variables point at an external server. Per test, ``fresh_database``
  and ``migrated_database`` give an empty database or one cloned from a migrated template,
  so tests never see each other's rows.
- ``kafka``: a Kafka-protocol broker. The embedded Tansu unless KAFKA_BOOTSTRAP_SERVERS is
  set. Tests use unique topic and group names (``unique_name``).

A missing service is an error, never a skip: the suite must fail loudly in CI.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from pipeline.config import Config, DatabaseConfig, KafkaConfig, TopicsConfig, default_sql_dir
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres
from pipeline.migrations.runner import MigrationRunner

REPO = Path(__file__).resolve().parent.parent
SQL_DIR = default_sql_dir()


@dataclass(frozen=True)
class PgAdmin:
    """A server the tests may create databases on; ``embedded`` is None when external."""

    config: DatabaseConfig
    embedded: EmbeddedPostgres | None

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.config.url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def config_for(self, database: str) -> DatabaseConfig:
        return replace(self.config, url=self.url_for(database))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def unique_topics() -> TopicsConfig:
    """Topic names of this test's own: one per declared event kind, and dead letters."""
    return TopicsConfig(
        sources={kind: unique_name(kind.value) for kind in TopicsConfig().sources},
        dead_letters=unique_name("dlq"),
    )


@pytest.fixture(scope="session")
def env_config() -> Config:
    return Config.from_env()


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """State of the session's embedded services. Not under pytest's basetemp: pytest
    deletes all but the three newest basetemps, which pulls the data directory from under
    a running session whenever other pytest sessions run on the same machine."""
    with tempfile.TemporaryDirectory(prefix="pipeline-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def pg_admin(env_config: Config, services_dir: Path) -> Iterator[PgAdmin]:
    if env_config.database is not None:
        yield PgAdmin(env_config.database, None)
        return
    server = EmbeddedPostgres(services_dir / "pg", database="postgres")
    server.start()
    try:
        yield PgAdmin(DatabaseConfig(url=server.url), server)
    finally:
        server.stop()


async def _create_database(admin: PgAdmin, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(admin.config.url)
    try:
        suffix = f" TEMPLATE {template}" if template else ""
        await conn.execute(f"CREATE DATABASE {name}{suffix}")
    finally:
        await conn.close()


async def _drop_database(admin: PgAdmin, name: str) -> None:
    conn = await asyncpg.connect(admin.config.url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def _migrate(config: DatabaseConfig) -> None:
    conn = await asyncpg.connect(config.url)
    try:
        await MigrationRunner(conn, SQL_DIR, applied_by="tests").up()
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def migrated_template(pg_admin: PgAdmin) -> Iterator[str]:
    """A database with every migration applied, cloned by ``migrated_database``."""
    name = unique_name("tmpl")

    async def build() -> None:
        await _create_database(pg_admin, name)
        await _migrate(pg_admin.config_for(name))

    asyncio.run(build())
    try:
        yield name
    finally:
        asyncio.run(_drop_database(pg_admin, name))


@pytest_asyncio.fixture
async def fresh_database(pg_admin: PgAdmin) -> AsyncIterator[DatabaseConfig]:
    """An empty database of its own for one test."""
    name = unique_name("t")
    await _create_database(pg_admin, name)
    try:
        yield pg_admin.config_for(name)
    finally:
        await _drop_database(pg_admin, name)


@pytest_asyncio.fixture
async def migrated_database(
    pg_admin: PgAdmin, migrated_template: str
) -> AsyncIterator[DatabaseConfig]:
    """A database of its own with every migration applied (cloned from the template)."""
    name = unique_name("t")
    await _create_database(pg_admin, name, template=migrated_template)
    try:
        yield pg_admin.config_for(name)
    finally:
        await _drop_database(pg_admin, name)


@pytest_asyncio.fixture
async def pg(migrated_database: DatabaseConfig) -> AsyncIterator[asyncpg.Connection]:
    """A connection (UTC session) to a migrated database of the test's own."""
    conn = await asyncpg.connect(migrated_database.url, server_settings={"TimeZone": "UTC"})
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def kafka(env_config: Config, services_dir: Path) -> Iterator[KafkaConfig]:
    if env_config.kafka is not None:
        yield env_config.kafka
        return
    broker = EmbeddedBroker(log_path=services_dir / "broker.log")
    broker.start()
    try:
        yield broker.kafka_config()
    finally:
        broker.stop()
