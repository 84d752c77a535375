"""Every metric is registered in the injected registry and listed in METRIC_NAMES."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.metrics import METRIC_NAMES, AnalyticsMetrics, HttpMetrics, Metrics


def test_metric_names_match_the_registry() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    AnalyticsMetrics(registry)
    HttpMetrics(registry)
    registered = {m.name for m in registry.collect()}
    # prometheus_client strips _total from counter family names.
    normalised = {n[: -len("_total")] if n.endswith("_total") else n for n in METRIC_NAMES}
    assert registered == normalised


def test_two_instances_do_not_share_counters() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.events_consumed.labels("t").inc(3)
    assert b.events_consumed.labels("t")._value.get() == 0
