"""``pipeline demo``: the whole pipeline on embedded services, in one command.

Starts a Tansu broker and a PostgreSQL 16 from the installed wheels, migrates, creates the
topics and partitions, starts worker processes, runs the load generator (the standard
workload) with a progress bar, waits until PostgreSQL's watermark covers every record the
broker acknowledged, prints what an analyst looks at first, and verifies PostgreSQL
against the generator's exact totals (exit 1 if they differ). Everything it started is
stopped on exit, Ctrl-C included; ``--keep`` leaves the stack running for exploration.

The demo uses its own services only: KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL are not
used (it says so when they are set). "The broker is down" means its embedded broker
stopped (killed, crashed) or would not start: every step that needs the broker runs under
a watch (:mod:`pipeline.cli._brokerwatch`) that checks it still accepts connections; once
it has not for three seconds the step is abandoned, the workers and PostgreSQL are stopped,
and the demo exits 1 with one line on stderr naming the step and a copy of the broker's log
(the temporary directory it lived in is deleted). That takes well under 30 seconds; it
never waits out the 15-minute apply timeout. aiokafka's own log lines (several per second
while a broker is gone) stay off stderr unless ``--log-level INFO`` or ``DEBUG``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pipeline import db
from pipeline.cli._brokerwatch import PROBE_EVERY_S, BrokerWatch
from pipeline.cli._common import format_table, operator_name
from pipeline.cli._progress import Progress
from pipeline.config import Config, DatabaseConfig, KafkaConfig, WorkerConfig
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from pipeline.kafka import ensure_topics
from pipeline.launch import WorkerProcess
from pipeline.logs import quiet_client_logs
from pipeline.maintenance import partitions
from pipeline.migrations.runner import MigrationRunner
from pipeline.producer import produce_workload
from pipeline.verify import totals_from_database, wait_for_watermarks
from pipeline.workload import WorkloadSpec

DEMO_GROUP = "demo"

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long each worker gets to stop once the broker is gone before it is killed (they
# exit in about 2 s; a kill loses nothing).
_WORKER_STOP_S = 10.0
_WORKERS_READY_S = 120.0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the whole pipeline on embedded Kafka and PostgreSQL (no Docker needed)",
        description=(
            "Start an embedded Tansu broker and PostgreSQL 16, migrate, start worker "
            "processes, produce the standard workload, wait until PostgreSQL has applied "
            "every record, print usage and cost, and verify PostgreSQL against the "
            "generator's exact totals (exit 1 on a mismatch). Stops everything on exit."
        ),
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="API-call events to produce, plus 1 analysis per 10, 1 log and 1 metric per 20 "
        "and 1 audit event per 100 (default: 1,000,000, about a minute on 2 cores)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument(
        "--shape",
        choices=["batched", "single"],
        default="batched",
        help="records of up to 500 events, or one event per record (default: batched)",
    )
    parser.add_argument(
        "--invalid-fraction",
        type=float,
        default=0.001,
        help="poison records mixed in, to see the dead-letter topic at work (default: 0.001)",
    )
    parser.add_argument("--seed", type=int, default=42, help="workload seed (default: 42)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=8,
        help="partitions per topic: the most workers a group can use (default: 8)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the services and workers running until Ctrl-C and print how to connect",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="PostgreSQL data directory to use and keep (default: a temporary directory)",
    )
    parser.set_defaults(handler=run)


def _step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s{': ' + detail if detail else ''}")


def run(args: argparse.Namespace, config: Config) -> int:
    # SIGTERM (`timeout`, `kill`, a supervisor) stops the demo like Ctrl-C: everything it
    # started is stopped, instead of the broker and PostgreSQL being left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.workers < 1 or args.workers > args.partitions:
        print(f"--workers must be between 1 and --partitions ({args.partitions})")
        return 2
    ignored = [name for name, value in (
        ("KAFKA_BOOTSTRAP_SERVERS", config.kafka), ("DATABASE_URL", config.database),
    ) if value is not None]  # fmt: skip
    if ignored:
        verb = "is" if len(ignored) == 1 else "are"
        print(f"note: the demo runs its own broker and PostgreSQL; {' and '.join(ignored)} "
              f"from the environment {verb} not used")  # fmt: skip
    workers: list[WorkerProcess] = []
    ok = False
    with (
        quiet_client_logs(args.log_level),
        tempfile.TemporaryDirectory(prefix="pipeline-demo-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        data_dir = args.data_dir or tmp / "postgres"
        t = _step(f"starting PostgreSQL 16 (data in {data_dir})")
        with EmbeddedPostgres(data_dir) as pg:
            _done(t)
            t = _step("starting the Tansu Kafka broker")
            watch = BrokerWatch(EmbeddedBroker(log_path=tmp / "broker.log"), tmp / "broker.log")
            try:
                watch.start()
                _done(t, watch.broker.bootstrap_servers)
                stack = replace(
                    config,
                    database=DatabaseConfig(url=pg.url),
                    kafka=watch.broker.kafka_config(),
                    worker=WorkerConfig(group_id=DEMO_GROUP),
                )
                try:
                    ok = _run_stack(args, stack, workers, tmp, watch)
                    if args.keep:
                        _wait_for_interrupt(pg.url, watch, workers)
                finally:
                    if workers:
                        print("==> stopping the workers", flush=True)
                        for worker in workers:
                            worker.signal(15)
                        for worker in workers:
                            worker.stop(_WORKER_STOP_S if watch.gone else None)
            finally:
                watch.broker.stop()
                print("==> stopping the broker and PostgreSQL", flush=True)
    return 0 if ok else 1


def _run_stack(
    args: argparse.Namespace,
    config: Config,
    workers: list[WorkerProcess],
    tmp: Path,
    watch: BrokerWatch,
) -> bool:
    database, kafka = config.require_database(), config.require_kafka()
    asyncio.run(_prepare(config, database, kafka, args.partitions, watch))
    t = _step(f"starting {args.workers} worker processes (group {DEMO_GROUP!r})")
    for n in range(1, args.workers + 1):
        worker = WorkerProcess(
            config, worker_id=f"worker-{n}", web_port=free_port(), log_path=tmp / f"w{n}.log"
        )
        worker.start()
        workers.append(worker)
    if not _wait_ready(workers, watch):
        return False
    _done(t, ", ".join(f"{w.worker_id} on :{w.web_port}/metrics" for w in workers))
    return asyncio.run(_produce_and_verify(args, config, database, kafka, watch))


def _wait_ready(workers: list[WorkerProcess], watch: BrokerWatch) -> bool:
    """Wait until every worker is ready (False, with its log, if one is not within
    ``_WORKERS_READY_S`` or exits); raise if the broker stops meanwhile."""
    deadline = time.monotonic() + _WORKERS_READY_S
    pending = list(workers)
    while pending:
        for worker in list(pending):
            if worker.ready():
                pending.remove(worker)
            elif not worker.running or time.monotonic() > deadline:
                print(f"worker {worker.worker_id} did not become ready:\n{worker.log_tail(30)}")
                return False
        if pending:
            watch.check("starting the workers")
            time.sleep(0.2)
    return True


async def _prepare(
    config: Config, database: DatabaseConfig, kafka: KafkaConfig, n: int, watch: BrokerWatch
) -> None:
    t = _step("creating topics")
    topics = config.topics
    names = [*topics.source_topics, topics.dead_letters]
    created = await watch.guard("creating topics", ensure_topics(kafka, names, partitions=n))
    _done(t, f"{', '.join(created) or 'all existed'} ({n} partitions each)")
    conn = await db.connect(database, application_name="pipeline-demo")
    try:
        t = _step("applying migrations")
        runner = MigrationRunner(
            conn,
            config.migrations.directory,
            applied_by=operator_name(),
            lock_timeout_s=config.migrations.lock_timeout_s,
            report=lambda line: print(f"    {line}"),
        )
        await runner.up()
        _done(t)
        t = _step("creating partitions around now")
        results = await partitions.ensure(conn)
        _done(t, f"{sum(r.created for r in results)} created")
    finally:
        await conn.close()


async def _produce_and_verify(
    args: argparse.Namespace,
    config: Config,
    database: DatabaseConfig,
    kafka: KafkaConfig,
    watch: BrokerWatch,
) -> bool:
    spec = WorkloadSpec(
        api_calls=args.events,
        start_ms=int(time.time() * 1000),
        seed=args.seed,
        invalid_fraction=args.invalid_fraction,
    )
    print(f"==> producing the standard workload: {spec.total_items:,} items ({args.shape})")
    with Progress(spec.total_items, label="producing", unit="events") as bar:
        report = await watch.guard(
            "producing the workload",
            produce_workload(kafka, config.topics, spec, shape=args.shape, progress=bar.update),
        )
    print(
        f"    {report.items:,} items in {report.record_count:,} records in "
        f"{report.elapsed_s:.1f}s ({report.items_per_s:,.0f} events/s)"
    )
    conn = await db.connect(database, application_name="pipeline-demo")
    try:
        started = time.perf_counter()
        print("==> waiting until PostgreSQL has applied every record")
        with Progress(report.record_count, label="applying", unit="records") as bar:
            done = await watch.guard(
                "waiting for the workers to apply the workload",
                wait_for_watermarks(
                    conn, DEMO_GROUP, report.acked_offsets, timeout_s=900, progress=bar.update
                ),
            )
        if not done:
            print("    the workers did not apply everything within 15 minutes")
            return False
        seconds = time.perf_counter() - started
        print(f"    applied in {seconds:.1f}s after the last record was acknowledged")
        await _print_report(conn)
        actual = await totals_from_database(conn)
    finally:
        await conn.close()
    differences = report.totals.compare(actual, include_invalid=False)
    poison = sum(report.poison.values())
    if differences:
        print(f"verification: FAILED, {len(differences)} differences:")
        for line in differences[:20]:
            print(f"  {line}")
        return False
    print(
        f"verification: OK, PostgreSQL holds exactly what the generator produced: "
        f"{report.totals.api_requests:,} API calls in {len(actual.api):,} service-hours, "
        f"cost ${actual.api_cost_usd}, {actual.analyses:,} analyses in "
        f"{actual.analysis_rows:,} state changes (${actual.analysis_cost_usd}), "
        f"{actual.system_log_rows:,} log events, {actual.metric_samples:,} metric samples in "
        f"{len(actual.metrics):,} series-hours, {actual.audit_rows:,} audit events; "
        f"{poison:,} poison items went to the dead-letter topic"
    )
    return True


async def _print_report(conn: Any) -> None:
    print("\nTraffic, cost and error rate per service and hour (UTC):")
    rows = await conn.fetch(
        "SELECT to_char(time_window, 'MM-DD HH24:00') AS hour, service, "
        "sum(request_count) AS requests, sum(cost) AS cost, "
        "round(100.0 * sum(error_count) / nullif(sum(request_count), 0), 2) AS error_pct, "
        "round((sum(response_time_ms_sum) / nullif(sum(request_count), 0))::numeric, 1) "
        "AS avg_ms FROM api_usage GROUP BY 1, 2 ORDER BY 1, 2"
    )
    print(format_table(["hour", "service", "requests", "cost $", "errors %", "avg ms"], [
        (r["hour"], r["service"], int(r["requests"]), r["cost"], r["error_pct"], r["avg_ms"])
        for r in rows
    ]))  # fmt: skip
    print("\nTop users by API cost:")
    rows = await conn.fetch(
        "SELECT user_id, organization_id, sum(request_count) AS requests, sum(cost) AS cost "
        "FROM api_usage WHERE user_id <> '' GROUP BY 1, 2 ORDER BY cost DESC LIMIT 5"
    )
    print(format_table(["user", "organization", "requests", "cost $"], [
        (r["user_id"], r["organization_id"], int(r["requests"]), r["cost"]) for r in rows
    ]))  # fmt: skip
    print("\nAI models by cost:")
    rows = await conn.fetch(
        # Every state change is a row: count analyses, and rates over their final states.
        "SELECT model_type, count(DISTINCT coalesce(analysis_id, event_id::text)) AS analyses, "
        "sum(tokens_used) AS tokens, sum(api_cost) AS cost, "
        "round(100.0 * count(*) FILTER (WHERE status IN ('failed', 'fallback')) / "
        "nullif(count(*) FILTER (WHERE status IN ('completed', 'failed', 'fallback')), 0), 2) "
        "AS not_completed_pct FROM ai_analysis GROUP BY 1 ORDER BY cost DESC"
    )
    print(format_table(["model", "analyses", "tokens", "cost $", "failed/fallback %"], [
        (r["model_type"], r["analyses"], int(r["tokens"]), r["cost"], r["not_completed_pct"])
        for r in rows
    ]))  # fmt: skip
    print("\nPerformance metrics per series (all hours, all instances):")
    rows = await conn.fetch(
        "SELECT name, unit, sum(sample_count) AS samples, "
        "round((sum(value_sum) / sum(sample_count))::numeric, 1) AS avg, "
        "min(value_min) AS lo, max(value_max) AS hi FROM performance_metrics "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    print(format_table(["series", "unit", "samples", "avg", "min", "max"], [
        (r["name"], r["unit"], int(r["samples"]), r["avg"], r["lo"], r["hi"]) for r in rows
    ]))  # fmt: skip
    print("\nAnalyses by current status, and audit events by action:")
    rows = await conn.fetch(
        "SELECT 'analysis ' || status AS what, count(*) AS n FROM analysis_lifecycle GROUP BY 1 "
        "UNION ALL SELECT 'audit ' || action, count(*) FROM audit_trail "
        "WHERE source = 'event' GROUP BY 1 ORDER BY 1"
    )
    print(format_table(["what", "count"], [(r["what"], int(r["n"])) for r in rows]))
    print()


def _wait_for_interrupt(
    database_url: str, watch: BrokerWatch, workers: list[WorkerProcess]
) -> None:
    bootstrap = watch.broker.bootstrap_servers
    ports = ", ".join(f"http://127.0.0.1:{w.web_port}/metrics" for w in workers)
    print(
        "\nThe stack keeps running until Ctrl-C. In another shell:\n"
        f"  export DATABASE_URL='{database_url}'\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap} KAFKA_IDEMPOTENT_PRODUCER=false\n"
        "  pipeline query --help; pipeline dlq inspect; pipeline partitions stats\n"
        f'  psql "$DATABASE_URL"\nWorker metrics: {ports}\n',
        flush=True,
    )
    try:
        while True:
            time.sleep(PROBE_EVERY_S)
            watch.check("keeping the stack running (--keep)")
    except KeyboardInterrupt:
        print()
