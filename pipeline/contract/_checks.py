"""Field checks for the validator: the complete rule for each field type.

Every function here takes the field name and the raw value, and either returns the value
normalised (exact ``str``/``int``/``float``/``bool`` types, defaults applied) or raises
:class:`ContractError` with the reason of the contract and a short detail naming the field.

The per-kind validators (:mod:`pipeline.contract.validate` and
:mod:`pipeline.contract._validate_monitoring`) test the common valid case inline and call
these only when that quick test fails (or for rarely-set fields), so these
functions are the single source of truth for what is accepted and which reason a rejection
gets; the inline tests only ever accept a subset of what these accept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, NoReturn, TypeVar

import orjson

from pipeline.contract.reasons import Reason

MAX_FUTURE_MS: Final = 300_000
MAX_DURATION_MS: Final = 86_400_000
MAX_METADATA_BYTES: Final = 16_384
MAX_MESSAGE_BYTES: Final = 8_192
MAX_TAGS: Final = 16
MAX_TAG_KEY_CHARS: Final = 64
MAX_TAG_VALUE_CHARS: Final = 256
E8: Final = 100_000_000

# The same expressions as the "pattern"s of the JSON Schemas (there anchored with ^...$),
# applied with fullmatch. A compiled fullmatch measured faster than an equivalent chain of
# str method calls, and it keeps the validator and the schemas in exact agreement.
UUID_PATTERN: Final = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIMESTAMP_PATTERN: Final = (
    r"(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
uuid_match: Final = re.compile(UUID_PATTERN).fullmatch
"""Matches a lower-case UUID; the schemas' pattern also allows A-F (the validator lowercases)."""
iso_match: Final = re.compile(TIMESTAMP_PATTERN).fullmatch

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP_RULE: Final = (
    "must be an ISO-8601 string YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM) "
    "or integer epoch milliseconds >= 0"
)

E = TypeVar("E")


class ContractError(ValueError):
    """An event breaks the wire contract. ``reason`` is the stable code, ``detail`` a short
    human-readable message that names the field (``"tokens: must be >= 0, got -3"``)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[ContractError], tuple[Reason, str]]:
        return (ContractError, (self.reason, self.detail))


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def show(value: object) -> str:
    """A short rendering of ``value`` for a detail message (never a whole document)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    return json_type(value)


def fail(reason: Reason, detail: str) -> NoReturn:
    raise ContractError(reason, detail)


def _missing(name: str) -> NoReturn:
    fail(Reason.MISSING_FIELD, f"{name}: required")


def _wrong(name: str, expected: str, value: object) -> NoReturn:
    fail(Reason.WRONG_TYPE, f"{name}: must be {expected}, got {json_type(value)}")


def kind_mismatch(expected: str, value: object) -> NoReturn:
    fail(
        Reason.UNKNOWN_EVENT_TYPE,
        f"type: this topic carries {expected!r} events, got {show(value)}",
    )


def _text(name: str, value: object, max_chars: int) -> str:
    if not isinstance(value, str):
        _wrong(name, "a string", value)
    if len(value) > max_chars:
        fail(
            Reason.STRING_TOO_LONG,
            f"{name}: at most {max_chars} characters, got {len(value)}",
        )
    return str.__str__(value)


def req_str(name: str, value: object, max_chars: int) -> str:
    """A required string of 1..``max_chars`` characters (Unicode code points)."""
    if value is None:
        _missing(name)
    text = _text(name, value, max_chars)
    if not text:
        fail(Reason.INVALID_VALUE, f"{name}: must not be empty")
    return text


def opt_str(name: str, value: object, max_chars: int) -> str | None:
    """An optional string of 0..``max_chars`` characters; absent or null gives None."""
    return None if value is None else _text(name, value, max_chars)


