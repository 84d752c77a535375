"""Exceptions raised by the pipeline.

Every exception the pipeline raises on purpose derives from :class:`PipelineError`. Each
class says through ``retriable`` whether doing the same thing again may succeed:

- ``retriable = True``: a transient condition (a connection lost, a lock not granted in
  time, PostgreSQL restarting). The caller retries with backoff and must not ack anything.
- ``retriable = False``: retrying the same input fails the same way (bad configuration, a
  migration file that changed after it was applied, a row PostgreSQL rejects). The caller
  reports it; for data, the offending records go to the dead-letter topic.

asyncpg's exceptions are mapped onto this hierarchy in exactly one place,
:func:`classify_database_error`, by exception class and SQLSTATE (never by message text),
so the rest of the code never inspects SQLSTATEs. What it does not map is a bug and
propagates. Kafka client errors say themselves whether they are retriable (aiokafka's
``retriable`` attribute); :func:`pipeline.producer.errors.is_transient` reads it.
"""

from __future__ import annotations

import socket
from typing import ClassVar

import asyncpg


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(PipelineError):
    """A setting is missing or invalid. The message names the variable and what to do."""


class BrokerUnreachableError(PipelineError):
    """The Kafka broker cannot be reached (down, restarting, a network problem). Retry."""

    retriable = True


class StartupTimeoutError(PipelineError):
    """A service did not answer within the start-up timeout: the process cannot do its job.
    The message names the service, the setting that points at it and the timeout."""


class EmbeddedServiceError(PipelineError):
    """An embedded broker or PostgreSQL could not be started or stopped."""


class MigrationError(PipelineError):
    """A migration could not be applied or rolled back; the message says which and why."""


class MigrationDriftError(MigrationError):
    """An applied migration's file changed or disappeared; nothing was applied.

    Fix by restoring the file as it was applied (``pipeline migrate verify`` lists the
    differences) and put the change in a new migration instead.
    """


class LockTimeoutError(PipelineError):
    """Another runner held a lock longer than the configured wait."""

    retriable = True


class DatabaseError(PipelineError):
    """A PostgreSQL error, classified. ``sqlstate`` is the server's code when it sent one.

    Not retriable as such (a statement or the schema is wrong, e.g. a table is missing
    until someone migrates); a flush still stalls on it rather than ending the worker,
    because nothing in a batch is at fault (see :mod:`pipeline.worker.retry`).
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL is unreachable, restarting, or aborted the transaction for concurrency
    reasons (serialization failure, deadlock). Retrying the whole transaction is correct."""

    retriable = True


class DatabaseRefusedError(DatabaseError, ConfigError):
    """The database cannot be used as configured: authentication failed, the database does
    not exist, the host name does not resolve, or the login lacks a privilege. Retrying
    does not help; at start-up the process exits 2 naming the setting (``DATABASE_URL``)."""


class SchemaMissingError(DatabaseError):
    """A table, function or schema the pipeline needs does not exist: run
    ``pipeline migrate up``."""


class NoPartitionError(DatabaseError):
    """A row fell into a range with no partition (SQLSTATE 23514 on a partitioned table).

    Creating the partition and retrying the transaction is correct.
    """

    retriable = True


class DataRejectedError(DatabaseError):
    """PostgreSQL rejected a value (out of range, invalid text, a check constraint).

    Retrying the same rows fails again: the caller isolates the offending records.
    """


# SQLSTATE classes and codes that mean "try the whole transaction again".
# 08: connection exception; 53: insufficient resources; 57P01-57P03: admin/crash shutdown,
# cannot connect now; 57014 statement timeout or cancel; 40001 serialization failure;
# 40P01 deadlock; 55P03 lock not available.
_RETRIABLE_CLASSES = ("08", "53")
_RETRIABLE_CODES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57014"})
# 28: invalid authorization (wrong password, no such role); 3D000: no such database;
# 42501: insufficient privilege.
_REFUSED_CLASSES = ("28",)
_REFUSED_CODES = frozenset({"3D000", "42501"})
# 42P01 undefined table, 42883 undefined function, 3F000 invalid schema name.
_SCHEMA_CODES = frozenset({"42P01", "42883", "3F000"})
# Class 22 (data exception) and 23 (integrity constraint): the rows themselves are at fault,
# except a check violation without a constraint name: the partitioned table found no
# partition for the row (PostgreSQL reports it as 23514 on the parent, naming no constraint).
_DATA_CLASSES = ("22", "23")
_CHECK_VIOLATION = "23514"


