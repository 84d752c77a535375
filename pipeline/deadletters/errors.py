"""Errors of the dead-letter tools (``pipeline dlq inspect|replay``).

Every class derives from :class:`DeadLetterToolError` (a
:class:`~pipeline.errors.PipelineError`), so the command prints one line and no traceback;
the exit code follows the pipeline's rule (2 for a :class:`~pipeline.errors.ConfigError`,
1 otherwise):

- :class:`BrokerDownError` (retriable, exit 1): the broker could not be reached, or
  stopped answering, within the tool's broker timeout. Names ``KAFKA_BOOTSTRAP_SERVERS``.
- :class:`BrokerRefusedError` (exit 2): the broker answers but refuses this client (TLS,
  SASL, ACLs, a broker without idempotent producers). Names the settings to check.
- :class:`TopicNotFoundError` (exit 2): the dead-letter topic does not exist. Names
  ``PIPELINE_TOPIC_DEAD_LETTERS``.

:class:`~pipeline.deadletters.replay.ReplayIncompleteError` (a replay that stopped half
way, saying what was and was not replayed) lives with the replay.
"""

from __future__ import annotations

from pipeline.errors import BrokerUnreachableError, ConfigError, PipelineError


class DeadLetterToolError(PipelineError):
    """The broker could not be read or written (unreachable, timed out, refused).

    Nothing was replayed that is not also marked, except possibly the last chunk (see
    :mod:`pipeline.deadletters.replay`); running the same command again is safe.
    """

    retriable = True


class BrokerDownError(DeadLetterToolError, BrokerUnreachableError):
    """The broker did not answer within the tool's broker timeout (down, restarting, a
    network problem, a wrong ``KAFKA_BOOTSTRAP_SERVERS``). Running the command again later
    is safe."""

    retriable = True


class BrokerRefusedError(DeadLetterToolError, ConfigError):
    """The broker answers but refuses this client: a configuration problem (TLS, SASL,
    ACLs, idempotent producers); retrying does not help."""

    retriable = False


class TopicNotFoundError(DeadLetterToolError, ConfigError):
    """A topic that must exist does not (check PIPELINE_TOPIC_DEAD_LETTERS)."""

    retriable = False


def noted(exc: PipelineError, note: str) -> PipelineError:
    """The same kind of error with ``note`` appended to its message; raise it ``from exc``.
    (Every class here, and the pipeline's broker and configuration errors, take the message
    alone.)"""
    return type(exc)(f"{exc}{note}")
