"""Analyst queries at scale: load ~90 days of data, build the rollups, time every documented
query and function, and save their plans.

Run from the repository root::

    python -m bench.analysts                          # full size: 10M analyses, ~2.4M buckets
    python -m bench.analysts --ai-rows 200000 --api-calls-per-day 2000   # small, minutes

By default it starts an embedded PostgreSQL 16 in a temporary directory (removed at the
end unless ``--keep``); ``--database-url`` uses an existing server instead (the database
must be empty or hold a previous run, see ``--skip-load``).

The loader generates rows on the server (``INSERT ... SELECT`` over ``generate_series``),
one statement per day and table, through the partitioned parents like the workers (so the
rollup-queue triggers fire): API calls are simulated one by one with the standard
workload's distributions (``/work/shared/workloads.md``: 5 services 40/25/15/12/8 %, 10
endpoints each, GET/POST/PUT/DELETE 60/30/6/4 %, 10,000 Zipf-like users (s = 1.1) in 200
organizations, 5 % anonymous, 98 % success, lognormal response times median 80 ms) and
aggregated into hourly buckets exactly as a worker flush does; analyses use 6 skewed
models with their per-1k-token prices, completed/failed/fallback 95/3/2 %, lognormal
processing time median 900 ms, exponential queue wait mean 200 ms, 20 % cached, 10 %
batched, 4 regions.

It prints figures and asserts nothing: load and rollup build times, table sizes, the cost
of an incremental refresh after a worker-like flush with late events, and p50/p95 of every
query with the partitions each one actually scanned (and whether by index). The full plans
(EXPLAIN ANALYZE, BUFFERS) go to ``--plans``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench._machine import machine
from pipeline.config import default_sql_dir
from pipeline.embedded import EmbeddedPostgres
from pipeline.kinds.api_call import additive_set
from pipeline.maintenance.rollups import refresh_rollups
from pipeline.migrations.runner import MigrationRunner
from pipeline.workload import spec

log = logging.getLogger(__name__)

DAY = timedelta(days=1)

_MODELS_SQL = ", ".join(
    f"('{name}', {price}, '{versions[0]}', '{versions[1]}', {weight})"
    for name, weight, price, versions in spec.MODELS
)

# Per day: one analysis row per generate_series value, shaped exactly like a worker insert.
LOAD_AI = f"""
WITH models AS MATERIALIZED (
    SELECT m.*, (sum(m.weight) OVER (ORDER BY m.weight DESC, m.name) - m.weight) / 100.0 AS lo,
           sum(m.weight) OVER (ORDER BY m.weight DESC, m.name) / 100.0 AS hi
    FROM (VALUES {_MODELS_SQL}) AS m(name, price_e8, v1, v2, weight)
), r AS MATERIALIZED (
    SELECT g, $1::timestamptz + random() * interval '24 hours' AS created_at,
           floor(pow(1 - (1 - pow({spec.USERS}, 1 - {spec.ZIPF_S})) * random(),
                     1 / (1 - {spec.ZIPF_S})))::int - 1 AS u,
           random() AS rm, random() AS rs, random() AS rv,
           100 + floor(random() * 3901)::int AS rq, 50 + floor(random() * 1951)::int AS rp,
           round((exp(ln({spec.PROCESSING_MEDIAN_MS}) + {spec.PROCESSING_SIGMA}
                 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())))::numeric, 3)::float8
               AS pt,
           round((-{spec.QUEUE_WAIT_MEAN_MS} * ln(1 - random()))::numeric, 3)::float8 AS qw,
           random() < {spec.CACHING_RATE} AS caching, random() < {spec.BATCH_RATE} AS batch,
           floor(random() * 4)::int AS region, floor(random() * 4)::int AS err,
           floor(random() * 4)::int AS src
    FROM generate_series(1, $2) AS g
)
INSERT INTO ai_analysis (
    created_at, event_id, ingested_at, user_id, organization_id, entry_id, status, model_type,
    model_version, analysis_version, request_tokens, response_tokens, tokens_used, api_cost,
    processing_time_ms, queue_wait_time_ms, total_processing_time_ms, caching_used,
    batch_processed, region_processed, processing_attempts, fallback_used, error_type,
    metadata)
