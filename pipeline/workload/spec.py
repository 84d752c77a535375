"""The standard workload's parameters, its fixed distributions and the item it yields.

:class:`WorkloadSpec` says how big a run is, how many events of each kind it holds per API
call and which optional defects it carries (poison, late events, duplicates); everything
else about the standard workload (see ``/work/shared/workloads.md``) is fixed here as
module constants so every benchmark and end-to-end test draws from the same distributions.
:class:`Item` is one unit of the generated stream: a valid wire event, or a poison
event/record with the reason the validator must give it.

Counts derived from a spec are exact (not sampled): a spec with ``api_calls=1000`` yields
exactly 1000 API-call events, ``analyses`` analyses (each one final analysis event, some
preceded by ``queued`` and ``processing`` state changes), ``metrics`` performance metrics,
``audits`` audit events, and so on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pipeline.contract import EventKind, Reason

__all__ = [
    "HOUR_MS",
    "LATE_WINDOW_MS",
    "WINDOW_MS",
    "Item",
    "WorkloadSpec",
    "iso_timestamp",
    "organization_of",
    "user_name",
]

HOUR_MS: Final = 3_600_000
WINDOW_MS: Final = 6 * HOUR_MS
"""occurred_at of a normal event is uniform over [start_ms - WINDOW_MS, start_ms)."""
LATE_WINDOW_MS: Final = 30 * 24 * HOUR_MS
"""occurred_at of a late API call is uniform over [start_ms - LATE_WINDOW_MS, start_ms)."""

# --- API calls -------------------------------------------------------------------------
SERVICES: Final = ("auth", "search", "billing", "profile", "reports")
SERVICE_WEIGHTS: Final = (40, 25, 15, 12, 8)
ENDPOINTS: Final[dict[str, tuple[str, ...]]] = {
    "auth": (
        "/v1/auth/login",
        "/v1/auth/logout",
        "/v1/auth/token",
        "/v1/auth/refresh",
        "/v1/auth/sessions",
        "/v1/auth/sessions/{id}",
        "/v1/auth/password/reset",
        "/v1/auth/mfa/verify",
        "/v1/auth/keys",
        "/v1/auth/keys/{id}",
    ),
    "search": (
        "/v1/search",
        "/v1/search/{id}",
        "/v1/search/suggest",
        "/v1/search/recent",
        "/v1/search/saved",
        "/v1/search/saved/{id}",
        "/v1/search/facets",
        "/v1/search/export",
        "/v1/search/index/{id}",
        "/v1/search/semantic",
    ),
    "billing": (
        "/v1/billing/invoices",
        "/v1/billing/invoices/{id}",
        "/v1/billing/usage",
        "/v1/billing/plans",
        "/v1/billing/plans/{id}",
        "/v1/billing/subscriptions/{id}",
        "/v1/billing/payment-methods",
        "/v1/billing/payment-methods/{id}",
        "/v1/billing/credits",
        "/v1/billing/quotes",
    ),
    "profile": (
        "/v1/profile",
        "/v1/profile/{id}",
        "/v1/profile/avatar",
        "/v1/profile/preferences",
        "/v1/profile/notifications",
        "/v1/profile/teams",
        "/v1/profile/teams/{id}",
        "/v1/profile/activity",
        "/v1/profile/export",
        "/v1/profile/delete",
    ),
    "reports": (
        "/v1/reports",
        "/v1/reports/{id}",
        "/v1/reports/{id}/render",
        "/v1/reports/{id}/share",
        "/v1/reports/templates",
        "/v1/reports/templates/{id}",
        "/v1/reports/schedules",
        "/v1/reports/schedules/{id}",
        "/v1/reports/exports/{id}",
        "/v1/reports/summary",
    ),
}
METHODS: Final = (("GET", 60), ("POST", 30), ("PUT", 6), ("DELETE", 4))
USERS: Final = 10_000
ZIPF_S: Final = 1.1
ANONYMOUS_RATE: Final = 0.05
ORGANIZATIONS: Final = 200
SUCCESS_RATE: Final = 0.98
SUCCESS_STATUS: Final = 200
FAILURE_STATUSES: Final = (500, 502, 503, 429)
RESPONSE_MEDIAN_MS: Final = 80.0
RESPONSE_SIGMA: Final = 1.0
RESPONSE_CAP_MS: Final = 60_000.0
ZERO_TOKENS_RATE: Final = 0.5
MAX_TOKENS: Final = 2000
COST_E8_PER_TOKEN: Final = 200
"""0.000002 USD per token, in 1e-8 USD units."""

# --- Analyses -------------------------------------------------------------------------
MODELS: Final = (
    # model_type, weight %, price per 1k tokens in 1e-8 USD, two model versions
    (
        "gemini_2_5_flash_lite",
        35,
        10_000,
        ("gemini-2.5-flash-lite-001", "gemini-2.5-flash-lite-002"),
    ),
    ("gpt_4o_mini", 25, 60_000, ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2025-01-15")),
    ("gpt_4o", 15, 1_000_000, ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")),
    ("claude_sonnet", 12, 900_000, ("claude-sonnet-4-20250514", "claude-sonnet-4-5-20250929")),
    ("claude_haiku", 8, 240_000, ("claude-3-5-haiku-20241022", "claude-haiku-4-5-20251001")),
    ("gemini_2_5_pro", 5, 500_000, ("gemini-2.5-pro-001", "gemini-2.5-pro-002")),
)
STATUSES: Final = (("completed", 95), ("failed", 3), ("fallback", 2))
ERROR_TYPES: Final = ("timeout", "rate_limited", "provider_error", "invalid_response")
ANALYSIS_VERSIONS: Final = ("1.4.0", "1.5.0")
REGIONS: Final = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
PROCESSING_MEDIAN_MS: Final = 900.0
PROCESSING_SIGMA: Final = 0.7
PROCESSING_CAP_MS: Final = 600_000.0
QUEUE_WAIT_MEAN_MS: Final = 200.0
CACHING_RATE: Final = 0.2
BATCH_RATE: Final = 0.1

LIFECYCLE_QUEUED_ACTOR: Final = "scheduler"
"""actor of a lifecycle's ``queued`` state change."""
LIFECYCLE_WORKERS: Final = 4
"""actor of a ``processing`` state change: ``worker-1`` .. ``worker-4``."""

