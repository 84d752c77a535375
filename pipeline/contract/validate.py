"""Decode Kafka record values and validate events against the wire contract.

This is the worker's hot path. :func:`decode_record` parses one record value with orjson and
runs the validator of the topic's kind over the object, or over each element of an array.
It never raises for bad input: every problem becomes an :class:`Invalid` (with the stable
:class:`~pipeline.contract.reasons.Reason`) paired with exactly the data to dead-letter.

Validation is pure: the current time comes in as ``now_ms`` and nothing is cached between
calls. Each kind has one hand-written validator that tests the common valid case of each
field inline and defers to :mod:`pipeline.contract._checks` (the complete rule and the
error message) only when that test fails or for rarely-set fields.

This module holds :func:`decode_record`, :func:`validate_event`, the table from kind to
validator (``_VALIDATORS``) and the validators of ``api_call``, ``analysis`` and
``system_log``. Those of ``performance_metric`` and ``audit`` are in
:mod:`pipeline.contract._validate_monitoring`; the helpers all validators share (one copy of
each repeated string, ``_SHARED``; the slot setters) are in
:mod:`pipeline.contract._validate_common`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import orjson

from pipeline.contract import _checks as c
from pipeline.contract._checks import ContractError
from pipeline.contract._validate_common import _SHARED, _opt_text, _share, _slot_setters
from pipeline.contract._validate_monitoring import _audit, _performance_metric
from pipeline.contract.events import (
    Analysis,
    AnalysisStatus,
    ApiCall,
    Event,
    EventKind,
    LogLevel,
    SystemLog,
)
from pipeline.contract.reasons import Reason

__all__ = ["ContractError", "Event", "Invalid", "decode_record", "validate_event"]

_MAX_MS: Final = c.MAX_DURATION_MS
_MAX_TOKENS: Final = 1_000_000_000
_MAX_USD: Final = 1_000_000
_STATUSES: Final[Mapping[str, AnalysisStatus]] = {s.value: s for s in AnalysisStatus}
_LEVELS: Final[Mapping[str, LogLevel]] = {lv.value: lv for lv in LogLevel}
# One set lookup for the usual methods; any other method gets the full check.
_COMMON_METHODS: Final = {
    m: m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
}

Validator = Callable[[dict[str, object], int], Event]
_uuid_match: Final = c.uuid_match
_new: Final = object.__new__
_a0, _a1, _a2, _a3, _a4, _a5, _a6, _a7, _a8, _a9, _a10, _a11 = _slot_setters(ApiCall)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why one event (or a whole record) was rejected.

    ``index`` is the event's position inside an array record; None for a single-object
    record and for failures of the record as a whole (``malformed_json``, a scalar value).
    """

    reason: Reason
    detail: str
    index: int | None


def _api_call(o: dict[str, object], limit_ms: int) -> ApiCall:
    get = o.get
    kind = get("type")
    if kind is not None and kind != "api_call":
        c.kind_mismatch("api_call", kind)
    eid = get("event_id")
    if type(eid) is not str or _uuid_match(eid) is None:
        eid = c.event_id("event_id", eid)
    ts = get("occurred_at")
    if type(ts) is not int or not 0 <= ts <= limit_ms:
        ts = c.occurred_at("occurred_at", ts, limit_ms)
    shared = _SHARED.get
    service = get("service")
    if type(service) is not str or not 0 < len(service) <= 64:
        service = c.req_str("service", service, 64)
    service = shared(service) or _share(service)
    endpoint = get("endpoint")
    if type(endpoint) is not str or not 0 < len(endpoint) <= 256:
        endpoint = c.req_str("endpoint", endpoint, 256)
    endpoint = shared(endpoint) or _share(endpoint)
    method = get("method")
    if type(method) is not str or (method := _COMMON_METHODS.get(method)) is None:
        method = c.method("method", get("method"))
    success = get("success")
    if type(success) is not bool:
        success = c.boolean("success", success, None)
    rt = get("response_time_ms")
    if type(rt) is not float or not 0.0 <= rt <= 86_400_000.0:
        rt = c.number("response_time_ms", rt, _MAX_MS)
    user_id = get("user_id")
    if user_id is not None:
        if type(user_id) is not str or len(user_id) > 128:
            user_id = c.opt_str("user_id", user_id, 128)
        if user_id is not None:
            user_id = shared(user_id) or _share(user_id)
    org_id = get("organization_id")
    if org_id is not None:
        if type(org_id) is not str or len(org_id) > 128:
            org_id = c.opt_str("organization_id", org_id, 128)
        if org_id is not None:
            org_id = shared(org_id) or _share(org_id)
    status = get("status_code")
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        status = c.opt_integer("status_code", status, 100, 599)
    tokens = get("tokens")
    if type(tokens) is not int or not 0 <= tokens <= 1_000_000_000:
        tokens = c.integer("tokens", tokens, 0, _MAX_TOKENS, 0)
    cost = get("cost_usd")
    if type(cost) is float and 0.0 <= cost <= 1_000_000.0:
        cost_e8 = round(cost * 100_000_000)
    else:
        cost_e8 = c.usd_e8("cost_usd", cost, _MAX_USD)
    if TYPE_CHECKING:  # the slot setters are untyped: let mypy check the values against __init__
        ApiCall(
            eid,
            ts,
            service,
            endpoint,
            method,
            success,
            rt,
            user_id,
            org_id,
            status,
            tokens,
            cost_e8,
        )
    event = _new(ApiCall)
    _a0(event, eid)
    _a1(event, ts)
    _a2(event, service)
    _a3(event, endpoint)
    _a4(event, method)
    _a5(event, success)
    _a6(event, rt)
    _a7(event, user_id)
    _a8(event, org_id)
    _a9(event, status)
    _a10(event, tokens)
    _a11(event, cost_e8)
    return event


