"""The standard workload generator: spec validation, exact counts, determinism, distributions."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import uuid
from collections import Counter, defaultdict

import orjson
import pytest

from pipeline.contract import EventKind
from pipeline.workload import (
    Item,
    WorkloadSpec,
    format_uuid,
    generate,
    iso_timestamp,
    occurred_ms,
    organization_of,
    pack_stream,
)
from pipeline.workload.spec import (
    AUDIT_ACTIONS,
    HOUR_MS,
    LATE_WINDOW_MS,
    METRIC_INSTANCES,
    METRIC_SERIES,
    REGIONS,
    SERVICE_WEIGHTS,
    SERVICES,
    WINDOW_MS,
)

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
API, ANALYSIS, LOG = EventKind.API_CALL, EventKind.ANALYSIS, EventKind.SYSTEM_LOG
METRIC, AUDIT = EventKind.PERFORMANCE_METRIC, EventKind.AUDIT
FINAL = {"completed", "failed", "fallback"}


def digest(spec: WorkloadSpec, shape: str = "batched") -> str:
    h = hashlib.sha256()
    for record in pack_stream(generate(spec), "single" if shape == "single" else "batched"):
        h.update(record.kind.encode())
        h.update(len(record.value).to_bytes(8))
        h.update(record.value)
    return h.hexdigest()


@pytest.fixture(scope="module")
def big() -> tuple[WorkloadSpec, list[Item]]:
    spec = WorkloadSpec(api_calls=50_000, start_ms=START)
    return spec, list(generate(spec))


def events(items: list[Item], kind: EventKind) -> list[dict[str, object]]:
    return [i.event for i in items if i.kind is kind and i.poison is None and i.event is not None]


def num(event: dict[str, object], name: str) -> float:
    value = event[name]
    assert isinstance(value, int | float)
    return value


def integer(event: dict[str, object], name: str) -> int:
    value = event[name]
    assert isinstance(value, int)
    return value


# --- spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_calls": -1}, "api_calls must be >= 0"),
        ({"api_calls": True}, "api_calls must be an integer"),
        ({"api_calls": 1.5}, "api_calls must be an integer"),
        ({"start_ms": 1000}, "start_ms must be >="),
        ({"invalid_fraction": 1.5}, "invalid_fraction must be between 0 and 1"),
        ({"late_fraction": -0.1}, "late_fraction must be between 0 and 1"),
        ({"duplicate_fraction": float("nan")}, "duplicate_fraction must be between"),
        ({"analyses_per_api_call": "0.1"}, "analyses_per_api_call must be a number"),
        ({"metrics_per_api_call": -0.5}, "metrics_per_api_call must be between 0 and 10"),
        ({"audits_per_api_call": 11}, "audits_per_api_call must be between 0 and 10"),
        ({"audits_per_api_call": None}, "audits_per_api_call must be a number"),
        ({"lifecycle_fraction": 1.01}, "lifecycle_fraction must be between 0 and 1"),
        ({"lifecycle_fraction": True}, "lifecycle_fraction must be a number"),
        ({"seed": "42"}, "seed must be an integer"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"api_calls": 10, "start_ms": START, **kwargs}
    with pytest.raises(ValueError, match=message):
        WorkloadSpec(**args)  # type: ignore[arg-type]


def test_spec_defaults_and_derived_counts() -> None:
    spec = WorkloadSpec(
        api_calls=1000,
        start_ms=START,
        invalid_fraction=0.1,
        late_fraction=0.02,
        duplicate_fraction=0.1,
    )
    assert spec.seed == 42
    assert (spec.analyses, spec.logs, spec.late, spec.duplicates) == (100, 50, 20, 10)
    assert (spec.metrics, spec.audits) == (50, 10)
    assert (spec.lifecycles, spec.lifecycle_changes, spec.analysis_events) == (20, 40, 140)
    assert spec.valid_per_kind() == {API: 1000, ANALYSIS: 140, LOG: 50, METRIC: 50, AUDIT: 10}
    assert spec.valid_events == 1250
    assert spec.poison == 125
    assert spec.poison_per_kind() == {API: 100, ANALYSIS: 14, LOG: 5, METRIC: 5, AUDIT: 1}
    assert spec.total_items == 1250 + 10 + 125


def test_poison_per_kind_covers_every_kind_in_proportion() -> None:
    spec = WorkloadSpec(api_calls=100_000, start_ms=START, invalid_fraction=0.03)
    split = spec.poison_per_kind()
    assert list(split) == list(EventKind)
    assert sum(split.values()) == spec.poison
    valid = spec.valid_per_kind()
    assert list(valid) == list(EventKind)
    for kind in EventKind:
        assert abs(split[kind] - spec.poison * valid[kind] / spec.valid_events) < 1 + len(valid)
        assert split[kind] > 0
    assert WorkloadSpec(api_calls=0, start_ms=START, invalid_fraction=0.5).poison_per_kind() == (
        dict.fromkeys(EventKind, 0)
    )


def test_zero_ratios_give_a_single_kind() -> None:
    spec = WorkloadSpec(
        api_calls=500,
        start_ms=START,
        analyses_per_api_call=0,
        logs_per_api_call=0,
        metrics_per_api_call=0,
        audits_per_api_call=0,
        invalid_fraction=0.1,
    )
    assert {i.kind for i in generate(spec)} == {API}
    assert spec.lifecycle_changes == 0


def test_generate_yields_exact_counts() -> None:
    spec = WorkloadSpec(
        api_calls=3000,
        start_ms=START,
        invalid_fraction=0.05,
        late_fraction=0.1,
        duplicate_fraction=0.2,
    )
    items = list(generate(spec))
    assert len(items) == spec.total_items
    valid = Counter(i.kind for i in items if i.poison is None)
    assert valid[API] == spec.api_calls
    assert valid[ANALYSIS] == spec.analyses + spec.lifecycle_changes + spec.duplicates
    assert valid[LOG] == spec.logs
    assert valid[METRIC] == spec.metrics
    assert valid[AUDIT] == spec.audits
    statuses = Counter(e["status"] for e in events(items, ANALYSIS))
    assert statuses["queued"] == statuses["processing"] == spec.lifecycles
    assert Counter(i.kind for i in items if i.poison) == {
        k: n for k, n in spec.poison_per_kind().items() if n
    }
    late = [e for e in events(items, API) if occurred_ms(e["occurred_at"]) < START - WINDOW_MS]
    assert spec.late * 0.95 <= len(late) <= spec.late  # a late one may land in the last 6 h


def test_empty_workload() -> None:
    assert list(generate(WorkloadSpec(api_calls=0, start_ms=START))) == []


# --- determinism ------------------------------------------------------------------------


def test_same_seed_same_bytes_both_shapes() -> None:
    spec = WorkloadSpec(
        api_calls=3000, start_ms=START, invalid_fraction=0.02, duplicate_fraction=0.1
    )
    again = WorkloadSpec(
        api_calls=3000, start_ms=START, invalid_fraction=0.02, duplicate_fraction=0.1
    )
    for shape in ("batched", "single"):
        assert digest(spec, shape) == digest(again, shape)


def test_different_seed_different_bytes() -> None:
    a = WorkloadSpec(api_calls=500, start_ms=START)
    b = WorkloadSpec(api_calls=500, start_ms=START, seed=43)
    assert digest(a) != digest(b)
    assert digest(a) != digest(WorkloadSpec(api_calls=500, start_ms=START + 1))


def test_same_bytes_in_another_process() -> None:
    spec = WorkloadSpec(api_calls=2000, start_ms=START, invalid_fraction=0.05, late_fraction=0.1)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.unit.test_workload import digest, START; "
        "from pipeline.workload import WorkloadSpec; "
        "print(digest(WorkloadSpec(api_calls=2000, start_ms=START, invalid_fraction=0.05, "
        "late_fraction=0.1)))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # A new interpreter has its own str-hash randomisation: equal output proves hash() is unused.
    out = subprocess.run(
        [sys.executable, "-c", code, root], capture_output=True, check=True, text=True
    )
    assert out.stdout.strip() == digest(spec)


def test_format_uuid_is_uuid4() -> None:
    for value in (0, 2**128 - 1, 0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0):
        assert format_uuid(value) == str(uuid.UUID(int=value, version=4))


# --- distributions ----------------------------------------------------------------------


def test_api_call_distributions(big: tuple[WorkloadSpec, list[Item]]) -> None:
    _, items = big
    calls = events(items, API)
    n = len(calls)
    services = Counter(e["service"] for e in calls)
    for service, weight in zip(SERVICES, SERVICE_WEIGHTS, strict=True):
        assert abs(100 * services[service] / n - weight) < 2, service
    endpoints: dict[object, Counter[object]] = defaultdict(Counter)
    for e in calls:
        endpoints[e["service"]][e["endpoint"]] += 1
    for name, counts in endpoints.items():
        assert len(counts) == 10
        share = services[name] / 10
        assert all(abs(c - share) < 0.2 * share for c in counts.values()), name
    methods = Counter(e["method"] for e in calls)
    for method, weight in (("GET", 60), ("POST", 30), ("PUT", 6), ("DELETE", 4)):
        assert abs(100 * methods[method] / n - weight) < 2, method
    success = [e for e in calls if e["success"]]
    assert abs(len(success) / n - 0.98) < 0.005
    assert {e["status_code"] for e in success} == {200}
    assert {e["status_code"] for e in calls if not e["success"]} == {500, 502, 503, 429}
    anonymous = [e for e in calls if e["user_id"] is None]
    assert abs(len(anonymous) / n - 0.05) < 0.007
    assert all(e["organization_id"] is None for e in anonymous)
    tokens = [integer(e, "tokens") for e in calls]
    assert abs(tokens.count(0) / n - 0.5) < 0.01
    assert min(t for t in tokens if t) == 1
    assert max(tokens) == 2000
    for e in calls:
        assert e["cost_usd"] == round(integer(e, "tokens") * 0.000002, 8)
        rt = e["response_time_ms"]
        assert isinstance(rt, float)
        assert 0 <= rt <= 60_000
        assert rt == round(rt, 3)
    median = statistics.median(num(e, "response_time_ms") for e in calls)
    assert 72 < median < 88


def test_users_zipf_and_one_org_each(big: tuple[WorkloadSpec, list[Item]]) -> None:
    _, items = big
    orgs: dict[object, set[object]] = defaultdict(set)
    for kind in (API, ANALYSIS):
        for e in events(items, kind):
            if e["user_id"] is not None:
                orgs[e["user_id"]].add(e["organization_id"])
    assert all(len(o) == 1 for o in orgs.values())
    assert all(o == {organization_of(str(u))} for u, o in orgs.items())
    assert len({org for o in orgs.values() for org in o}) == 200
    users = Counter(e["user_id"] for e in events(items, API) if e["user_id"] is not None)
    top = users.most_common(3)
    assert top[0][0] == "user-00000"
    # Zipf s=1.1: rank 1 gets ~2^1.1 = 2.1 times the calls of rank 2.
    assert 1.6 < top[0][1] / users["user-00001"] < 2.8
    assert len(users) > 3000


def test_analysis_and_log_distributions(big: tuple[WorkloadSpec, list[Item]]) -> None:
    spec, items = big
    analyses = [e for e in events(items, ANALYSIS) if e["status"] in FINAL]
    assert len(analyses) == spec.analyses == 5000
    statuses = Counter(e["status"] for e in analyses)
    assert abs(statuses["completed"] / 5000 - 0.95) < 0.015
    assert set(statuses) == {"completed", "failed", "fallback"}
    assert len({e["model_type"] for e in analyses}) == 6
    versions: dict[object, set[object]] = defaultdict(set)
    for e in analyses:
        versions[e["model_type"]].add(e["model_version"])
        assert e["fallback_used"] is (e["status"] == "fallback")
        assert (e["error_type"] is not None) is (e["status"] == "failed")
        assert e["processing_attempts"] == (1 if e["status"] == "completed" else 2)
        request, response = integer(e, "request_tokens"), integer(e, "response_tokens")
        assert e["tokens_used"] == request + response
        assert 100 <= request <= 4000
        assert 50 <= response <= 2000
        assert e["user_id"] is not None
        assert len(orjson.dumps(e["metadata"])) < 200
    assert all(len(v) == 2 for v in versions.values())
    assert abs(sum(bool(e["caching_used"]) for e in analyses) / 5000 - 0.2) < 0.03
    assert abs(sum(bool(e["batch_processed"]) for e in analyses) / 5000 - 0.1) < 0.02
    assert len({e["region_processed"] for e in analyses}) == 4
    waits = [num(e, "queue_wait_time_ms") for e in analyses]
    assert 180 < statistics.mean(waits) < 220
    logs = events(items, LOG)
    assert len(logs) == 2500
    levels = Counter(e["level"] for e in logs)
    assert abs(levels["info"] / 2500 - 0.8) < 0.03
    assert set(levels) == {"info", "warn", "error", "debug"}
    assert {e["service"] for e in logs} == set(SERVICES)


def test_metric_distributions(big: tuple[WorkloadSpec, list[Item]]) -> None:
    spec, items = big
    metrics = events(items, METRIC)
    assert len(metrics) == spec.metrics == 2500
    units = {name: unit for name, unit, _ in METRIC_SERIES}
    names = Counter(e["name"] for e in metrics)
    assert set(names) == set(units)
    for name, _, weight in METRIC_SERIES:
        assert abs(100 * names[name] / 2500 - weight) < 3.5, name
    for e in metrics:
        assert e["unit"] == units[str(e["name"])]
        assert e["service"] in SERVICES
        assert e["instance"] in METRIC_INSTANCES
        assert e["tags"] == {} or (isinstance(e["tags"], dict) and list(e["tags"]) == ["region"]), (
            e["tags"]
        )
        value = e["value"]
        assert isinstance(value, float)
        assert round(value * 1000) / 1000 == value  # at most 3 decimals: exact thousandths
        if e["name"] != "clock.offset":
            assert value >= 0
    tagged = [e for e in metrics if e["tags"]]
    assert abs(len(tagged) / 2500 - 0.5) < 0.05
    assert {e["tags"]["region"] for e in tagged} == set(REGIONS)  # type: ignore[index]
    offsets = [num(e, "value") for e in metrics if e["name"] == "clock.offset"]
    assert min(offsets) < 0 < max(offsets)
    rss = [num(e, "value") for e in metrics if e["name"] == "worker.rss"]
    assert all(v == int(v) and 2e8 <= v <= 2e9 for v in rss)


def test_audit_distributions(big: tuple[WorkloadSpec, list[Item]]) -> None:
    spec, items = big
    audits = events(items, AUDIT)
    assert len(audits) == spec.audits == 500
    entity_of = {action: entity for action, entity, _ in AUDIT_ACTIONS}
    assert {e["action"] for e in audits} == set(entity_of)
    types = Counter(e["actor_type"] for e in audits)
    assert set(types) == {"user", "service", "system"}
    assert abs(types["user"] / 500 - 0.7) < 0.07
    for e in audits:
        actor, kind = e["actor"], e["actor_type"]
        if kind == "user":
            assert isinstance(actor, str) and actor.startswith("user-")
            assert e["organization_id"] == organization_of(actor)
        elif kind == "service":
            assert actor in SERVICES
        else:
            assert actor == "system"
            assert e["request_id"] is None
        if kind != "system":
            assert isinstance(e["request_id"], str) and e["request_id"].startswith("req-")
        assert isinstance(e["organization_id"], str) and e["organization_id"].startswith("org-")
        assert e["entity_type"] == entity_of[str(e["action"])]
        assert isinstance(e["entity_id"], str) and e["entity_id"]
        for side in ("before", "after"):
            assert e[side] is None or len(orjson.dumps(e[side])) < 100
        if e["action"] == "settings.updated":
            assert e["before"] != e["after"]
            assert e["before"] is not None and e["after"] is not None


def test_kinds_are_interleaved(big: tuple[WorkloadSpec, list[Item]]) -> None:
    _, items = big
    for kind in (ANALYSIS, LOG, METRIC, AUDIT):
        positions = [i for i, item in enumerate(items) if item.kind is kind]
        quarter = len(items) // 4
        per_quarter = Counter(min(p // quarter, 3) for p in positions)
        assert all(abs(per_quarter[q] / len(positions) - 0.25) < 0.04 for q in range(4)), kind


def test_occurred_at_in_window_and_both_formats(big: tuple[WorkloadSpec, list[Item]]) -> None:
    _, items = big
    iso = 0
    total = 0
    for item in items:
        assert item.event is not None
        at = item.event["occurred_at"]
        if isinstance(at, str):
            iso += 1
            assert at.endswith("+00:00")
            assert iso_timestamp(occurred_ms(at)) == at
        ms = occurred_ms(at)
        assert START - WINDOW_MS <= ms < START
        total += 1
    assert abs(iso / total - 0.1) < 0.001


def test_late_events_within_30_days() -> None:
    spec = WorkloadSpec(api_calls=5000, start_ms=START, late_fraction=0.2)
    times = [occurred_ms(e["occurred_at"]) for e in events(list(generate(spec)), API)]
    assert all(START - LATE_WINDOW_MS <= t < START for t in times)
    late = [t for t in times if t < START - WINDOW_MS]
    assert 950 <= len(late) <= 1000
    assert min(late) < START - 25 * 24 * HOUR_MS  # spread over the 30 days


# A re-emitted item falls due within 1000 items of its original; a few more when several
# fall due at the same position.
LATER = 1010


def test_duplicates_reemit_same_event_later() -> None:
    spec = WorkloadSpec(api_calls=5000, start_ms=START, duplicate_fraction=0.3)
    items = list(generate(spec))
    first: dict[object, int] = {}
    repeats = 0
    for position, item in enumerate(items):
        if item.kind is not ANALYSIS:
            continue
        assert item.event is not None
        event_id = item.event["event_id"]
        if event_id in first:
            repeats += 1
            original = items[first[event_id]].event
            assert orjson.dumps(item.event) == orjson.dumps(original)  # same analysis_id too
            assert original is not None and item.event["analysis_id"] == original["analysis_id"]
            assert 0 < position - first[event_id] <= LATER
        else:
            first[event_id] = position
    assert repeats == spec.duplicates == 150


def test_every_analysis_event_has_an_analysis_id_and_an_actor(
    big: tuple[WorkloadSpec, list[Item]],
) -> None:
    spec, items = big
    ids: Counter[object] = Counter()
    for e in events(items, ANALYSIS):
        analysis_id = e["analysis_id"]
        assert isinstance(analysis_id, str) and uuid.UUID(analysis_id).version == 4
        assert analysis_id != e["event_id"]
        ids[analysis_id] += 1
        if e["status"] in FINAL:
            assert e["actor"] == e["user_id"]
    assert len(ids) == spec.analyses
    assert Counter(ids.values()) == {1: spec.analyses - spec.lifecycles, 3: spec.lifecycles}


def test_lifecycle_changes_occur_before_but_arrive_after_the_final_event() -> None:
    spec = WorkloadSpec(api_calls=5000, start_ms=START, lifecycle_fraction=0.5)
    items = list(generate(spec))
    changes: dict[object, list[tuple[int, dict[str, object]]]] = defaultdict(list)
    for position, item in enumerate(items):
        if item.kind is ANALYSIS and item.event is not None:
            changes[item.event["analysis_id"]].append((position, item.event))
    lifecycles = [c for c in changes.values() if len(c) > 1]
    assert len(lifecycles) == spec.lifecycles == 250
    workers: Counter[object] = Counter()
    for lifecycle in lifecycles:
        assert len(lifecycle) == 3
        (at_final, final), *later = lifecycle
        assert final["status"] in FINAL  # emitted first...
        by_status = {str(e["status"]): (p, e) for p, e in later}
        assert set(by_status) == {"queued", "processing"}
        for position, event in later:  # ...the earlier changes after it
            assert 0 < position - at_final <= LATER
            for name in ("model_type", "user_id", "organization_id", "entry_id"):
                assert event[name] == final[name]
            assert event["request_tokens"] == event["response_tokens"] == 0
            assert event["tokens_used"] == 0
            assert event["api_cost_usd"] == 0
            assert event["event_id"] != final["event_id"]
        queued, processing = by_status["queued"][1], by_status["processing"][1]
        assert queued["actor"] == "scheduler"
        workers[processing["actor"]] += 1
        assert processing["queue_wait_time_ms"] == final["queue_wait_time_ms"]
        t_final = occurred_ms(final["occurred_at"])
        t_queued, t_processing = (occurred_ms(e["occurred_at"]) for e in (queued, processing))
        assert START - WINDOW_MS <= t_queued <= t_processing <= t_final  # clamped to the window
        if t_queued > START - WINDOW_MS:
            wait, work = num(final, "queue_wait_time_ms"), num(final, "processing_time_ms")
            assert t_final - t_processing == int(work)
            assert t_final - t_queued == int(work + wait)
    assert set(workers) == {"worker-1", "worker-2", "worker-3", "worker-4"}


def test_poison_ids_never_collide_with_valid_ids() -> None:
    spec = WorkloadSpec(api_calls=5000, start_ms=START, invalid_fraction=0.1)
    items = list(generate(spec))
    valid = {i.event["event_id"] for i in items if i.poison is None and i.event is not None}
    poison_ids = [
        i.event.get("event_id") for i in items if i.poison is not None and i.event is not None
    ]
    uuids = [p for p in poison_ids if isinstance(p, str) and len(p) == 36]
    assert len(uuids) > 400
    assert all(uuid.UUID(p).version == 8 for p in uuids)
    assert all(uuid.UUID(str(v)).version == 4 for v in valid)
    assert not valid & set(uuids)
