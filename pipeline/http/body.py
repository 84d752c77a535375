"""Request bodies: bytes in, one decoded item per event out.

:func:`decompress` undoes ``Content-Encoding`` (gzip or deflate) with a bound on the
output, so a small compressed body cannot expand in memory beyond the body limit.
:func:`split_events` takes the plain body and returns its events in order: a JSON array
(the first non-whitespace byte is ``[``) or NDJSON (one JSON value per line, blank lines
skipped). An NDJSON line that is not JSON is an event of its own that
fails (:class:`BadLine`), so one bad line does not sink the others; a JSON array that is
not JSON fails the whole request (:class:`BodyError`), since its events cannot be told
apart. Nothing here validates events: that is :mod:`pipeline.http.admit`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = ["BadLine", "BodyError", "decompress", "split_events", "too_large"]

_SPACE: Final = b" \t\r\n"


class BodyError(Exception):
    """The body as a whole is unusable: HTTP ``status``, stable ``code``, one-line ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def too_large(limit: int) -> BodyError:
    """The 413 of a body over ``limit`` bytes (after decompression)."""
    return BodyError(
        413,
        "body_too_large",
        f"the body is larger than {limit} bytes once decompressed "
        "(PIPELINE_HTTP_MAX_BODY_BYTES): split it into several requests",
    )


# zlib window bits: 16 + 15 reads gzip only; 32 + 15 detects zlib or gzip.
_WBITS: Final = {"gzip": 31, "x-gzip": 31, "deflate": 47}


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded from ``encoding`` ("", "identity", "gzip", "x-gzip" or "deflate",
    lower case), at most ``limit`` bytes of output. Raises :class:`BodyError`: 415 for
    another encoding, 400 for data that does not decode, 413 past ``limit``."""
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise too_large(limit)
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise BodyError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or none",
        )
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:  # a gzip body may be several members, one after the other (RFC 1952)
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            detail = f"the body is not valid {encoding}: {exc}"
            raise BodyError(400, "malformed_body", detail) from None
        size += len(data)
        if size > limit or inflater.unconsumed_tail:
            raise too_large(limit)
        if not inflater.eof:
            raise BodyError(400, "malformed_body", f"the {encoding} body is truncated")
        parts.append(data)
        rest = inflater.unused_data
        if not rest.strip(b"\0"):  # gzip -d accepts zero padding after the last member
            return b"".join(parts)
        if wbits != _WBITS["gzip"]:  # only gzip has members; anything after deflate is junk
            raise BodyError(400, "malformed_body", f"data after the end of the {encoding} body")


@dataclass(frozen=True, slots=True)
class BadLine:
    """An NDJSON line that is not valid JSON (its event is rejected ``malformed_json``)."""

    detail: str


def split_events(body: bytes, *, max_events: int) -> list[object]:
    """The events of ``body``: decoded JSON values, or :class:`BadLine` for an NDJSON line
    that does not decode (not JSON, not UTF-8). Raises :class:`BodyError` for a JSON array
    that does not decode (400 ``malformed_json``) and for more than ``max_events`` events
    (413 ``too_many_events``). A leading UTF-8 byte order mark is skipped."""
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
        body = body[3:]
    start = 0
    end = len(body)
    while start < end and body[start] in _SPACE:
        start += 1
    if start == end:
        return []
    if body[start] == 0x5B:  # "["
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        if type(data) is not list:  # "[...] x" is caught by loads; this is defensive
            raise BodyError(400, "malformed_json", "the body must be a JSON array or NDJSON")
        _check_count(len(data), max_events)
        return data
    events: list[object] = []
    loads = orjson.loads
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip(_SPACE):
            continue
        if len(events) == max_events:
            _check_count(max_events + 1, max_events)
        try:
            events.append(loads(line))
        except orjson.JSONDecodeError as exc:
            events.append(BadLine(f"line {number}: not valid JSON: {exc}"))
    return events


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise BodyError(
            413,
            "too_many_events",
            f"the body holds more than {max_events} events (PIPELINE_HTTP_MAX_EVENTS): "
            "split it into several requests",
        )