def _analysis(o: dict[str, object], limit_ms: int) -> Analysis:
    # The hot path, as in _api_call: each field is checked inline for its usual valid form
    # and handed to the generic check (which raises the precise error) only otherwise.
    get = o.get
    shared = _SHARED.get
    kind = get("type")
    if kind is not None and kind != "analysis":
        c.kind_mismatch("analysis", kind)
    eid = get("event_id")
    if type(eid) is not str or _uuid_match(eid) is None:
        eid = c.event_id("event_id", eid)
    ts = get("occurred_at")
    if type(ts) is not int or not 0 <= ts <= limit_ms:
        ts = c.occurred_at("occurred_at", ts, limit_ms)
    model_type = get("model_type")
    if type(model_type) is not str or not 0 < len(model_type) <= 64:
        model_type = c.req_str("model_type", model_type, 64)
    model_type = shared(model_type) or _share(model_type)
    raw_status = get("status")
    status = _STATUSES.get(raw_status) if type(raw_status) is str else None
    if status is None:
        status = c.choice("status", raw_status, _STATUSES)
    user_id = _opt_text(get("user_id"), "user_id", 128)
    org_id = _opt_text(get("organization_id"), "organization_id", 128)
    entry = get("entry_id")
    if entry is not None and (type(entry) is not str or len(entry) > 128):
        entry = c.opt_str("entry_id", entry, 128)
    model_version = _opt_text(get("model_version"), "model_version", 64)
    analysis_version = _opt_text(get("analysis_version"), "analysis_version", 64)
    rq = get("request_tokens")
    if type(rq) is not int or not 0 <= rq <= _MAX_TOKENS:
        rq = c.integer("request_tokens", rq, 0, _MAX_TOKENS, 0)
    rs = get("response_tokens")
    if type(rs) is not int or not 0 <= rs <= _MAX_TOKENS:
        rs = c.integer("response_tokens", rs, 0, _MAX_TOKENS, 0)
    used = get("tokens_used")
    if type(used) is not int or not 0 <= used <= 2 * _MAX_TOKENS:
        used = c.integer("tokens_used", used, 0, 2 * _MAX_TOKENS, rq + rs)
    cost = get("api_cost_usd")
    if type(cost) is float and 0.0 <= cost <= 1_000_000.0:
        cost_e8 = round(cost * 100_000_000)
    else:
        cost_e8 = c.usd_e8("api_cost_usd", cost, _MAX_USD)
    processing = _opt_ms(get("processing_time_ms"), "processing_time_ms")
    queue_wait = _opt_ms(get("queue_wait_time_ms"), "queue_wait_time_ms")
    total = _opt_ms(get("total_processing_time_ms"), "total_processing_time_ms")
    if total is None and processing is not None and queue_wait is not None:
        total = processing + queue_wait
    caching_used = get("caching_used")
    if type(caching_used) is not bool:
        caching_used = c.boolean("caching_used", caching_used, False)
    batch_processed = get("batch_processed")
    if type(batch_processed) is not bool:
        batch_processed = c.boolean("batch_processed", batch_processed, False)
    fallback_used = get("fallback_used")
    if type(fallback_used) is not bool:
        fallback_used = c.boolean("fallback_used", fallback_used, False)
    region = _opt_text(get("region_processed"), "region_processed", 64)
    attempts = get("processing_attempts")
    if type(attempts) is not int or not 1 <= attempts <= 1000:
        attempts = c.integer("processing_attempts", attempts, 1, 1000, 1)
    error_type = get("error_type")
    if error_type is not None and (type(error_type) is not str or len(error_type) > 128):
        error_type = c.opt_str("error_type", error_type, 128)
    metadata_json = c.metadata("metadata", get("metadata"))
    analysis_id = get("analysis_id")
    if analysis_id is None:
        analysis_id = eid
    elif type(analysis_id) is not str or not 0 < len(analysis_id) <= 128:
        analysis_id = c.req_str("analysis_id", analysis_id, 128)
    actor = _opt_text(get("actor"), "actor", 256)
    return Analysis(
        eid,
        ts,
        model_type,
        status,
        user_id,
        org_id,
        entry,
        model_version,
        analysis_version,
        rq,
        rs,
        used,
        cost_e8,
        processing,
        queue_wait,
        total,
        caching_used,
        batch_processed,
        fallback_used,
        region,
        attempts,
        error_type,
        metadata_json,
        analysis_id,
        actor,
    )


