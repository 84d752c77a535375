"""Every event kind is one declaration, and the declarations agree with the migrations."""

from __future__ import annotations

import math
import re

import pytest

from pipeline.config import Config, TopicsConfig
from pipeline.contract import EventKind, PerformanceMetric, validate_event
from pipeline.errors import ConfigError
from pipeline.kinds import KINDS, spec_of
from pipeline.worker import metrics_aggregate as ma
from pipeline.workload import EventFactory
from tests.conftest import SQL_DIR

NOW_MS = 1_790_000_000_000


def test_every_kind_is_declared_once_with_distinct_topics_and_settings() -> None:
    assert {spec.kind for spec in KINDS} == set(EventKind)
    assert len({spec.topic for spec in KINDS}) == len(KINDS)
    assert len({spec.topic_setting for spec in KINDS}) == len(KINDS)
    for spec in KINDS:
        assert spec_of(spec.kind) is spec
        assert spec.event.kind is spec.kind
        assert spec.topic_setting.startswith("PIPELINE_TOPIC_")


def test_every_written_table_has_a_partition_policy_in_the_migrations() -> None:
    sql = "\n".join(p.read_text() for p in sorted(SQL_DIR.glob("*.up.sql")))
    policies = set(re.findall(r"\('([a-z_]+)',\s*'[a-z_]+',\s*'(?:day|month)'", sql))
    for spec in KINDS:
        for table in spec.writer.tables:
            assert table in policies, f"{spec.kind}: no partition_policies row for {table}"


def test_topics_follow_the_declarations_and_their_settings() -> None:
    env = {spec.topic_setting: f"t-{spec.kind.value}" for spec in KINDS}
    config = Config.from_env(env)
    for spec in KINDS:
        assert config.topics.topic(spec.kind) == f"t-{spec.kind.value}"
        assert config.topics.kind_of(f"t-{spec.kind.value}") is spec.kind
        assert config.to_env()[spec.topic_setting] == f"t-{spec.kind.value}"
    defaults = TopicsConfig()
    assert [defaults.topic(s.kind) for s in KINDS] == [s.topic for s in KINDS]
    assert defaults.settings()["ingest-dlq"] == "PIPELINE_TOPIC_DEAD_LETTERS"
    with pytest.raises(ConfigError, match="distinct"):
        TopicsConfig(sources={EventKind.AUDIT: "api-calls"})


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.kind.value)
def test_every_writer_prepares_rows_from_valid_events(spec: object) -> None:
    import random

    from pipeline.kinds.spec import KindSpec

    assert isinstance(spec, KindSpec)
    factory = EventFactory(random.Random(7), NOW_MS)
    events = [validate_event(spec.kind, factory.maker(spec.kind)(), now_ms=NOW_MS)]
    prepared = spec.writer.prepare(events * 3)
    assert prepared  # rows (or row groups) to stage


def _bounds(k: int) -> tuple[float, float]:
    """(lower, upper] of 0-based bucket k, from the documented formula."""
    if k == 1:
        return 0.0, 1e-3
    return 10.0 ** (-3 + (k - 2) / 10), 10.0 ** (-3 + (k - 1) / 10)


@pytest.mark.parametrize(
    "value", [1.0005e-3, 0.0013, 0.5, 1.0, 1.0001, 7.3, 80.0, 999.9, 1e6 + 1, 9.99e8]
)
def test_metric_histogram_buckets_follow_the_documented_bounds(value: float) -> None:
    k = ma.bucket_of(value)
    low, high = _bounds(k)
    assert low < value <= high * (1 + 1e-12)


def test_metric_histogram_edges() -> None:
    assert ma.bucket_of(-5.0) == 0 and ma.bucket_of(0.0) == 0
    assert ma.bucket_of(1e-9) == 1 and ma.bucket_of(1e-3) == 1
    assert ma.bucket_of(1e9) == ma.BUCKETS - 2 and ma.bucket_of(1e12) == ma.BUCKETS - 1
    widths = [_bounds(k)[1] / _bounds(k)[0] for k in range(2, ma.BUCKETS - 1)]
    assert all(math.isclose(w, 10**0.1) for w in widths)


def test_metric_aggregation_sums_exactly_per_series_and_hour() -> None:
    def m(ms: int, value: float, tags: str = "{}") -> PerformanceMetric:
        eid = f"00000000-0000-4000-8000-{ms:012d}"
        return PerformanceMetric(eid, ms, "queue.depth", value, "1", "svc", "i-0", tags)

    hour = 3_600_000 * 500_000
    series = ma.aggregate_metrics(
        [m(hour + 1, 3.0), m(hour + 2, -1.0), m(hour + 3, 10.0), m(hour + 4, 2.0, '{"a":"b"}'),
         m(hour + 3_600_000, 5.0)]
    )  # fmt: skip
    delta = series[(hour, "queue.depth", "svc", "i-0", "1", "{}")]
    assert delta[: ma.HIST] == [3, 12.0, -1.0, 10.0]
    assert sum(delta[ma.HIST :]) == 3 and delta[ma.HIST] == 1  # -1 counted in bucket 0
    assert len(series) == 3
