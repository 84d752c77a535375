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
about 1 µs per API call on one core. The API-call maker (the hot path) and the
``occurred_at`` clock every maker shares are here; the makers of the other kinds, and
:func:`format_uuid`, are in :mod:`pipeline.workload.makers`.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator
from typing import Final

from pipeline.contract import EventKind
from pipeline.workload import spec as s
from pipeline.workload.makers import (
    Lifecycle,
    MakerContext,
    analysis_makers,
    audit_maker,
    cumulative,
    format_uuid,
    performance_metric_maker,
    system_log_maker,
    table,
)
from pipeline.workload.makers import Maker as Maker  # importable from here, as before
from pipeline.workload.poison import poison_items
from pipeline.workload.spec import Item, WorkloadSpec, iso_timestamp

__all__ = ["EventFactory", "format_uuid", "generate"]

_DUPLICATE_DELAY: Final = 1000
"""A duplicate follows its original within this many items (a producer retry); so do the
earlier state changes of an analysis (delivered late by a slower path)."""


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
    lifecycle: Lifecycle

    def __init__(self, rng: random.Random, start_ms: int) -> None:
        self.rng = rng
        self.start_ms = start_ms
        built = 0
        random_ = rng.random
        getrandbits = rng.getrandbits
        gauss = rng.gauss
        exp = math.exp

        pairs = [(svc, ep) for svc in s.SERVICES for ep in s.ENDPOINTS[svc]]
        per_service = dict(zip(s.SERVICES, s.SERVICE_WEIGHTS, strict=True))
        route_cum = cumulative([per_service[svc] / len(s.ENDPOINTS[svc]) for svc, _ in pairs])
        route_service = tuple(svc for svc, _ in pairs)
        route_endpoint = tuple(ep for _, ep in pairs)
        service_cum = cumulative(s.SERVICE_WEIGHTS)
        methods = table(s.METHODS)
        users = tuple(s.user_name(i) for i in range(s.USERS))
        orgs = tuple(s.organization_of(u) for u in users)
        user_cum = cumulative([1.0 / (k**s.ZIPF_S) for k in range(1, s.USERS + 1)])
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

        self.api_call = api_call
        ctx = MakerContext(rng, start_ms, timestamp, stamp, users, orgs, user_cum, service_cum)
        self.analysis, self.lifecycle = analysis_makers(ctx)
        self.system_log = system_log_maker(ctx)
        self.performance_metric = performance_metric_maker(ctx)
        self.audit = audit_maker(ctx)

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
