"""Every Prometheus metric the pipeline exports, in one place.

:class:`Metrics` registers its collectors in the registry it is given (a fresh
``CollectorRegistry`` in tests, the worker's own registry in production), so two workers in
one process, or tests running in parallel, never share counters. Names follow Prometheus
conventions: ``_total`` counters, ``_seconds`` durations, base units.

:class:`Metrics` is the worker's; :class:`AnalyticsMetrics` belongs to whatever process
routes analyst queries (:mod:`pipeline.analytics.routing`); :class:`HttpMetrics` is the
HTTP ingestion server's (:mod:`pipeline.http`).

The alert rules (deploy/) and the dashboard refer to these names; a static test checks that
every name they use is defined here (:data:`METRIC_NAMES`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FLUSH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_EVENTS = (1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000)
_LATENCY_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Metrics:
    """The worker's metrics. Labels: ``topic`` (source topic), ``table``, ``reason``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "pipeline_events_consumed_total",
            "Events read from Kafka (valid and invalid), by source topic.",
            ["topic"],
            registry=r,
        )
        self.records_consumed = Counter(
            "pipeline_records_consumed_total",
            "Kafka records read (one record may hold many events), by source topic.",
            ["topic"],
            registry=r,
        )
        self.events_invalid = Counter(
            "pipeline_events_invalid_total",
            "Events rejected by the contract or by PostgreSQL, by topic and reason code.",
            ["topic", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "pipeline_dead_letters_total",
            "Messages published to the dead-letter topic, by source topic and reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.flush_duration = Histogram(
            "pipeline_flush_duration_seconds",
            "Duration of a successful flush transaction (all attempts included).",
            ["topic"],
            buckets=_FLUSH_SECONDS,
            registry=r,
        )
        self.flush_batch_events = Histogram(
            "pipeline_flush_batch_events",
            "Valid events applied per flush.",
            ["topic"],
            buckets=_BATCH_EVENTS,
            registry=r,
        )
        self.rows_written = Counter(
            "pipeline_rows_written_total",
            "Rows inserted or updated, by table (api_usage counts upserted buckets).",
            ["table"],
            registry=r,
        )
        self.records_skipped = Counter(
            "pipeline_replayed_records_skipped_total",
            "Records below the PostgreSQL watermark, skipped as already applied.",
            ["topic"],
            registry=r,
        )
        self.duplicates_ignored = Counter(
            "pipeline_duplicate_events_ignored_total",
            "Analysis/log events whose event_id was already stored (ON CONFLICT DO NOTHING).",
            ["table"],
            registry=r,
        )
        self.offset_gaps = Counter(
            "pipeline_offset_gaps_total",
            "Times a partition's watermark pointed below the start of the log: records in "
            "between were deleted by Kafka retention before they were applied. Should stay 0.",
            ["topic"],
            registry=r,
        )
        self.flush_retries = Counter(
            "pipeline_flush_retries_total",
            "Flush attempts that failed with a retriable error and were retried.",
            ["topic", "error"],
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "pipeline_end_to_end_latency_seconds",
            "From an event's occurred_at to the commit that stored it (first event of each "
            "record).",
            ["topic"],
            buckets=_LATENCY_SECONDS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "pipeline_consumer_lag",
            "Records between the partition's high watermark and the next offset to apply.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_flush = Gauge(
            "pipeline_last_successful_flush_timestamp_seconds",
            "Unix time of the last committed flush.",
            ["topic"],
            registry=r,
        )
        self.database_available = Gauge(
            "pipeline_database_available",
            "1 while flushes succeed, 0 while PostgreSQL errors are being retried.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "pipeline_assigned_partitions",
            "Kafka partitions currently assigned to this worker.",
            registry=r,
        )
        self.broker_available = Gauge(
            "pipeline_broker_available",
            "1 while the broker answers this worker's fetches (a fetch response within the "
            "last 10 s for a partition it fetches), 0 during a broker outage.",
            registry=r,
        )
        self.partitions_stopped = Gauge(
            "pipeline_partitions_stopped",
            "Assigned partitions stopped at a record batch the client cannot decode, or at a "
            "watermark beyond the end of the log; retried periodically.",
            registry=r,
        )
        self.partitions_created = Counter(
            "pipeline_partitions_created_total",
            "PostgreSQL partitions created by maintenance or on demand.",
            ["table"],
            registry=r,
        )
        self.partitions_ahead = Gauge(
            "pipeline_partitions_ahead",
            "Partitions that exist after the current one, per table (maintenance leader).",
            ["table"],
            registry=r,
        )
        self.maintenance_last_success = Gauge(
            "pipeline_maintenance_last_success_timestamp_seconds",
            "Unix time of the last successful partition maintenance run.",
            registry=r,
        )
        self.rollups_last_success = Gauge(
            "pipeline_rollups_last_success_timestamp_seconds",
            "Unix time of the last completed rollup refresh (maintenance leader).",
            registry=r,
        )
        self.database_available.set(1)
        self.broker_available.set(1)


class AnalyticsMetrics:
    """Where analyst queries went and why (:class:`pipeline.analytics.routing.ReplicaRouter`).
    ``replica`` labels are ``host:port/database`` (never a password)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.routes = Counter(
            "pipeline_analytics_route_total",
            "Analyst queries routed, by target (replica, primary, none) and reason "
            "(healthy_replica, replica_unreachable, replica_not_in_recovery, replica_lagging, "
            "no_replicas_configured; for a fallback, the preferred replica's verdict).",
            ["target", "reason"],
            registry=r,
        )
        self.replica_lag = Gauge(
            "pipeline_analytics_replica_lag_seconds",
            "Replay lag of a read replica at its last check (0 when it has replayed up to "
            "the primary's WAL position read before the check); NaN when unknown "
            "(unreachable, not a replica, nothing replayed yet).",
            ["replica"],
            registry=r,
        )
        self.replica_healthy = Gauge(
            "pipeline_analytics_replica_healthy",
            "1 if a read replica passed its last check (reachable, in recovery, lag under "
            "ANALYTICS_MAX_LAG_S), else 0.",
            ["replica"],
            registry=r,
        )


_HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """The HTTP ingestion server's metrics (:mod:`pipeline.http`). ``status`` labels are
    HTTP status codes; ``reason`` labels are the contract's reason codes plus
    ``organization_mismatch``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pipeline_http_requests_total",
            "Requests to POST /v1/events, by response status code.",
            ["status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "pipeline_http_request_duration_seconds",
            "Time from a POST /v1/events request's arrival to its response (body read, "
            "validation and the broker's acknowledgement included).",
            buckets=_HTTP_SECONDS,
            registry=r,
        )
        self.events_accepted = Counter(
            "pipeline_http_events_accepted_total",
            "Events acknowledged by the broker (durable), by kind.",
            ["kind"],
            registry=r,
        )
        self.events_rejected = Counter(
            "pipeline_http_events_rejected_total",
            "Events rejected in a request, by reason code (the client is told; nothing is "
            "dead-lettered).",
            ["reason"],
            registry=r,
        )
        self.events_unavailable = Counter(
            "pipeline_http_events_unavailable_total",
            "Valid events not acknowledged because the broker was unavailable (503; the "
            "client is told to send them again).",
            registry=r,
        )
        self.request_bytes = Counter(
            "pipeline_http_request_bytes_total",
            "Request body bytes received by POST /v1/events, as sent (before decompression).",
            registry=r,
        )
        self.in_flight = Gauge(
            "pipeline_http_in_flight_requests",
            "POST /v1/events requests being handled.",
            registry=r,
        )
        self.broker_available = Gauge(
            "pipeline_http_broker_available",
            "1 while the Kafka broker answered within the last 10 s, else 0 (POST "
            "/v1/events then answers 503).",
            registry=r,
        )


METRIC_NAMES = frozenset(
    {
        "pipeline_events_consumed_total",
        "pipeline_records_consumed_total",
        "pipeline_events_invalid_total",
        "pipeline_dead_letters_total",
        "pipeline_flush_duration_seconds",
        "pipeline_flush_batch_events",
        "pipeline_rows_written_total",
        "pipeline_replayed_records_skipped_total",
        "pipeline_duplicate_events_ignored_total",
        "pipeline_flush_retries_total",
        "pipeline_offset_gaps_total",
        "pipeline_end_to_end_latency_seconds",
        "pipeline_consumer_lag",
        "pipeline_last_successful_flush_timestamp_seconds",
        "pipeline_database_available",
        "pipeline_broker_available",
        "pipeline_assigned_partitions",
        "pipeline_partitions_stopped",
        "pipeline_partitions_created_total",
        "pipeline_partitions_ahead",
        "pipeline_maintenance_last_success_timestamp_seconds",
        "pipeline_rollups_last_success_timestamp_seconds",
        "pipeline_analytics_route_total",
        "pipeline_analytics_replica_lag_seconds",
        "pipeline_analytics_replica_healthy",
        "pipeline_http_requests_total",
        "pipeline_http_request_duration_seconds",
        "pipeline_http_events_accepted_total",
        "pipeline_http_events_rejected_total",
        "pipeline_http_events_unavailable_total",
        "pipeline_http_request_bytes_total",
        "pipeline_http_in_flight_requests",
        "pipeline_http_broker_available",
    }
)
