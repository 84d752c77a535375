"""Deterministic generation of the standard workload.

:func:`generate` yields the :class:`~pipeline.workload.spec.Item` stream of a
:class:`~pipeline.workload.spec.WorkloadSpec`: valid events of every kind (API calls,
analyses, system logs, performance metrics, audit events) interleaved at random (as one
busy service would emit them), poison items mixed in, duplicated analyses re-emitted a
little later, and the earlier ``queued`` / ``processing`` state changes of some analyses
emitted after their final event (out of order). Everything comes from one
``random.Random(spec.seed)``, so the same spec gives byte-identical output in every process.

:class:`EventFactory` builds single valid wire events; it is written for speed (tables
precomputed once, about one RNG call per field, the closures bind everything locally):
about 1 µs per API call on one core.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Final

from pipeline.contract import EventKind
from pipeline.workload import spec as s
from pipeline.workload.poison import poison_items
from pipeline.workload.spec import Item, WorkloadSpec, iso_timestamp

__all__ = ["EventFactory", "format_uuid", "generate"]

Maker = Callable[[], dict[str, object]]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_V4_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET: Final = (4 << 76) | (0x8000 << 48)
_DUPLICATE_DELAY: Final = 1000
"""A duplicate follows its original within this many items (a producer retry); so do the
earlier state changes of an analysis (delivered late by a slower path)."""


def format_uuid(value: int) -> str:
    """``str(uuid.UUID(int=value, version=4))``, about four times faster."""
    h = ((value & _V4_CLEAR) | _V4_SET).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _cumulative(weights: list[float] | tuple[int, ...]) -> list[float]:
    """Cumulative weights normalised to end at exactly 1.0 (for ``bisect(cum, random())``)."""
    cum = list(accumulate(float(w) for w in weights))
    total = cum[-1]
    cum = [c / total for c in cum]
    cum[-1] = 1.0
    return cum


def _table(pairs: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    """Integer percentage weights as a 100-entry lookup table: ``table[int(random()*100)]``."""
    table = tuple(value for value, weight in pairs for _ in range(weight))
    assert len(table) == 100, "weights must add up to 100"
    return table


class EventFactory:
    """Builds valid wire events of the standard workload from a shared RNG.

    ``api_call(late)``, ``analysis()``, ``system_log()``, ``performance_metric()`` and
    ``audit()`` each return a new wire dict (``"type"`` included); :meth:`maker` gives the
    no-argument builder of a kind. ``lifecycle(final)`` returns the ``queued`` and
    ``processing`` state changes that precede the final analysis event ``final`` (same
    ``analysis_id``, no tokens, no cost). Every ``ISO_EVERY``-th event built (of any kind)
    carries ``occurred_at`` as an ISO-8601 string, the others integer epoch milliseconds.
    """

    api_call: Callable[[bool], dict[str, object]]
    analysis: Maker
    system_log: Maker
    performance_metric: Maker
    audit: Maker
    lifecycle: Callable[[dict[str, object]], tuple[dict[str, object], dict[str, object]]]

    def __init__(self, rng: random.Random, start_ms: int) -> None:
        self.rng = rng
        self.start_ms = start_ms
        built = entries = 0
        random_ = rng.random
        getrandbits = rng.getrandbits
        gauss = rng.gauss
        expovariate = rng.expovariate
        exp = math.exp

        pairs = [(svc, ep) for svc in s.SERVICES for ep in s.ENDPOINTS[svc]]
        per_service = dict(zip(s.SERVICES, s.SERVICE_WEIGHTS, strict=True))
        route_cum = _cumulative([per_service[svc] / len(s.ENDPOINTS[svc]) for svc, _ in pairs])
        route_service = tuple(svc for svc, _ in pairs)
        route_endpoint = tuple(ep for _, ep in pairs)
        service_cum = _cumulative(s.SERVICE_WEIGHTS)
        methods = _table(s.METHODS)
        users = tuple(s.user_name(i) for i in range(s.USERS))
        orgs = tuple(s.organization_of(u) for u in users)
        user_cum = _cumulative([1.0 / (k**s.ZIPF_S) for k in range(1, s.USERS + 1)])
        last_user = s.USERS - 1
        anonymous = s.ANONYMOUS_RATE
        named = 1.0 - anonymous
        success_rate = s.SUCCESS_RATE
        failure_width = (1.0 - success_rate) / len(s.FAILURE_STATUSES)
        failures = s.FAILURE_STATUSES
        last_failure = len(failures) - 1
        rt_mu, rt_sigma, rt_cap = (
            math.log(s.RESPONSE_MEDIAN_MS),
            s.RESPONSE_SIGMA,
            s.RESPONSE_CAP_MS,
        )
        zero_tokens = s.ZERO_TOKENS_RATE
        token_scale = s.MAX_TOKENS / (1.0 - zero_tokens)
        costs = tuple(round(t * s.COST_E8_PER_TOKEN / 100_000_000, 8) for t in range(2001))
        window, late_window = s.WINDOW_MS, s.LATE_WINDOW_MS
        iso_every = s.ISO_EVERY
        uid = format_uuid

        def timestamp(span: int) -> object:
            nonlocal built
            ms = start_ms - 1 - int(random_() * span)
            built += 1
            if built % iso_every == 0:
                return iso_timestamp(ms)
            return ms

        def stamp(ms: int) -> object:
            nonlocal built
            built += 1
            if built % iso_every == 0:
                return iso_timestamp(ms)
            return ms

        def user() -> int:
            return bisect(user_cum, random_())

        def api_call(late: bool = False) -> dict[str, object]:
            route = bisect(route_cum, random_())
            r = random_()
            if r < anonymous:
                user_id = org_id = None
            else:
                u = bisect(user_cum, (r - anonymous) / named, 0, last_user)  # may round to 1.0
                user_id, org_id = users[u], orgs[u]
            r = random_()
            if r < success_rate:
                success, status = True, 200
            else:
                success = False
                status = failures[min(int((r - success_rate) / failure_width), last_failure)]
            rt = int(exp(gauss(rt_mu, rt_sigma)) * 1000.0 + 0.5) / 1000.0
            r = random_()
            tokens = 0 if r < zero_tokens else 1 + int((r - zero_tokens) * token_scale)
            nonlocal built  # timestamp(), inlined: this is the hot path
            at: object = start_ms - 1 - int(random_() * (late_window if late else window))
            built += 1
            if built % iso_every == 0:
                assert isinstance(at, int)
                at = iso_timestamp(at)
            return {
                "type": "api_call",
                "event_id": uid(getrandbits(128)),
                "occurred_at": at,
                "service": route_service[route],
                "endpoint": route_endpoint[route],
                "method": methods[int(random_() * 100.0)],
                "user_id": user_id,
                "organization_id": org_id,
                "success": success,
                "status_code": status,
                "response_time_ms": rt if rt < rt_cap else rt_cap,
                "tokens": tokens,
                "cost_usd": costs[tokens],
            }

        model_cum = _cumulative(tuple(m[1] for m in s.MODELS))
        models = s.MODELS
        statuses = _table(s.STATUSES)
        errors = s.ERROR_TYPES
        regions = s.REGIONS
        pt_mu, pt_sigma = math.log(s.PROCESSING_MEDIAN_MS), s.PROCESSING_SIGMA
        pt_cap_us = int(s.PROCESSING_CAP_MS * 1000)
        queue_rate = 1.0 / s.QUEUE_WAIT_MEAN_MS
        caching, batch = s.CACHING_RATE, s.BATCH_RATE
        versions = s.ANALYSIS_VERSIONS
        sources = ("web", "mobile", "api", "batch")
        locales = ("en", "de", "fr", "es", "ja")

        def analysis() -> dict[str, object]:
            nonlocal entries
            model_type, _, price_e8, model_versions = models[bisect(model_cum, random_())]
            status = statuses[int(random_() * 100.0)]
            request_tokens = 100 + int(random_() * 3901)
            response_tokens = 50 + int(random_() * 1951)
            tokens_used = request_tokens + response_tokens
            cost_e8 = (tokens_used * price_e8 + 500) // 1000
            pt_us = min(int(exp(gauss(pt_mu, pt_sigma)) * 1000.0 + 0.5), pt_cap_us)
            qw_us = int(expovariate(queue_rate) * 1000.0 + 0.5)
            u = user()
            entries += 1
            bits = getrandbits(8)
            ok = status == "completed"
            return {
                "type": "analysis",
                "event_id": uid(getrandbits(128)),
                "occurred_at": timestamp(window),
                "model_type": model_type,
                "status": status,
                "user_id": users[u],
                "organization_id": orgs[u],
                "entry_id": f"entry-{entries}",
                "model_version": model_versions[bits & 1],
                "analysis_version": versions[(bits >> 1) & 1],
                "request_tokens": request_tokens,
                "response_tokens": response_tokens,
                "tokens_used": tokens_used,
                "api_cost_usd": cost_e8 / 100_000_000,
                "processing_time_ms": pt_us / 1000.0,
                "queue_wait_time_ms": qw_us / 1000.0,
                "total_processing_time_ms": (pt_us + qw_us) / 1000.0,
                "caching_used": random_() < caching,
                "batch_processed": random_() < batch,
                "region_processed": regions[(bits >> 2) & 3],
                "processing_attempts": 1 if ok else 2,
                "fallback_used": status == "fallback",
                "error_type": errors[(bits >> 4) & 3] if status == "failed" else None,
                "metadata": {
                    "source": sources[int(random_() * 4.0)],
                    "locale": locales[int(random_() * 5.0)],
                    "prompt_chars": request_tokens * 4,
                },
                "analysis_id": uid(getrandbits(128)),
                "actor": users[u],
            }

        earliest = start_ms - window
        queued_actor = s.LIFECYCLE_QUEUED_ACTOR
        workers = tuple(f"worker-{n}" for n in range(1, s.LIFECYCLE_WORKERS + 1))

        def change(final: dict[str, object], status: str, ms: int) -> dict[str, object]:
            return {
                "type": "analysis",
                "event_id": uid(getrandbits(128)),
                "occurred_at": stamp(ms),
                "model_type": final["model_type"],
                "status": status,
                "user_id": final["user_id"],
                "organization_id": final["organization_id"],
                "entry_id": final["entry_id"],
                "model_version": final["model_version"],
                "analysis_version": final["analysis_version"],
                "request_tokens": 0,
                "response_tokens": 0,
                "tokens_used": 0,
                "api_cost_usd": 0.0,
                "processing_time_ms": None,
                "queue_wait_time_ms": None,
                "total_processing_time_ms": None,
                "caching_used": False,
                "batch_processed": False,
                "region_processed": None,
                "processing_attempts": 1,
                "fallback_used": False,
                "error_type": None,
                "metadata": None,
                "analysis_id": final["analysis_id"],
                "actor": queued_actor,
            }

        def lifecycle(final: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
            at = final["occurred_at"]
            final_ms = at if isinstance(at, int) else _epoch_ms(at)
            pt, qw = final["processing_time_ms"], final["queue_wait_time_ms"]
            assert isinstance(pt, float) and isinstance(qw, float)
            queued = change(final, "queued", max(final_ms - int(pt + qw), earliest))
            processing = change(final, "processing", max(final_ms - int(pt), earliest))
            processing["queue_wait_time_ms"] = qw
            processing["region_processed"] = final["region_processed"]
            processing["actor"] = workers[getrandbits(8) % len(workers)]
            return queued, processing

        levels = _table(s.LOG_LEVELS)
        messages = s.LOG_MESSAGES
        services = s.SERVICES

        def system_log() -> dict[str, object]:
            level = levels[int(random_() * 100.0)]
            texts = messages[level]
            r = random_()
            if r < 0.5:
                user_id = session_id = None
            else:
                user_id = users[bisect(user_cum, (r - 0.5) * 2.0)]
                session_id = f"sess-{getrandbits(48):012x}"
            metadata = (
                {"request_id": f"req-{getrandbits(32):08x}", "attempt": 1 + getrandbits(1)}
                if level in ("warn", "error")
                else None
            )
            return {
                "type": "system_log",
                "event_id": uid(getrandbits(128)),
                "occurred_at": timestamp(window),
                "level": level,
                "service": services[bisect(service_cum, random_())],
                "message": texts[int(random_() * len(texts))],
                "metadata": metadata,
                "user_id": user_id,
                "session_id": session_id,
            }

        # Each series draws its value as integer thousandths (at most 3 decimals: the
        # totals sum them exactly).
        def duration_milli() -> int:
            milli = int(exp(gauss(rt_mu, rt_sigma)) * 1000.0 + 0.5)
            return milli if milli < 60_000_000 else 60_000_000

        def queue_depth_milli() -> int:
            return int(expovariate(0.04)) * 1000  # mean 25 items

        def pool_milli() -> int:
            return int(random_() * 51.0) * 1000  # 0..50 connections

        def rss_milli() -> int:
            return (200_000_000 + int(random_() * 1_800_000_000)) * 1000  # 0.2..2 GB

        def offset_milli() -> int:
            milli = int(gauss(0.0, 5000.0))  # ms, centred on 0, both signs
            return max(-50_000, min(milli, 50_000))

        value_of = {
            "http.server.duration": duration_milli,
            "queue.depth": queue_depth_milli,
            "db.pool.in_use": pool_milli,
            "worker.rss": rss_milli,
            "clock.offset": offset_milli,
        }
        series_cum = _cumulative(tuple(w for _, _, w in s.METRIC_SERIES))
        series = tuple((name, unit, value_of[name]) for name, unit, _ in s.METRIC_SERIES)
        instances = s.METRIC_INSTANCES
        tagged = s.METRIC_TAGGED_RATE

        def performance_metric() -> dict[str, object]:
            name, unit, milli = series[bisect(series_cum, random_())]
            bits = getrandbits(8)
            return {
                "type": "performance_metric",
                "event_id": uid(getrandbits(128)),
                "occurred_at": timestamp(window),
                "name": name,
                "value": milli() / 1000.0,
                "unit": unit,
                "service": services[bisect(service_cum, random_())],
                "instance": instances[bits & 3],
                "tags": {"region": regions[(bits >> 2) & 3]} if random_() < tagged else {},
            }

        actor_types = _table(s.AUDIT_ACTORS)
        action_cum = _cumulative(tuple(w for _, _, w in s.AUDIT_ACTIONS))
        actions = tuple((action, entity) for action, entity, _ in s.AUDIT_ACTIONS)
        roles = ("viewer", "analyst", "admin")
        scopes = (["usage:read"], ["usage:read", "analyses:read"], ["events:write"])

        def audit() -> dict[str, object]:
            actor_type = actor_types[int(random_() * 100.0)]
            u = user()
            if actor_type == "user":
                actor: str = users[u]
            elif actor_type == "service":
                actor = services[bisect(service_cum, random_())]
            else:
                actor = "system"
            action, entity_type = actions[bisect(action_cum, random_())]
            bits = getrandbits(8)
            before: dict[str, object] | None = None
            after: dict[str, object] | None = None
            if entity_type == "analysis":
                entity_id = uid(getrandbits(128))
                before = {"status": "completed", "model_type": models[bits % len(models)][0]}
            elif entity_type == "api_key":
                entity_id = f"key-{getrandbits(32):08x}"
                if action == "api_key.created":
                    after = {"name": f"key {bits}", "scopes": scopes[bits % len(scopes)]}
                else:
                    before, after = {"active": True}, {"active": False}
            elif entity_type == "member":
                entity_id = users[user()]
                after = {"role": roles[bits % len(roles)]}
            else:
                entity_id = orgs[u]
                days = (30, 90, 365)
                before = {"retention_days": days[bits % 3]}
                after = {"retention_days": days[(bits + 1) % 3]}
            return {
                "type": "audit",
                "event_id": uid(getrandbits(128)),
                "occurred_at": timestamp(window),
                "actor": actor,
                "actor_type": actor_type,
                "action": action,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "organization_id": orgs[u],
                "request_id": None if actor_type == "system" else f"req-{getrandbits(32):08x}",
                "before": before,
                "after": after,
            }

        self.api_call = api_call
        self.analysis = analysis
        self.lifecycle = lifecycle
        self.system_log = system_log
        self.performance_metric = performance_metric
        self.audit = audit

    def maker(self, kind: EventKind) -> Maker:
        """A no-argument builder of valid (not late, final) events of ``kind``."""
        makers: dict[EventKind, Maker] = {
            EventKind.API_CALL: lambda: self.api_call(False),
            EventKind.ANALYSIS: self.analysis,
            EventKind.SYSTEM_LOG: self.system_log,
            EventKind.PERFORMANCE_METRIC: self.performance_metric,
            EventKind.AUDIT: self.audit,
        }
        maker = makers.get(kind)
        if maker is None:
            raise ValueError(f"unknown event kind {kind!r}")
        return maker


def _epoch_ms(iso: object) -> int:
    assert isinstance(iso, str)
    return (datetime.fromisoformat(iso) - _EPOCH) // _ONE_MS


def generate(spec: WorkloadSpec) -> Iterator[Item]:
    """Yield the items of ``spec`` (exactly ``spec.total_items``), deterministically.

    Fresh items come from one stream per kind of valid event and one per kind of poison,
    each drawn in proportion to what remains of it, so every kind is spread evenly over
    the run. Exactly ``spec.late`` API calls are late. Exactly ``spec.duplicates`` final
    analysis events are re-emitted (a shallow copy of the same event) and exactly
    ``spec.lifecycles`` analyses get their ``queued`` and ``processing`` state changes, all
    of these within 1000 items after the final event.
    """
    rng = random.Random(spec.seed)
    random_ = rng.random
    factory = EventFactory(rng, spec.start_ms)
    api_call, analysis, lifecycle = factory.api_call, factory.analysis, factory.lifecycle
    push = heapq.heappush
    pending: list[tuple[int, int, Item]] = []
    """(due position, sequence number, item): items to emit later, earliest due first."""
    emitted = queued = 0
    late_left, dup_left, lifecycle_left = spec.late, spec.duplicates, spec.lifecycles
    api_kind, analysis_kind = EventKind.API_CALL, EventKind.ANALYSIS

    def api_item() -> Item:
        nonlocal late_left
        late = False
        if late_left:  # selection sampling: exactly spec.late of the API calls
            late = random_() * counts[0] < late_left
            late_left -= late
        return Item(api_kind, api_call(late))

    def later(item: Item) -> None:
        nonlocal queued
        queued += 1
        push(pending, (emitted + 1 + int(random_() * _DUPLICATE_DELAY), queued, item))

    def analysis_item() -> Item:
        nonlocal dup_left, lifecycle_left
        event = analysis()
        left = counts[1]
        if dup_left and random_() * left < dup_left:
            dup_left -= 1
            later(Item(analysis_kind, dict(event)))
        if lifecycle_left and random_() * left < lifecycle_left:
            lifecycle_left -= 1
            for earlier in lifecycle(event):
                later(Item(analysis_kind, earlier))
        return Item(analysis_kind, event)

    def simple(kind: EventKind) -> Callable[[], Item]:
        make = factory.maker(kind)
        return lambda: Item(kind, make())

    # The streams: (remaining count, maker of the next item). API calls first: the hot
    # path finds its stream at the first comparison. Analyses second: analysis_item reads
    # its count at counts[1].
    valid = spec.valid_per_kind()
    valid[EventKind.ANALYSIS] = spec.analyses  # lifecycle changes come with their analysis
    counts: list[int] = [valid[EventKind.API_CALL], valid[EventKind.ANALYSIS]]
    makers: list[Callable[[], Item]] = [api_item, analysis_item]
    for kind in EventKind:
        if kind not in (api_kind, analysis_kind):
            counts.append(valid[kind])
            makers.append(simple(kind))
    for kind, n in spec.poison_per_kind().items():
        counts.append(n)
        maker = factory.maker(kind)
        makers.append(poison_items(rng, kind, n, start_ms=spec.start_ms, make_valid=maker).__next__)
    remaining = sum(counts)

    while remaining:
        while pending and pending[0][0] <= emitted:
            yield heapq.heappop(pending)[2]
            emitted += 1
        r = int(random_() * remaining)  # integers: exact boundaries, never an empty stream
        if r == remaining:
            r -= 1
        remaining -= 1
        i = 0
        while r >= counts[i]:
            r -= counts[i]
            i += 1
        item = makers[i]()  # reads counts[i] before it is decremented
        counts[i] -= 1
        yield item
        emitted += 1
    while pending:
        yield heapq.heappop(pending)[2]
