"""Stable reason codes for events that cannot be stored.

A :class:`Reason` value travels in the ``x-reason`` header of every dead-letter record and in
metrics labels, so the values are part of the wire contract: never rename one, only add.
The validator (:mod:`pipeline.contract.validate`) assigns every reason except
``beyond_retention`` and ``rejected_by_database``, which the worker assigns when it writes.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an event (or a whole Kafka record) was sent to the dead-letter topic."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    STRING_TOO_LONG = "string_too_long"
    INVALID_NUMBER = "invalid_number"
    INVALID_VALUE = "invalid_value"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LARGE = "too_large"
    BEYOND_RETENTION = "beyond_retention"
    REJECTED_BY_DATABASE = "rejected_by_database"


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.MALFORMED_JSON: "The record value is missing, empty, not UTF-8 or not valid JSON.",
    Reason.NOT_AN_OBJECT: (
        "The record value is neither a JSON object nor an array, or an array element is not "
        "an object."
    ),
    Reason.UNKNOWN_EVENT_TYPE: 'The event\'s "type" does not match the kind of its topic.',
    Reason.MISSING_FIELD: "A required field is absent or null.",
    Reason.WRONG_TYPE: "A field has the wrong JSON type (e.g. a string where a number belongs).",
    Reason.STRING_TOO_LONG: (
        "A string is longer than its field allows (characters; for message, UTF-8 bytes)."
    ),
    Reason.INVALID_NUMBER: (
        "A number is negative where only >= 0 is allowed, not finite, or (a metric's value) "
        "beyond +/-1e15."
    ),
    Reason.INVALID_VALUE: (
        "A value has the right type but is not allowed: enum mismatch, bad UUID or timestamp, "
        "empty required string, number out of its range."
    ),
    Reason.FUTURE_TIMESTAMP: "occurred_at is more than 5 minutes ahead of the worker's clock.",
    Reason.TOO_LARGE: (
        "metadata (or an audit event's before/after) serialises to more than 16 KiB "
        "(16384 bytes of JSON)."
    ),
    Reason.BEYOND_RETENTION: "The event is older than its table's retention (worker-assigned).",
    Reason.REJECTED_BY_DATABASE: "PostgreSQL refused the row (worker-assigned).",
}
"""One line per reason; the docs table and ``pipeline`` tooling print these."""

VALIDATOR_REASONS: frozenset[Reason] = frozenset(Reason) - {
    Reason.BEYOND_RETENTION,
    Reason.REJECTED_BY_DATABASE,
}
"""The reasons :func:`pipeline.contract.validate.decode_record` can produce."""