def _opt_ms(value: object, name: str) -> float | None:
    if value is None or (type(value) is float and 0.0 <= value <= _MAX_MS):
        return value
    return c.opt_number(name, value, _MAX_MS)


def _system_log(o: dict[str, object], limit_ms: int) -> SystemLog:
    get = o.get
    kind = get("type")
    if kind is not None and kind != "system_log":
        c.kind_mismatch("system_log", kind)
    eid = c.event_id("event_id", get("event_id"))
    ts = c.occurred_at("occurred_at", get("occurred_at"), limit_ms)
    level = c.choice("level", get("level"), _LEVELS)
    service = c.req_str("service", get("service"), 64)
    message = c.message("message", get("message"))
    metadata_json = c.metadata("metadata", get("metadata"))
    user_id = c.opt_str("user_id", get("user_id"), 128)
    session_id = c.opt_str("session_id", get("session_id"), 128)
    return SystemLog(eid, ts, level, service, message, metadata_json, user_id, session_id)


_VALIDATORS: Final[Mapping[str, Validator]] = {
    EventKind.API_CALL: _api_call,
    EventKind.ANALYSIS: _analysis,
    EventKind.SYSTEM_LOG: _system_log,
    EventKind.PERFORMANCE_METRIC: _performance_metric,
    EventKind.AUDIT: _audit,
}


def _validator(kind: EventKind) -> Validator:
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EventKind)}")
    return validator


def validate_event(kind: EventKind, obj: object, *, now_ms: int) -> Event:
    """Validate one event object (a dict as decoded from JSON) of ``kind``.

    Returns the typed, normalised event; raises :class:`ContractError` with the reason and a
    detail naming the field. ``now_ms`` is the current time in epoch milliseconds: events
    more than 5 minutes after it are ``future_timestamp``. Any ``Mapping`` is accepted.
    Raises ``ValueError`` (not ContractError) if ``kind`` is not an :class:`EventKind`.
    """
    validator = _validator(kind)
    if not isinstance(obj, dict):
        if not isinstance(obj, Mapping):
            c.fail(Reason.NOT_AN_OBJECT, f"event: must be an object, got {c.json_type(obj)}")
        obj = dict(obj)
    return validator(obj, now_ms + c.MAX_FUTURE_MS)


def decode_record(
    kind: EventKind, value: bytes | None, *, now_ms: int
) -> tuple[list[Event], list[tuple[Invalid, object]]]:
    """Decode one Kafka record value of the topic for ``kind`` and validate its events.

    The value is UTF-8 JSON: one event object, or an array of event objects (possibly
    empty). Returns the valid events in record order, and for every rejected part an
    :class:`Invalid` paired with what to dead-letter: the decoded event object (or array
    element) for event failures, the raw ``value`` for record-level failures
    (``malformed_json``, including a null value, and a value that is neither object nor
    array). Never raises for bad data; raises ``ValueError`` for an unknown ``kind``.
    """
    validator = _validator(kind)
    if value is None:
        return [], [(Invalid(Reason.MALFORMED_JSON, "record value: null (no value)", None), None)]
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        detail = f"record value: not valid JSON: {exc}"
        return [], [(Invalid(Reason.MALFORMED_JSON, detail, None), value)]
    limit_ms = now_ms + c.MAX_FUTURE_MS
    if type(data) is list:
        events: list[Event] = []
        invalid: list[tuple[Invalid, object]] = []
        append = events.append
        for index, obj in enumerate(data):
            if type(obj) is dict:
                try:
                    append(validator(obj, limit_ms))
                except ContractError as exc:
                    invalid.append((Invalid(exc.reason, exc.detail, index), obj))
            else:
                detail = f"event {index}: must be an object, got {c.json_type(obj)}"
                invalid.append((Invalid(Reason.NOT_AN_OBJECT, detail, index), obj))
        return events, invalid
    if type(data) is dict:
        try:
            return [validator(data, limit_ms)], []
        except ContractError as exc:
            return [], [(Invalid(exc.reason, exc.detail, None), data)]
    detail = f"record value: must be an object or an array, got {c.json_type(data)}"
    return [], [(Invalid(Reason.NOT_AN_OBJECT, detail, None), value)]