def message(name: str, value: object) -> str:
    """A required string of at most 8192 bytes when UTF-8 encoded (may be empty)."""
    if value is None:
        _missing(name)
    if not isinstance(value, str):
        _wrong(name, "a string", value)
    if len(value) > MAX_MESSAGE_BYTES // 4:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            fail(Reason.INVALID_VALUE, f"{name}: not encodable as UTF-8 (lone surrogate)")
        if size > MAX_MESSAGE_BYTES:
            fail(
                Reason.STRING_TOO_LONG,
                f"{name}: at most {MAX_MESSAGE_BYTES} bytes of UTF-8, got {size}",
            )
    return str.__str__(value)


def method(name: str, value: object) -> str:
    """An HTTP method: 1..16 upper-case ASCII letters (``^[A-Z]{1,16}$``)."""
    text = req_str(name, value, 16)
    if not (text.isascii() and text.isalpha() and text.isupper()):
        fail(Reason.INVALID_VALUE, f"{name}: must be 1-16 upper-case letters A-Z, got {show(text)}")
    return text


def choice(name: str, value: object, allowed: Mapping[str, E]) -> E:
    """A required string that must be one of ``allowed``'s keys; returns the mapped value."""
    if value is None:
        _missing(name)
    if not isinstance(value, str):
        _wrong(name, "a string", value)
    member = allowed.get(str.__str__(value))
    if member is None:
        options = ", ".join(allowed)
        fail(Reason.INVALID_VALUE, f"{name}: must be one of {options}, got {show(value)}")
    return member


def boolean(name: str, value: object, default: bool | None) -> bool:
    """A boolean; absent or null gives ``default`` (None: the field is required)."""
    if value is None:
        if default is None:
            _missing(name)
        return default
    if not isinstance(value, bool):
        _wrong(name, "true or false", value)
    return bool(value)


def integer(name: str, value: object, low: int, high: int, default: int | None) -> int:
    """An integer in ``low..high``; absent or null gives ``default`` (None: required).

    Floats are rejected even when integral (``3.0``), and so are booleans: ``wrong_type``.
    Below a lower bound of 0 (a negative count) is ``invalid_number``; any other value out
    of range is ``invalid_value``.
    """
    if value is None:
        if default is None:
            _missing(name)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        _wrong(name, "an integer", value)
    if value < low:
        reason = Reason.INVALID_NUMBER if low == 0 else Reason.INVALID_VALUE
        fail(reason, f"{name}: must be an integer >= {low}, got {show(value)}")
    if value > high:
        fail(Reason.INVALID_VALUE, f"{name}: must be an integer <= {high}, got {show(value)}")
    return int(value)


def opt_integer(name: str, value: object, low: int, high: int) -> int | None:
    """Like :func:`integer` but absent or null gives None."""
    return None if value is None else integer(name, value, low, high, None)