# --- System logs ----------------------------------------------------------------------
LOG_LEVELS: Final = (("info", 80), ("warn", 12), ("error", 6), ("debug", 2))
LOG_MESSAGES: Final[dict[str, tuple[str, ...]]] = {
    "info": ("request completed", "cache refreshed", "job finished", "user signed in"),
    "warn": ("slow upstream response", "retrying request", "quota at 80%"),
    "error": ("upstream timeout", "database connection reset", "unhandled exception"),
    "debug": ("cache lookup", "feature flag evaluated"),
}

# --- Performance metrics ---------------------------------------------------------------
METRIC_SERIES: Final = (
    # name, unit, weight %: values are generated with at most 3 decimals (sums are exact in
    # integer thousandths); clock.offset may be negative
    ("http.server.duration", "ms", 40),
    ("queue.depth", "1", 20),
    ("db.pool.in_use", "1", 15),
    ("worker.rss", "bytes", 15),
    ("clock.offset", "ms", 10),
)
METRIC_INSTANCES: Final = ("i-0", "i-1", "i-2", "i-3")
METRIC_TAGGED_RATE: Final = 0.5
"""Fraction of metric events with ``tags = {"region": ...}``; the others have ``{}``."""

# --- Audit events -------------------------------------------------------------------------
AUDIT_ACTIONS: Final = (
    # action, entity_type, weight %
    ("analysis.deleted", "analysis", 25),
    ("api_key.created", "api_key", 20),
    ("api_key.revoked", "api_key", 10),
    ("member.invited", "member", 20),
    ("settings.updated", "organization_settings", 25),
)
AUDIT_ACTORS: Final = (("user", 70), ("service", 20), ("system", 10))
"""actor_type weights: a user (Zipf like the API calls), a service name, or ``system``."""