SELECT r.created_at, gen_random_uuid(), r.created_at + interval '2 seconds',
       'user-' || lpad(r.u::text, 5, '0'),
       'org-' || lpad((r.u * 7919 % {spec.ORGANIZATIONS})::text, 3, '0'),
       'entry-' || $3::bigint + r.g, st.status, m.name,
       CASE WHEN r.rv < 0.5 THEN m.v1 ELSE m.v2 END,
       CASE WHEN r.src < 2 THEN '1.4.0' ELSE '1.5.0' END,
       r.rq, r.rp, r.rq + r.rp, ((r.rq + r.rp)::bigint * m.price_e8 + 500) / 1000 * 0.00000001,
       r.pt, r.qw, r.pt + r.qw, r.caching, r.batch,
       (ARRAY{list(spec.REGIONS)!r})[r.region + 1],
       CASE WHEN st.status = 'completed' THEN 1 ELSE 2 END, st.status = 'fallback',
       CASE WHEN st.status = 'failed' THEN (ARRAY{list(spec.ERROR_TYPES)!r})[r.err + 1] END,
       jsonb_build_object('source', (ARRAY['web', 'mobile', 'api', 'batch'])[r.src + 1],
                          'locale', 'en', 'prompt_chars', r.rq * 4)
FROM r
JOIN models m ON r.rm >= m.lo AND r.rm < m.hi
CROSS JOIN LATERAL (SELECT CASE WHEN r.rs < 0.95 THEN 'completed'
                                WHEN r.rs < 0.98 THEN 'failed' ELSE 'fallback' END AS status) st
"""

_ENDPOINTS = [e for s in spec.SERVICES for e in spec.ENDPOINTS[s]]

# Per day: simulate API calls one by one, then aggregate them into hourly buckets and add
# them with the workers' additive upsert (same sums, max and histogram counts).
LOAD_API = f"""
WITH calls AS MATERIALIZED (
    SELECT $1::timestamptz + floor(random() * 24) * interval '1 hour' AS time_window,
           random() AS rsvc, floor(random() * 10)::int AS ep, random() AS rmeth,
           CASE WHEN random() < {spec.ANONYMOUS_RATE} THEN -1
                ELSE floor(pow(1 - (1 - pow({spec.USERS}, 1 - {spec.ZIPF_S})) * random(),
                               1 / (1 - {spec.ZIPF_S})))::int - 1 END AS u,
           random() < {spec.SUCCESS_RATE} AS ok,
           least({spec.RESPONSE_CAP_MS}, round((exp(ln({spec.RESPONSE_MEDIAN_MS})
                 + {spec.RESPONSE_SIGMA} * sqrt(-2 * ln(1 - random()))
                 * cos(2 * pi() * random())))::numeric, 3)::float8) AS rt,
           CASE WHEN random() < {spec.ZERO_TOKENS_RATE} THEN 0
                ELSE 1 + floor(random() * {spec.MAX_TOKENS})::int END AS tokens
    FROM generate_series(1, $2)
), shaped AS (
    SELECT c.time_window, s.idx AS svc, c.ep, c.u, c.ok, c.rt, c.tokens,
           CASE WHEN c.rmeth < 0.6 THEN 'GET' WHEN c.rmeth < 0.9 THEN 'POST'
                WHEN c.rmeth < 0.96 THEN 'PUT' ELSE 'DELETE' END AS method
    FROM calls c
    CROSS JOIN LATERAL (SELECT CASE WHEN c.rsvc < 0.40 THEN 0 WHEN c.rsvc < 0.65 THEN 1
                                    WHEN c.rsvc < 0.80 THEN 2 WHEN c.rsvc < 0.92 THEN 3
                                    ELSE 4 END AS idx) s
)
INSERT INTO api_usage (
    time_window, service, endpoint, method, user_id, organization_id, request_count,
    success_count, error_count, token_usage, cost, response_time_ms_sum, response_time_ms_max,
    latency_le_50, latency_le_100, latency_le_250, latency_le_500, latency_le_1000,
    latency_le_2500, latency_le_5000, latency_gt_5000, updated_at)
