"""The validators of the monitoring kinds, ``performance_metric`` and ``audit``.

Written like those of :mod:`pipeline.contract.validate` (which maps each kind to its validator
and documents the approach): the usual valid form of each field is tested inline and the
generic check of :mod:`pipeline.contract._checks` runs only otherwise; repeated text values
are shared through :mod:`pipeline.contract._validate_common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from pipeline.contract import _checks as c
from pipeline.contract._validate_common import _SHARED, _opt_text, _share, _slot_setters
from pipeline.contract.monitoring_events import AuditActorType, AuditEvent, PerformanceMetric

_ACTOR_TYPES: Final[Mapping[str, AuditActorType]] = {t.value: t for t in AuditActorType}
_MAX_MEASUREMENT: Final = 1e15
_uuid_match: Final = c.uuid_match
_new: Final = object.__new__
_m0, _m1, _m2, _m3, _m4, _m5, _m6, _m7 = _slot_setters(PerformanceMetric)


def _performance_metric(o: dict[str, object], limit_ms: int) -> PerformanceMetric:
    # An aggregated kind like api_call, so built the same way: inline checks of the usual
    # valid form, the generic check otherwise, slots set directly.
    get = o.get
    shared = _SHARED.get
    kind = get("type")
    if kind is not None and kind != "performance_metric":
        c.kind_mismatch("performance_metric", kind)
    eid = get("event_id")
    if type(eid) is not str or _uuid_match(eid) is None:
        eid = c.event_id("event_id", eid)
    ts = get("occurred_at")
    if type(ts) is not int or not 0 <= ts <= limit_ms:
        ts = c.occurred_at("occurred_at", ts, limit_ms)
    name = get("name")
    if type(name) is not str or not 0 < len(name) <= 128:
        name = c.req_str("name", name, 128)
    name = shared(name) or _share(name)
    value = get("value")
    if type(value) is not float or not -1e15 <= value <= 1e15:  # NaN fails the comparison
        value = c.measurement("value", value, _MAX_MEASUREMENT)
    unit = get("unit")
    if unit is None:
        unit = ""
    else:
        if type(unit) is not str or len(unit) > 32:
            unit = c.opt_str("unit", unit, 32)
            assert unit is not None
        unit = shared(unit) or _share(unit)
    service = get("service")
    if type(service) is not str or not 0 < len(service) <= 64:
        service = c.req_str("service", service, 64)
    service = shared(service) or _share(service)
    instance = get("instance")
    if instance is None:
        instance = ""
    else:
        if type(instance) is not str or len(instance) > 128:
            instance = c.opt_str("instance", instance, 128)
            assert instance is not None
        instance = shared(instance) or _share(instance)
    tags = get("tags")
    if tags is None:
        tags_json = "{}"
    else:
        tags_json = c.tags("tags", tags)
        tags_json = shared(tags_json) or _share(tags_json)
    if TYPE_CHECKING:  # the slot setters are untyped: let mypy check the values against __init__
        PerformanceMetric(eid, ts, name, value, unit, service, instance, tags_json)
    event = _new(PerformanceMetric)
    _m0(event, eid)
    _m1(event, ts)
    _m2(event, name)
    _m3(event, value)
    _m4(event, unit)
    _m5(event, service)
    _m6(event, instance)
    _m7(event, tags_json)
    return event


def _audit(o: dict[str, object], limit_ms: int) -> AuditEvent:
    get = o.get
    shared = _SHARED.get
    kind = get("type")
    if kind is not None and kind != "audit":
        c.kind_mismatch("audit", kind)
    eid = get("event_id")
    if type(eid) is not str or _uuid_match(eid) is None:
        eid = c.event_id("event_id", eid)
    ts = get("occurred_at")
    if type(ts) is not int or not 0 <= ts <= limit_ms:
        ts = c.occurred_at("occurred_at", ts, limit_ms)
    actor = get("actor")
    if type(actor) is not str or not 0 < len(actor) <= 256:
        actor = c.req_str("actor", actor, 256)
    actor = shared(actor) or _share(actor)
    raw_type = get("actor_type")
    actor_type = _ACTOR_TYPES.get(raw_type) if type(raw_type) is str else None
    if actor_type is None:
        actor_type = c.choice("actor_type", raw_type, _ACTOR_TYPES)
    action = get("action")
    if type(action) is not str or not 0 < len(action) <= 128:
        action = c.req_str("action", action, 128)
    action = shared(action) or _share(action)
    entity_type = get("entity_type")
    if type(entity_type) is not str or not 0 < len(entity_type) <= 64:
        entity_type = c.req_str("entity_type", entity_type, 64)
    entity_type = shared(entity_type) or _share(entity_type)
    entity_id = get("entity_id")
    if type(entity_id) is not str or not 0 < len(entity_id) <= 256:
        entity_id = c.req_str("entity_id", entity_id, 256)
    org_id = _opt_text(get("organization_id"), "organization_id", 128)
    request_id = get("request_id")
    if request_id is not None and (type(request_id) is not str or len(request_id) > 128):
        request_id = c.opt_str("request_id", request_id, 128)
    before_json = c.metadata("before", get("before"))
    after_json = c.metadata("after", get("after"))
    return AuditEvent(
        eid,
        ts,
        actor,
        actor_type,
        action,
        entity_type,
        entity_id,
        org_id,
        request_id,
        before_json,
        after_json,
    )