def _number(name: str, value: object, high: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _wrong(name, "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        fail(Reason.INVALID_NUMBER, f"{name}: must be a finite number, got {value!r}")
    if value < 0:
        fail(Reason.INVALID_NUMBER, f"{name}: must be >= 0, got {show(value)}")
    if value > high:
        fail(Reason.INVALID_VALUE, f"{name}: must be <= {high}, got {show(value)}")
    return float(value)


def number(name: str, value: object, high: int) -> float:
    """A required number (integer or fraction, not boolean) in ``0..high``, as a float."""
    if value is None:
        _missing(name)
    return _number(name, value, high)


def opt_number(name: str, value: object, high: int) -> float | None:
    """Like :func:`number` but absent or null gives None."""
    return None if value is None else _number(name, value, high)


def measurement(name: str, value: object, bound: float) -> float:
    """A required number (integer or fraction, not boolean, any sign) with ``|value| <=
    bound``, as a float. Not finite or out of range is ``invalid_number``."""
    if value is None:
        _missing(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _wrong(name, "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        fail(Reason.INVALID_NUMBER, f"{name}: must be a finite number, got {value!r}")
    if not -bound <= value <= bound:
        fail(
            Reason.INVALID_NUMBER,
            f"{name}: must be between -{bound:g} and {bound:g}, got {show(value)}",
        )
    return float(value)


def usd_e8(name: str, value: object, high: int) -> int:
    """A USD amount in ``0..high`` (absent or null: 0) as integer 1e-8 units, rounded to
    the nearest unit (an integer amount is converted exactly)."""
    if value is None:
        return 0
    amount = _number(name, value, high)
    if isinstance(value, int):
        return int(value) * E8
    return round(amount * E8)


def event_id(name: str, value: object) -> str:
    """A UUID in 8-4-4-4-12 hex form (any case); returned in lower case."""
    if value is None:
        _missing(name)
    if not isinstance(value, str):
        _wrong(name, "a UUID string", value)
    text = value.lower()
    if not value.isascii() or uuid_match(text) is None:
        fail(Reason.INVALID_VALUE, f"{name}: must be a UUID like 8-4-4-4-12 hex, got {show(value)}")
    return text


def occurred_at(name: str, value: object, limit_ms: int) -> int:
    """A timestamp as epoch milliseconds (an ISO fraction below 1 ms is truncated).

    Accepts ``YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|+HH:MM|-HH:MM)`` or an integer >= 0; not
    before 1970-01-01T00:00:00Z. A value later than ``limit_ms`` (the caller's now + 5
    minutes) is ``future_timestamp``.
    """
    if isinstance(value, str) and iso_match(value) is not None:
        try:
            delta = datetime.fromisoformat(value) - _EPOCH
        except ValueError as exc:  # a calendar-impossible date such as 2026-02-30
            fail(Reason.INVALID_VALUE, f"{name}: {exc}, got {show(value)}")
        ms = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = int(value)
    elif value is None:
        _missing(name)
    elif isinstance(value, str):
        fail(Reason.INVALID_VALUE, f"{name}: {_TIMESTAMP_RULE}, got {show(value)}")
    else:
        _wrong(name, "an ISO-8601 string or integer epoch milliseconds", value)
    if ms < 0:
        fail(
            Reason.INVALID_VALUE,
            f"{name}: must not be before 1970-01-01T00:00:00Z, got {show(value)}",
        )
    if ms > limit_ms:
        ahead = show(ms - limit_ms + MAX_FUTURE_MS)
        fail(
            Reason.FUTURE_TIMESTAMP,
            f"{name}: {ahead} ms ahead of now, at most {MAX_FUTURE_MS} ms allowed",
        )
    return ms


def metadata(name: str, value: object) -> str | None:
    """An optional JSON object, returned as compact JSON text of at most 16 KiB."""
    if value is None:
        return None
    if not isinstance(value, dict):
        _wrong(name, "an object", value)
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        fail(Reason.WRONG_TYPE, f"{name}: not serialisable as JSON ({exc})")
    if len(encoded) > MAX_METADATA_BYTES:
        fail(
            Reason.TOO_LARGE,
            f"{name}: at most {MAX_METADATA_BYTES} bytes as JSON, got {len(encoded)}",
        )
    return encoded.decode()


def tags(name: str, value: object) -> str:
    """An optional object of at most 16 string -> string pairs (key 1..64 characters, value
    0..256), returned as canonical compact JSON: keys sorted, so equal tag sets give equal
    text. Absent or null gives ``"{}"``."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        _wrong(name, "an object of strings", value)
    if len(value) > MAX_TAGS:
        fail(Reason.INVALID_VALUE, f"{name}: at most {MAX_TAGS} tags, got {len(value)}")
    canonical: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str):
            _wrong(f"{name} key", "a string", key)
        if not key:
            fail(Reason.INVALID_VALUE, f"{name}: a key must not be empty")
        if len(key) > MAX_TAG_KEY_CHARS:
            fail(
                Reason.STRING_TOO_LONG,
                f"{name}: a key is at most {MAX_TAG_KEY_CHARS} characters, got {len(key)}",
            )
        canonical[str.__str__(key)] = _text(f"{name}.{key}", text, MAX_TAG_VALUE_CHARS)
    try:
        encoded = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        fail(Reason.INVALID_VALUE, f"{name}: not encodable as UTF-8 (lone surrogate)")
    return encoded.decode()
