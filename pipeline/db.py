"""Connecting to PostgreSQL with the configured settings.

Every connection the pipeline opens goes through :func:`connect` or :func:`create_pool`, so
timeouts and session settings are the same everywhere: the session time zone is UTC (hour
buckets and partition bounds are UTC) and ``statement_timeout`` bounds every statement.

Failures are classified (:func:`pipeline.errors.classify_database_error`) and say which
server they concern (the URL with its password redacted) and which setting to change:
:class:`~pipeline.errors.DatabaseRefusedError` (a configuration error: wrong password,
unknown database, a host name that does not resolve, a missing privilege) or
:class:`~pipeline.errors.DatabaseUnavailableError` (retriable: refused, timed out,
restarting).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pipeline.config import DatabaseConfig
from pipeline.errors import (
    DatabaseRefusedError,
    DatabaseUnavailableError,
    classify_database_error,
)


def _server_settings(config: DatabaseConfig, application_name: str) -> dict[str, str]:
    return {
        "application_name": application_name,
        "TimeZone": "UTC",
        "statement_timeout": str(config.statement_timeout_ms),
    }


def connect_error(
    config: DatabaseConfig, exc: Exception, setting: str = "DATABASE_URL"
) -> Exception:
    """The error to raise when connecting to ``config`` failed with ``exc``."""
    error = classify_database_error(exc)
    if error is None:
        return exc
    where = f"PostgreSQL at {config.redacted_url}"
    if isinstance(error, DatabaseRefusedError):
        return DatabaseRefusedError(
            f"{where} refused this configuration ({error}); check {setting} (user, "
            "password, host, database) and the login's privileges",
            sqlstate=error.sqlstate,
        )
    if isinstance(error, DatabaseUnavailableError):
        return DatabaseUnavailableError(
            f"cannot reach {where} ({error}); is it running, and is {setting} right?",
            sqlstate=error.sqlstate,
        )
    return error


async def connect(
    config: DatabaseConfig, *, application_name: str = "pipeline", setting: str = "DATABASE_URL"
) -> Any:
    """Open one connection. The caller closes it. Raises a classified ``PipelineError``
    whose message names ``setting`` (where ``config`` came from)."""
    try:
        return await asyncpg.connect(
            config.url,
            timeout=config.connect_timeout_s,
            server_settings=_server_settings(config, application_name),
        )
    except Exception as exc:
        raise connect_error(config, exc, setting) from exc


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
        raise connect_error(config, exc) from exc