SELECT time_window, ($3::text[])[svc + 1], ($4::text[])[svc * 10 + ep + 1], method,
       CASE WHEN u < 0 THEN '' ELSE 'user-' || lpad(u::text, 5, '0') END,
       CASE WHEN u < 0 THEN ''
            ELSE 'org-' || lpad((u * 7919 % {spec.ORGANIZATIONS})::text, 3, '0') END,
       count(*), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok), sum(tokens),
       sum(tokens) * 0.000002, sum(rt), max(rt),
       count(*) FILTER (WHERE rt <= 50), count(*) FILTER (WHERE rt > 50 AND rt <= 100),
       count(*) FILTER (WHERE rt > 100 AND rt <= 250),
       count(*) FILTER (WHERE rt > 250 AND rt <= 500),
       count(*) FILTER (WHERE rt > 500 AND rt <= 1000),
       count(*) FILTER (WHERE rt > 1000 AND rt <= 2500),
       count(*) FILTER (WHERE rt > 2500 AND rt <= 5000), count(*) FILTER (WHERE rt > 5000),
       time_window + interval '1 hour'
FROM shaped
GROUP BY time_window, svc, ep, method, u
ON CONFLICT (time_window, service, endpoint, method, user_id, organization_id) DO UPDATE SET
    {additive_set("api_usage")}
"""


@dataclass(frozen=True)
class Query:
    """One analyst query: ``dashboard`` ones have the 50 ms p95 target."""

    name: str
    sql: str
    args: tuple[Any, ...]
    dashboard: bool
    organization: str | None = None  # run as pipeline_analyst bound to it (RLS)


def queries(now: datetime) -> list[Query]:
    """Every documented analyst query and function, over realistic ranges ending now."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    d1, d7, d30 = now - DAY, now - 7 * DAY, now - 30 * DAY
    month_start = (today.replace(day=1) - DAY).replace(day=1)
    month_end = today.replace(day=1)
    top, mid, org = "user-00000", "user-00420", "org-000"
    q = [
        Query("user_ai_cost top user 30d", "SELECT * FROM user_ai_cost($1, $2, $3)",
              (top, d30, now), True),
        Query("user_ai_cost median user 30d", "SELECT * FROM user_ai_cost($1, $2, $3)",
              (mid, d30, now), True),
        Query("organization_ai_usage 30d", "SELECT * FROM organization_ai_usage($1, $2, $3)",
              (org, d30, now), True),
        Query("organization_ai_usage last month",
              "SELECT * FROM organization_ai_usage($1, $2, $3)",
              (org, month_start, month_end), True),
        Query("ai_cost_by_model 24h", "SELECT * FROM ai_cost_by_model($1, $2)", (d1, now), True),
        Query("ai_cost_by_model 7d", "SELECT * FROM ai_cost_by_model($1, $2)", (d7, now), True),
        Query("ai_cost_by_model 30d", "SELECT * FROM ai_cost_by_model($1, $2)", (d30, now), False),
        Query("ai_cost_by_model org 30d", "SELECT * FROM ai_cost_by_model($1, $2, $3)",
              (d30, now, org), True),
        Query("top_users_by_ai_cost 24h", "SELECT * FROM top_users_by_ai_cost($1, $2, 10)",
              (d1, now), True),
        Query("top_users_by_ai_cost 7d", "SELECT * FROM top_users_by_ai_cost($1, $2, 10)",
              (d7, now), True),
        Query("top_users_by_ai_cost 30d", "SELECT * FROM top_users_by_ai_cost($1, $2, 10)",
              (d30, now), True),
        Query("top_users_by_ai_cost org 30d",
              "SELECT * FROM top_users_by_ai_cost($1, $2, 10, $3)", (d30, now, org), True),
        Query("ai_cache_hit_rate 7d", "SELECT * FROM ai_cache_hit_rate($1, $2)", (d7, now), True),
        Query("service_error_rates 24h", "SELECT * FROM service_error_rates($1, $2)",
              (d1, now), True),
        Query("service_error_rates 7d", "SELECT * FROM service_error_rates($1, $2)",
              (d7, now), True),
        Query("service_error_rates 30d", "SELECT * FROM service_error_rates($1, $2)",
              (d30, now), False),
        Query("service_error_rates org 30d", "SELECT * FROM service_error_rates($1, $2, $3)",
              (d30, now, org), True),
        Query("organization_api_usage 30d",
              "SELECT * FROM organization_api_usage($1, $2, $3)", (org, d30, now), True),
        Query("api_usage_by_service_hour 24h",
              "SELECT * FROM api_usage_by_service_hour($1, $2)", (d1, now), True),
        Query("organization_usage_summary 24h",
              "SELECT * FROM organization_usage_summary($1, $2)", (d1, now), True),
        Query("organization_usage_summary 7d",
              "SELECT * FROM organization_usage_summary($1, $2)", (d7, now), True),
        Query("organization_usage_summary 30d",
              "SELECT * FROM organization_usage_summary($1, $2)", (d30, now), True),
        Query("api_usage_daily_stats user 30d",
              "SELECT time_window, service, sum(request_count) FROM api_usage_daily_stats "
              "WHERE user_id = $1 AND time_window >= $2 AND time_window < $3 GROUP BY 1, 2",
              (top, d30, now), True),
        Query("analyst: organization_ai_usage 30d",
              "SELECT * FROM organization_ai_usage($1, $2, $3)", (org, d30, now), True, org),
        Query("analyst: service_error_rates 30d", "SELECT * FROM service_error_rates($1, $2)",
              (d30, now), True, org),
        Query("analyst: top_users_by_ai_cost 30d",
              "SELECT * FROM top_users_by_ai_cost($1, $2, 10)", (d30, now), True, org),
        Query("analyst: organization_usage_summary 30d",
              "SELECT * FROM organization_usage_summary($1, $2)", (d30, now), True, org),
    ]  # fmt: skip
    return q