ISO_EVERY: Final = 10
"""Every ISO_EVERY-th generated event writes occurred_at as an ISO-8601 string."""


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_timestamp(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 with milliseconds and a ``+00:00`` offset."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def user_name(index: int) -> str:
    """The user_id of user ``index`` (0-based popularity rank: user-00000 is the busiest)."""
    return f"user-{index:05d}"


def organization_of(user_id: str) -> str:
    """The one organization user ``user_id`` belongs to (a fixed, deterministic mapping)."""
    index = int(user_id.removeprefix("user-"))
    return f"org-{index * 7919 % ORGANIZATIONS:03d}"


@dataclass(frozen=True, slots=True)
class Item:
    """One generated unit: a valid event, or a poison event or whole poison record.

    - valid: ``event`` is the wire object (``"type"`` included), ``raw`` and ``poison`` None;
    - poison event: ``event`` is an object with exactly one defect, ``poison`` the reason
      :func:`pipeline.contract.decode_record` gives it;
    - poison record: ``raw`` is a whole record value (bad JSON, a scalar), ``event`` None.

    ``kind`` is the topic the item is meant for. Treat ``event`` as read-only.
    """

    kind: EventKind
    event: dict[str, object] | None
    raw: bytes | None = None
    poison: Reason | None = None


def _check_fraction(name: str, value: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not 0.0 <= value <= high:
        raise ValueError(f"{name} must be between 0 and {high:g}, got {value!r}")


def _check_int(name: str, value: int, low: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSpec:
    """Parameters of one run of the standard workload (keyword-only, validated).

    - ``seed``: the same spec always yields byte-identical items.
    - ``api_calls``: number of valid API-call events.
    - ``start_ms``: the run start (epoch ms); events occur in the 6 hours before it.
    - ``analyses_per_api_call`` / ``logs_per_api_call`` / ``metrics_per_api_call`` /
      ``audits_per_api_call``: 0.1, 0.05, 0.05 and 0.01 by default (analyses counted by
      their final state change).
    - ``lifecycle_fraction``: fraction of analyses (0.2 by default) preceded by two state
      changes of the same ``analysis_id``, ``queued`` then ``processing`` (no tokens, no
      cost), that occur before the final event but are emitted after it (within 1000
      items): they arrive out of order.
    - ``invalid_fraction``: poison items added, as a fraction of the valid events (split
      over the kinds in proportion to their valid counts).
    - ``late_fraction``: fraction of API calls that occur up to 30 days before the start.
    - ``duplicate_fraction``: fraction of analyses whose final event is re-emitted later
      with the same event_id and identical content (stored once; counted once by the
      totals).
    """

    seed: int = 42
    api_calls: int
    start_ms: int
    analyses_per_api_call: float = 0.1
    logs_per_api_call: float = 0.05
    metrics_per_api_call: float = 0.05
    audits_per_api_call: float = 0.01
    lifecycle_fraction: float = 0.2
    invalid_fraction: float = 0.0
    late_fraction: float = 0.0
    duplicate_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, None)
        _check_int("api_calls", self.api_calls, 0)
        _check_int("start_ms", self.start_ms, LATE_WINDOW_MS)
        _check_fraction("analyses_per_api_call", self.analyses_per_api_call, 10.0)
        _check_fraction("logs_per_api_call", self.logs_per_api_call, 10.0)
        _check_fraction("metrics_per_api_call", self.metrics_per_api_call, 10.0)
        _check_fraction("audits_per_api_call", self.audits_per_api_call, 10.0)
        _check_fraction("lifecycle_fraction", self.lifecycle_fraction, 1.0)
        _check_fraction("invalid_fraction", self.invalid_fraction, 1.0)
        _check_fraction("late_fraction", self.late_fraction, 1.0)
        _check_fraction("duplicate_fraction", self.duplicate_fraction, 1.0)

    @property
    def analyses(self) -> int:
        """Number of analyses (distinct ``analysis_id`` values), i.e. of final analysis events."""
        return round(self.api_calls * self.analyses_per_api_call)

    @property
    def lifecycles(self) -> int:
        """Number of analyses preceded by a ``queued`` and a ``processing`` state change."""
        return round(self.analyses * self.lifecycle_fraction)

    @property
    def lifecycle_changes(self) -> int:
        """Number of extra (``queued`` / ``processing``) analysis events: two per lifecycle."""
        return 2 * self.lifecycles

    @property
    def analysis_events(self) -> int:
        """Distinct valid analysis events: the final ones and the lifecycle changes."""
        return self.analyses + self.lifecycle_changes

    @property
    def logs(self) -> int:
        """Number of valid system-log events."""
        return round(self.api_calls * self.logs_per_api_call)

    @property
    def metrics(self) -> int:
        """Number of valid performance-metric events."""
        return round(self.api_calls * self.metrics_per_api_call)

    @property
    def audits(self) -> int:
        """Number of valid audit events."""
        return round(self.api_calls * self.audits_per_api_call)

    def valid_per_kind(self) -> dict[EventKind, int]:
        """Distinct valid events of each kind (duplicates not included), every kind present."""
        return {
            EventKind.API_CALL: self.api_calls,
            EventKind.ANALYSIS: self.analysis_events,
            EventKind.SYSTEM_LOG: self.logs,
            EventKind.PERFORMANCE_METRIC: self.metrics,
            EventKind.AUDIT: self.audits,
        }

    @property
    def valid_events(self) -> int:
        """Distinct valid events of all kinds (duplicates not included)."""
        return sum(self.valid_per_kind().values())

    @property
    def late(self) -> int:
        """Number of API calls whose occurred_at lies in the 30 days before the start."""
        return round(self.api_calls * self.late_fraction)

    @property
    def duplicates(self) -> int:
        """Number of (final) analysis events emitted a second time."""
        return round(self.analyses * self.duplicate_fraction)

    @property
    def poison(self) -> int:
        """Number of poison items of all kinds."""
        return round(self.valid_events * self.invalid_fraction)

    def poison_per_kind(self) -> dict[EventKind, int]:
        """The poison count split over every kind in proportion to its valid count (rounded
        down; the remainder goes to the first kind, API calls)."""
        total, per_kind = self.poison, self.valid_per_kind()
        valid = sum(per_kind.values())
        if total == 0 or valid == 0:
            return dict.fromkeys(EventKind, 0)
        split = {kind: total * n // valid for kind, n in per_kind.items()}
        first = next(iter(EventKind))
        split[first] += total - sum(split.values())
        return split

    @property
    def total_items(self) -> int:
        """Everything :func:`~pipeline.workload.generate.generate` yields."""
        return self.valid_events + self.duplicates + self.poison