def classify_database_error(exc: BaseException) -> PipelineError | None:
    """Map an exception raised while talking to PostgreSQL onto the pipeline's hierarchy,
    by class and SQLSTATE only (never by message text). Returns None for an exception that
    is none of these: a bug, which the caller lets propagate.

    The caller raises the result ``from exc``. Connection-level failures without a SQLSTATE
    (``ConnectionError``, timeouts, a closed connection) are retriable; a host name that
    does not resolve is refused (it does not fix itself).
    """
    if isinstance(exc, PipelineError):
        return exc
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith(_REFUSED_CLASSES) or sqlstate in _REFUSED_CODES:
            return DatabaseRefusedError(message, sqlstate=sqlstate)
        if sqlstate in _SCHEMA_CODES:
            hint = "; run `pipeline migrate up` (the schema is missing or older than this code)"
            return SchemaMissingError(message + hint, sqlstate=sqlstate)
        if sqlstate == _CHECK_VIOLATION and getattr(exc, "constraint_name", None) is None:
            return NoPartitionError(message, sqlstate=sqlstate)
        if sqlstate in _RETRIABLE_CODES or sqlstate.startswith(_RETRIABLE_CLASSES):
            return DatabaseUnavailableError(message, sqlstate=sqlstate)
        if sqlstate.startswith(_DATA_CLASSES):
            return DataRejectedError(message, sqlstate=sqlstate)
        return DatabaseError(message, sqlstate=sqlstate)
    if isinstance(
        exc,
        asyncpg.exceptions.ClientConfigurationError
        | asyncpg.exceptions.UnsupportedClientFeatureError
        | asyncpg.exceptions.UnsupportedServerFeatureError,
    ):
        return DatabaseRefusedError(message)
    if isinstance(exc, asyncpg.InterfaceError):  # asyncpg's "connection is closed"
        return DatabaseUnavailableError(message)
    if isinstance(exc, socket.gaierror):
        return DatabaseRefusedError(f"the host name does not resolve ({message})")
    if isinstance(exc, OSError | TimeoutError):  # ConnectionError is an OSError
        return DatabaseUnavailableError(message)
    return None


# SQLSTATEs some callers react to specifically, through the predicates below.
INSUFFICIENT_PRIVILEGE = "42501"
# 55000 object_not_in_prerequisite_state: e.g. pg_stat_statements queried without its library
# preloaded, or pg_current_wal_lsn() on a server in recovery.
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
# After these the session is gone: class 08 (connection exception) and the server shutting
# down or not accepting connections.
_SESSION_GONE = ("08", "57P01", "57P02", "57P03")


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error, raw (asyncpg) or classified
    (:class:`DatabaseError`); None for anything else or when the server sent none."""
    if isinstance(exc, DatabaseError):
        return exc.sqlstate or None
    if isinstance(exc, asyncpg.PostgresError):
        return exc.sqlstate or None
    return None


def is_insufficient_privilege(exc: BaseException) -> bool:
    """The login lacks a privilege (SQLSTATE 42501): a GRANT fixes it."""
    return sqlstate_of(exc) == INSUFFICIENT_PRIVILEGE


def is_not_in_prerequisite_state(exc: BaseException) -> bool:
    """The object exists but is not usable yet (SQLSTATE 55000)."""
    return sqlstate_of(exc) == OBJECT_NOT_IN_PREREQUISITE_STATE


def is_session_lost(exc: BaseException) -> bool:
    """The connection is gone (a classified :class:`DatabaseUnavailableError` without a
    SQLSTATE, class 08, or the server shutting down): nothing more can run on it."""
    error = classify_database_error(exc)
    if not isinstance(error, DatabaseUnavailableError):
        return False
    return not error.sqlstate or error.sqlstate.startswith(_SESSION_GONE)


def raised_as(exc: Exception) -> Exception:
    """What to raise for ``exc`` from PostgreSQL: its classification, or ``exc`` itself
    when it is not a database error (a bug). Use as ``raise raised_as(exc) from exc``."""
    return classify_database_error(exc) or exc