async def load(
    conn: Any, *, days: int, ai_rows: int, api_calls_per_day: int, end: datetime
) -> None:
    """Create partitions and generate ``days`` days of data ending at ``end`` (exclusive)."""
    start = end - days * DAY
    await conn.execute("SET work_mem = '256MB'")
    await conn.execute("SET maintenance_work_mem = '1GB'")
    await conn.execute("SET synchronous_commit = off")
    for table in ("api_usage", "ai_analysis"):
        day = start
        while day < end + 2 * DAY:
            await conn.execute("SELECT ensure_partition($1, $2)", table, day)
            day += DAY
    await conn.execute("SELECT ensure_partitions()")
    per_day = ai_rows // days
    started = time.perf_counter()
    for i in range(days):
        day = start + i * DAY
        t0 = time.perf_counter()
        await conn.execute(LOAD_API, day, api_calls_per_day, list(spec.SERVICES), _ENDPOINTS)
        t1 = time.perf_counter()
        rows = per_day + (ai_rows - per_day * days if i == days - 1 else 0)
        await conn.execute(LOAD_AI, day, rows, i * per_day)
        t2 = time.perf_counter()
        if i % 10 == 0 or i == days - 1:
            print(
                f"  loaded day {i + 1}/{days} ({day:%Y-%m-%d}): api {t1 - t0:.1f}s, "
                f"ai {t2 - t1:.1f}s, elapsed {t2 - started:.0f}s",
                flush=True,
            )
    await conn.execute("RESET work_mem")
    await conn.execute("RESET maintenance_work_mem")
    await conn.execute("RESET synchronous_commit")


async def table_sizes(conn: Any) -> list[tuple[str, int, int]]:
    rows = await conn.fetch(
        "SELECT p.parent_table, sum(p.estimated_rows)::bigint AS rows, "
        "sum(p.total_bytes)::bigint AS bytes FROM partition_ranges p GROUP BY 1 ORDER BY 1"
    )
    return [(r["parent_table"], r["rows"], r["bytes"]) for r in rows]


