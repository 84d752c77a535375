"""The single mapping from PostgreSQL errors to retriable / not retriable."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from pipeline.errors import (
    ConfigError,
    DatabaseError,
    DatabaseRefusedError,
    DatabaseUnavailableError,
    DataRejectedError,
    NoPartitionError,
    PipelineError,
    SchemaMissingError,
    classify_database_error,
)


def pg_error(
    cls: type[Exception], sqlstate: str, message: str = "boom", constraint: str | None = None
) -> Exception:
    error = cls(message)
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
    error.constraint_name = constraint  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "expected", "retriable"),
    [
        (pg_error(asyncpg.SerializationError, "40001"), DatabaseUnavailableError, True),
        (pg_error(asyncpg.DeadlockDetectedError, "40P01"), DatabaseUnavailableError, True),
        (pg_error(asyncpg.AdminShutdownError, "57P01"), DatabaseUnavailableError, True),
        (pg_error(asyncpg.CannotConnectNowError, "57P03"), DatabaseUnavailableError, True),
        (pg_error(asyncpg.ConnectionFailureError, "08006"), DatabaseUnavailableError, True),
        (pg_error(asyncpg.TooManyConnectionsError, "53300"), DatabaseUnavailableError, True),
        # A partitioned table without a partition for the row names no constraint; the
        # message text is never read (the same text with a constraint is a data error).
        (pg_error(asyncpg.CheckViolationError, "23514", "any text"), NoPartitionError, True),
        (
            pg_error(asyncpg.CheckViolationError, "23514", "no partition of", "api_usage_hour"),
            DataRejectedError,
            False,
        ),
        (pg_error(asyncpg.NumericValueOutOfRangeError, "22003"), DataRejectedError, False),
        (pg_error(asyncpg.UndefinedTableError, "42P01"), SchemaMissingError, False),
        (pg_error(asyncpg.UndefinedFunctionError, "42883"), SchemaMissingError, False),
        (pg_error(asyncpg.InvalidPasswordError, "28P01"), DatabaseRefusedError, False),
        (
            pg_error(asyncpg.InvalidAuthorizationSpecificationError, "28000"),
            DatabaseRefusedError,
            False,
        ),
        (pg_error(asyncpg.InvalidCatalogNameError, "3D000"), DatabaseRefusedError, False),
        (pg_error(asyncpg.InsufficientPrivilegeError, "42501"), DatabaseRefusedError, False),
        (pg_error(asyncpg.SyntaxOrAccessError, "42000"), DatabaseError, False),
        (asyncpg.InterfaceError("connection is closed"), DatabaseUnavailableError, True),
        (socket.gaierror(-2, "Name or service not known"), DatabaseRefusedError, False),
        (ConnectionRefusedError("refused"), DatabaseUnavailableError, True),
        (TimeoutError(), DatabaseUnavailableError, True),
    ],
)
def test_classification(error: Exception, expected: type[PipelineError], retriable: bool) -> None:
    classified = classify_database_error(error)
    assert type(classified) is expected
    assert classified.retriable is retriable
    assert isinstance(classified, PipelineError)


def test_a_refused_database_is_a_configuration_error() -> None:
    """At start-up it exits 2 like any configuration error."""
    assert issubclass(DatabaseRefusedError, ConfigError)
    assert issubclass(DatabaseRefusedError, DatabaseError)


def test_anything_else_is_not_classified_it_is_a_bug() -> None:
    assert classify_database_error(ValueError("odd")) is None
    assert classify_database_error(KeyError("x")) is None


def test_pipeline_errors_pass_through() -> None:
    original = NoPartitionError("x")
    assert classify_database_error(original) is original
