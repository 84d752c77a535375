"""Exceptions raised by the pipeline.

Every exception the pipeline raises on purpose derives from :class:`PipelineError`. Each
class says through ``retriable`` whether doing the same thing again may succeed:

- ``retriable = True``: a transient condition (a connection lost, a lock not granted in
  time, PostgreSQL restarting). The caller retries with backoff and must not ack anything.
- ``retriable = False``: retrying the same input fails the same way (bad configuration, a
  migration file that changed after it was applied, a row PostgreSQL rejects). The caller
  reports it; for data, the offending records go to the dead-letter topic.

asyncpg's exceptions are mapped onto this hierarchy in exactly one place,
:func:`classify_database_error`, so the rest of the code never inspects SQLSTATEs.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    retriable: ClassVar[bool] = False


class ConfigError(PipelineError):
    """A setting is missing or invalid. The message names the variable and what to do."""


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
    """A PostgreSQL error, classified. ``sqlstate`` is the server's code when it sent one."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL is unreachable, restarting, or aborted the transaction for concurrency
    reasons (serialization failure, deadlock). Retrying the whole transaction is correct."""

    retriable = True


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
# cannot connect now; 40001 serialization failure; 40P01 deadlock; 55P03 lock not available.
_RETRIABLE_CLASSES = ("08", "53")
_RETRIABLE_CODES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57014"})
# Class 22 (data exception) and 23 (integrity constraint) other than the partition case:
# the rows themselves are at fault.
_DATA_CLASSES = ("22", "23")
_NO_PARTITION = "23514"


def classify_database_error(exc: BaseException) -> PipelineError:
    """Map an exception raised while talking to PostgreSQL onto the pipeline's hierarchy.

    Returns (never raises) a :class:`PipelineError`; the caller raises it ``from exc``.
    Connection-level failures that carry no SQLSTATE (``OSError``, ``ConnectionError``,
    ``asyncio.TimeoutError`` and asyncpg's interface errors about a closed connection) are
    retriable. Anything unknown is treated as not retriable so that it is surfaced rather
    than retried forever.
    """
    if isinstance(exc, PipelineError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None)
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate == _NO_PARTITION and "no partition of relation" in str(exc):
            return NoPartitionError(message, sqlstate=sqlstate)
        if sqlstate in _RETRIABLE_CODES or sqlstate.startswith(_RETRIABLE_CLASSES):
            return DatabaseUnavailableError(message, sqlstate=sqlstate)
        if sqlstate.startswith(_DATA_CLASSES):
            return DataRejectedError(message, sqlstate=sqlstate)
        return DatabaseError(message, sqlstate=sqlstate)
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return DatabaseUnavailableError(message)
    name = type(exc).__name__
    if name in {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"} and (
        "closed" in str(exc) or "connection" in str(exc).lower()
    ):
        return DatabaseUnavailableError(message)
    return DatabaseError(message)
