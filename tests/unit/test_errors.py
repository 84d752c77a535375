"""The single mapping from PostgreSQL errors to retriable / not retriable."""

from __future__ import annotations

import asyncpg
import pytest

from pipeline.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    DataRejectedError,
    NoPartitionError,
    PipelineError,
    classify_database_error,
)


def pg_error(cls: type[Exception], sqlstate: str, message: str = "boom") -> Exception:
    error = cls(message)
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
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
        (
            pg_error(asyncpg.CheckViolationError, "23514", 'no partition of relation "x" found'),
            NoPartitionError,
            True,
        ),
        (
            pg_error(asyncpg.CheckViolationError, "23514", "violates check"),
            DataRejectedError,
            False,
        ),
        (pg_error(asyncpg.NumericValueOutOfRangeError, "22003"), DataRejectedError, False),
        (pg_error(asyncpg.UndefinedTableError, "42P01"), DatabaseError, False),
        (ConnectionRefusedError("refused"), DatabaseUnavailableError, True),
        (TimeoutError(), DatabaseUnavailableError, True),
        (ValueError("odd"), DatabaseError, False),
    ],
)
def test_classification(error: Exception, expected: type[PipelineError], retriable: bool) -> None:
    classified = classify_database_error(error)
    assert type(classified) is expected
    assert classified.retriable is retriable
    assert isinstance(classified, PipelineError)


def test_pipeline_errors_pass_through() -> None:
    original = NoPartitionError("x")
    assert classify_database_error(original) is original