async def time_queries(
    conn: Any, items: Sequence[Query], repeat: int, plans: Path
) -> list[tuple[Query, float, float, int, str]]:
    """Run each query ``repeat`` times (after one warm-up); return p50/p95 (ms), rows and a
    plan summary; write every plan to ``plans``."""
    results = []
    with plans.open("w") as out:
        for item in items:
            await _bind(conn, item.organization)
            rows = await conn.fetch(item.sql, *item.args)  # warm-up
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                await conn.fetch(item.sql, *item.args)
                samples.append((time.perf_counter() - t0) * 1000)
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, SETTINGS) " + item.sql, *item.args)
            text = "\n".join(r[0] for r in plan)
            await _bind(conn, None)
            out.write(f"=== {item.name}\n{item.sql}\nargs: {item.args!r}\n{text}\n\n")
            samples.sort()
            p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
            results.append((item, statistics.median(samples), p95, len(rows), _summary(text)))
    return results


async def _bind(conn: Any, organization: str | None) -> None:
    if organization is None:
        await conn.execute("RESET ROLE; RESET app.organization_id")
        return
    await conn.execute(
        "INSERT INTO analyst_scopes VALUES ('pipeline_analyst', $1) ON CONFLICT DO NOTHING",
        organization,
    )
    await conn.execute("SET ROLE pipeline_analyst")
    await conn.fetchval("SELECT set_analyst_organization($1)", organization)


def _summary(plan: str) -> str:
    """Per table, how many partitions were actually scanned and how (index or seq), from
    an EXPLAIN ANALYZE text; pruned partitions do not appear or say "never executed"."""
    scans: dict[str, dict[str, set[str]]] = {}
    for line in plan.splitlines():
        if (
            "never executed" in line
            or "Bitmap Index Scan" in line
            or not any(
                kind in line
                for kind in ("Seq Scan on", "Index Scan", "Index Only Scan", "Heap Scan")
            )
        ):
            continue
        words = line.split()
        relation = words[words.index("on") + 1]
        parent, _, suffix = relation.rpartition("_p")
        if not (parent and suffix.isdigit()):
            parent = relation
        kind = "seq" if "Seq Scan" in line else "idx"
        scans.setdefault(parent, {}).setdefault(kind, set()).add(relation)
    parts = []
    for parent, kinds in sorted(scans.items()):
        count = len(set().union(*kinds.values()))
        parts.append(f"{parent} {count}p {'+'.join(sorted(kinds))}")
    return "; ".join(parts)


async def incremental(conn: Any, now: datetime, rounds: int) -> list[tuple[float, int]]:
    """A worker-like flush (current hour plus a few late events), then a refresh: the
    refresh's duration and rows written, per round."""
    results = []
    hour = now.replace(minute=0, second=0, microsecond=0)
    for i in range(rounds):
        late_day = now - (3 + i) * DAY
        await conn.execute(LOAD_API.replace("floor(random() * 24)", "0"), hour, 2000,
                           list(spec.SERVICES), _ENDPOINTS)  # fmt: skip
        await conn.execute(LOAD_API, late_day.replace(hour=0, minute=0, second=0,
                           microsecond=0), 20, list(spec.SERVICES), _ENDPOINTS)  # fmt: skip
        await conn.execute(LOAD_AI.replace("random() * interval '24 hours'", "interval '0'"),
                           hour, 500, 10**9 + i * 1000)  # fmt: skip
        await conn.execute(LOAD_AI, late_day, 10, 2 * 10**9 + i * 1000)
        t0 = time.perf_counter()
        report = await refresh_rollups(conn, days_per_batch=7)
        results.append(((time.perf_counter() - t0) * 1000, report.rows))
    return results


