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
    is_insufficient_privilege,
    is_not_in_prerequisite_state,
    is_session_lost,
    sqlstate_of,
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


def test_sqlstate_predicates_read_the_code_never_the_message() -> None:
    denied = pg_error(asyncpg.InsufficientPrivilegeError, "42501", "anything")
    assert is_insufficient_privilege(denied)
    assert is_insufficient_privilege(classify_database_error(denied))  # type: ignore[arg-type]
    assert not is_insufficient_privilege(pg_error(asyncpg.PostgresError, "42000", "permission"))
    assert not is_insufficient_privilege(ValueError("42501"))
    not_loaded = pg_error(asyncpg.ObjectNotInPrerequisiteStateError, "55000")
    assert is_not_in_prerequisite_state(not_loaded)
    assert sqlstate_of(DatabaseError("x", sqlstate="55000")) == "55000"
    assert sqlstate_of(DatabaseError("x")) is None and sqlstate_of(KeyError()) is None


def test_a_lost_session_is_a_connection_failure_or_a_shutdown() -> None:
    assert is_session_lost(ConnectionResetError("reset"))
    assert is_session_lost(asyncpg.InterfaceError("connection is closed"))
    assert is_session_lost(pg_error(asyncpg.AdminShutdownError, "57P01"))
    assert not is_session_lost(pg_error(asyncpg.SerializationError, "40001"))
    assert not is_session_lost(pg_error(asyncpg.InsufficientPrivilegeError, "42501"))
    assert not is_session_lost(KeyError("bug"))
