"""Limits of ``pipeline http``: the per-key token bucket (pipeline.http.ratelimit) on an
injected clock, and the validation and environment round trip of HttpConfig."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import Config, HttpConfig
from pipeline.errors import ConfigError
from pipeline.http.ratelimit import RateLimiter
from tests.unit.worker_fakes import FakeClock as Clock

# --- RateLimiter ----------------------------------------------------------------------------


def test_a_new_key_has_a_full_burst() -> None:
    limiter = RateLimiter(10.0, 100, clock=Clock())
    assert limiter.take("k", 100) == 0.0
    assert limiter.take("k", 1) > 0.0


def test_the_burst_is_taken_in_several_requests() -> None:
    limiter = RateLimiter(10.0, 100, clock=Clock())
    for _ in range(4):
        assert limiter.take("k", 25) == 0.0
    assert limiter.take("k", 1) == pytest.approx(0.1)


def test_a_refusal_says_how_long_until_the_request_would_pass() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 100, clock=clock)
    assert limiter.take("k", 90) == 0.0  # 10 left
    assert limiter.take("k", 50) == pytest.approx(4.0)  # 40 missing at 10/s
    clock.advance(3.9)
    assert limiter.take("k", 50) == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.take("k", 50) == 0.0


def test_nothing_is_taken_on_refusal() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 100, clock=clock)
    assert limiter.take("k", 95) == 0.0
    for _ in range(5):  # refused requests do not drain the bucket
        assert limiter.take("k", 10) == pytest.approx(0.5)
    assert limiter.take("k", 5) == 0.0  # the 5 left are still there
    assert limiter.take("k", 1) == pytest.approx(0.1)


def test_the_bucket_refills_continuously_and_never_past_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 100, clock=clock)
    assert limiter.take("k", 100) == 0.0
    clock.advance(0.5)
    assert limiter.take("k", 5) == 0.0
    assert limiter.take("k", 1) > 0.0
    clock.advance(3_600.0)  # an hour idle: full, not 36,000 tokens
    assert limiter.take("k", 100) == 0.0
    assert limiter.take("k", 1) == pytest.approx(0.1)


def test_keys_have_separate_buckets() -> None:
    limiter = RateLimiter(10.0, 100, clock=Clock())
    assert limiter.take("a", 100) == 0.0
    assert limiter.take("a", 1) > 0.0
    assert limiter.take("b", 100) == 0.0
    assert limiter.take("c", 1) == 0.0


def test_rate_zero_is_unlimited() -> None:
    clock = Clock()
    limiter = RateLimiter(0.0, 0, clock=clock)
    for _ in range(100):
        assert limiter.take("k", 1_000_000) == 0.0


def test_no_events_take_nothing() -> None:
    limiter = RateLimiter(10.0, 100, clock=Clock())
    assert limiter.take("k", 100) == 0.0
    assert limiter.take("k", 0) == 0.0


def test_a_request_larger_than_the_burst_is_never_allowed() -> None:
    # HttpConfig refuses such settings; the limiter still answers a finite wait.
    clock = Clock()
    limiter = RateLimiter(10.0, 100, clock=clock)
    assert limiter.take("k", 150) == pytest.approx(5.0)
    clock.advance(3_600.0)
    assert limiter.take("k", 150) == pytest.approx(5.0)


def test_idle_buckets_are_dropped_and_come_back_full() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 100, clock=clock)
    for key in ("a", "b", "c"):
        assert limiter.take(key, 60) == 0.0
    clock.advance(61.0)  # past both the refill time (10 s) and the sweep period (60 s)
    assert limiter.take("d", 1) == 0.0  # a successful take sweeps
    assert set(limiter._buckets) == {"d"}
    assert limiter.take("a", 100) == 0.0


def test_recent_buckets_survive_a_sweep() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 100, clock=clock)  # 100 s to refill
    assert limiter.take("a", 100) == 0.0
    clock.advance(61.0)
    assert limiter.take("b", 1) == 0.0
    assert "a" in limiter._buckets
    assert limiter.take("a", 62) == pytest.approx(1.0)  # 61 refilled, not a full bucket


# --- HttpConfig -----------------------------------------------------------------------------


def test_the_defaults_are_valid() -> None:
    c = HttpConfig()
    assert c.rate_limit_burst_events >= c.max_events


def test_a_burst_below_max_events_is_refused() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_RATE_LIMIT_BURST_EVENTS"):
        HttpConfig(max_events=500, rate_limit_burst_events=499)
    HttpConfig(max_events=500, rate_limit_burst_events=500)


def test_any_burst_is_allowed_without_a_rate_limit() -> None:
    HttpConfig(max_events=500, rate_limit_burst_events=0, rate_limit_events_per_s=0)


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_RATE_LIMIT_EVENTS_PER_S"):
        HttpConfig(rate_limit_events_per_s=-1.0)


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_a_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_PORT"):
        HttpConfig(port=port)


@pytest.mark.parametrize("port", [0, 1, 8080, 65535])
def test_a_port_in_range_is_allowed(port: int) -> None:
    assert HttpConfig(port=port).port == port


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"max_body_bytes": 1023}, "PIPELINE_HTTP_MAX_BODY_BYTES"),
        ({"max_events": 0}, "PIPELINE_HTTP_MAX_EVENTS"),
        ({"request_timeout_s": 0.0}, "PIPELINE_HTTP_REQUEST_TIMEOUT_S"),
        ({"publish_timeout_s": -1.0}, "PIPELINE_HTTP_PUBLISH_TIMEOUT_S"),
        ({"key_cache_ttl_s": 0.0}, "PIPELINE_HTTP_KEY_CACHE_TTL_S"),
        ({"keepalive_timeout_s": 0.0}, "PIPELINE_HTTP_KEEPALIVE_TIMEOUT_S"),
        ({"shutdown_timeout_s": 0.0}, "PIPELINE_HTTP_SHUTDOWN_TIMEOUT_S"),
    ],
)
def test_other_out_of_range_settings_name_their_variable(
    changes: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        HttpConfig(**changes)  # type: ignore[arg-type]


def test_the_environment_round_trip_of_the_defaults() -> None:
    again = Config.from_env(Config().to_env())
    assert again.http == HttpConfig()
    assert again.http == Config().http


def test_the_environment_round_trip_of_other_settings() -> None:
    http = HttpConfig(
        host="127.0.0.1",
        port=0,
        max_body_bytes=2048,
        max_events=7,
        request_timeout_s=1.5,
        publish_timeout_s=0.05,
        rate_limit_events_per_s=0.0,
        rate_limit_burst_events=3,
        key_cache_ttl_s=0.25,
        keepalive_timeout_s=2.0,
        shutdown_timeout_s=4.5,
    )
    config = Config(http=http)
    again = Config.from_env(config.to_env())
    assert again.http == http
    for f in dataclasses.fields(HttpConfig):
        assert getattr(again.http, f.name) == getattr(http, f.name), f.name
    assert set(http.to_env()) <= set(config.to_env())
    assert len(http.to_env()) == len(dataclasses.fields(HttpConfig))


def test_from_env_reads_the_http_variables() -> None:
    config = Config.from_env({"PIPELINE_HTTP_PORT": "9090", "PIPELINE_HTTP_MAX_EVENTS": "10"})
    assert config.http.port == 9090
    assert config.http.max_events == 10
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_PORT"):
        Config.from_env({"PIPELINE_HTTP_PORT": "eighty"})
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_RATE_LIMIT_BURST_EVENTS"):
        Config.from_env({"PIPELINE_HTTP_MAX_EVENTS": "20000"})


@pytest.mark.parametrize("ttl", [0.0, 301.0])
def test_the_key_cache_ttl_stays_short(ttl: float) -> None:
    with pytest.raises(ConfigError, match="PIPELINE_HTTP_KEY_CACHE_TTL_S"):
        HttpConfig(key_cache_ttl_s=ttl)
