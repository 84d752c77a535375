"""Connecting to PostgreSQL with the configured settings.

Every connection the pipeline opens goes through :func:`connect` or :func:`create_pool`, so
timeouts and session settings are the same everywhere: the session time zone is UTC (hour
buckets and partition bounds are UTC) and ``statement_timeout`` bounds every statement.
Connection failures raise :class:`~pipeline.errors.DatabaseUnavailableError` (retriable).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pipeline.config import DatabaseConfig
from pipeline.errors import classify_database_error


def _server_settings(config: DatabaseConfig, application_name: str) -> dict[str, str]:
    return {
        "application_name": application_name,
        "TimeZone": "UTC",
        "statement_timeout": str(config.statement_timeout_ms),
    }


async def connect(config: DatabaseConfig, *, application_name: str = "pipeline") -> Any:
    """Open one connection. The caller closes it. Raises a classified ``PipelineError``."""
    try:
        return await asyncpg.connect(
            config.url,
            timeout=config.connect_timeout_s,
            server_settings=_server_settings(config, application_name),
        )
    except Exception as exc:
        raise classify_database_error(exc) from exc


async def create_pool(config: DatabaseConfig, *, application_name: str = "pipeline") -> Any:
    """Open a pool of ``pool_min_size``..``pool_max_size`` connections. The caller closes it."""
    try:
        return await asyncpg.create_pool(
            config.url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            timeout=config.connect_timeout_s,
            server_settings=_server_settings(config, application_name),
        )
    except Exception as exc:
        raise classify_database_error(exc) from exc