async def run(args: argparse.Namespace, url: str) -> None:
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
    try:
        print(f"PostgreSQL: {await conn.fetchval('SHOW server_version')}; "
              f"shared_buffers {await conn.fetchval('SHOW shared_buffers')}, "
              f"work_mem {await conn.fetchval('SHOW work_mem')}")  # fmt: skip
        now = await conn.fetchval("SELECT now()")
        if args.skip_load:
            # A database loaded by an older checkout: bring its schema up to this one.
            t0 = time.perf_counter()
            applied = await MigrationRunner(conn, default_sql_dir(), applied_by="bench").up()
            if applied:
                await conn.execute("VACUUM (ANALYZE)")
                print(f"migrations {', '.join(str(m.version) for m in applied)} applied, "
                      f"vacuum analyze: {time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip
        else:
            await MigrationRunner(conn, default_sql_dir(), applied_by="bench").up()
            end = now.replace(hour=0, minute=0, second=0, microsecond=0) + DAY
            print(f"loading {args.days} days ending {end:%Y-%m-%d} ...", flush=True)
            t0 = time.perf_counter()
            await load(conn, days=args.days, ai_rows=args.ai_rows,
                       api_calls_per_day=args.api_calls_per_day, end=end)  # fmt: skip
            print(f"load: {time.perf_counter() - t0:.0f}s", flush=True)
            t0 = time.perf_counter()
            report = await refresh_rollups(conn, days_per_batch=args.days_per_batch)
            print(f"initial rollup build: {time.perf_counter() - t0:.0f}s, "
                  f"{report.rows} rows", flush=True)  # fmt: skip
            t0 = time.perf_counter()
            await conn.execute("VACUUM (ANALYZE)")
            print(f"vacuum analyze: {time.perf_counter() - t0:.0f}s", flush=True)
        print("\ntable                rows (est.)        size")
        for table, rows, size in await table_sizes(conn):
            print(f"{table:20} {rows:>12,} {size / 2**20:>9.0f} MiB")
        print("\nincremental refresh after a worker-like flush (2000 calls + 500 analyses in "
              "the current hour, 20 + 10 late ones days ago):")  # fmt: skip
        for ms, rows in await incremental(conn, now, args.refresh_rounds):
            print(f"  refresh {ms:.0f} ms, {rows} rollup rows rewritten")
        await conn.execute("ANALYZE rollup_pending")
        print(f"\nqueries ({args.repeat} runs each after a warm-up; plans in {args.plans}):")
        print(f"{'query':44} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}  target  "
          "partitions scanned per table (Np) and how")  # fmt: skip
        results = await time_queries(conn, queries(now), args.repeat, args.plans)
        for item, p50, p95, nrows, summary in results:
            target = ("ok" if p95 < 50 else "MISS") if item.dashboard else "-"
            print(f"{item.name:44} {p50:8.1f} {p95:8.1f} {nrows:6}  {target:6}  {summary}")
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.analysts", description=__doc__)
    parser.add_argument("--database-url", help="use this server (default: embedded, temporary)")
    parser.add_argument("--data-dir", type=Path, help="embedded server data dir (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the embedded data dir")
    parser.add_argument("--days", type=int, default=90, help="days of data (default 90)")
    parser.add_argument("--ai-rows", type=int, default=10_000_000, help="ai_analysis rows")
    parser.add_argument(
        "--api-calls-per-day",
        type=int,
        default=30_000,
        help="simulated API calls per day, aggregated into buckets (default 30000: ~2.4M "
        "buckets over 90 days)",
    )
    parser.add_argument("--days-per-batch", type=int, default=7, help="rollup batch size")
    parser.add_argument("--repeat", type=int, default=20, help="runs per query")
    parser.add_argument("--refresh-rounds", type=int, default=3, help="incremental rounds")
    parser.add_argument(
        "--plans",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench-analysts-plans.txt",
        help="where to write every query's EXPLAIN (ANALYZE, BUFFERS) (default: %(default)s)",
    )
    parser.add_argument("--skip-load", action="store_true", help="reuse the loaded database")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(machine())
    if args.database_url:
        asyncio.run(run(args, args.database_url))
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-analysts-"))
    server = EmbeddedPostgres(data_dir / "pg", database="analysts")
    server.start()
    try:
        asyncio.run(run(args, server.url))
    finally:
        server.stop()
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
