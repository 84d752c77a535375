"""Worker benchmark on the embedded stack (prints figures, asserts nothing).

    python -m bench.worker [--events 500000] [--single-events 500000] [--analyses 100000]

Measures, in one run, for the standard workload (../shared/workloads.md, seed 42):

1. the ceiling: decode + validate + aggregate of the same records in this process, no
   Kafka, no PostgreSQL;
2. end to end with one worker process: events/s from the first produce to the last offset
   committed in PostgreSQL (the ``ingest_offsets`` watermark), batched and single records,
   with the worker's CPU-seconds per million events and its peak RSS during that run;
3. rows/s end to end of each other kind, batched, one kind at a time: analysis rows
   (with their analysis_lifecycle upsert), log rows, metric samples (hourly series plus
   raw samples) and audit rows (``--analyses`` events each);
4. end-to-end latency p50/p99 at half the batched maximum rate (send time of a record to
   the moment the watermark covers it, polled every 10 ms), events stamped "now";
5. the worker's peak RSS over the whole run.

The worker is started and ready (/readyz) before the clock starts, so the group join is
not counted. Broker, PostgreSQL, the producer and the worker share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench._machine import cpu_seconds, machine, status_kib
from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import EventKind, decode_record
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from pipeline.kafka import client_options, ensure_topics
from pipeline.migrations.runner import MigrationRunner
from pipeline.verify import wait_for_watermarks
from pipeline.worker.aggregate import aggregate
from pipeline.workload import EventFactory, Item, WorkloadSpec, generate, pack

REPO = Path(__file__).resolve().parent.parent
# The default topic of every kind (an older --worker-source ignores the ones it lacks).
TOPICS = dict(TopicsConfig().sources)
GROUP = "bench"


def records_of(items: Iterable[Item], shape: str) -> dict[EventKind, list[bytes]]:
    by_kind: dict[EventKind, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    return {
        kind: [r.value for r in pack(kind_items, shape)]  # type: ignore[arg-type]
        for kind, kind_items in by_kind.items()
    }


def ceiling(values: Sequence[bytes], now_ms: int) -> tuple[float, int]:
    """Events/s of decode + validate + aggregate, in this process."""
    started = time.perf_counter()
    events = 0
    for value in values:
        calls, _ = decode_record(EventKind.API_CALL, value, now_ms=now_ms)
        aggregate(calls)  # type: ignore[arg-type]
        events += len(calls)
    return events / (time.perf_counter() - started), events


class Stack:
    def __init__(
        self, tmp: Path, worker_env: dict[str, str] | None = None, source: Path = REPO
    ) -> None:
        self.tmp = tmp
        self.source = source
        self.worker_env = worker_env or {}
        self.max_rss_mib = 0.0
        self.pg = EmbeddedPostgres(tmp / "pg")
        self.broker = EmbeddedBroker(log_path=tmp / "broker.log")
        self.kafka: KafkaConfig | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def __enter__(self) -> Stack:
        self.pg.start()
        self.broker.start()
        self.kafka = self.broker.kafka_config()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_worker()
        self.broker.stop()
        self.pg.stop()

    async def prepare(self, partitions: int = 8) -> None:
        conn = await asyncpg.connect(self.pg.url)
        try:
            await MigrationRunner(conn, self.source / "sql" / "migrations", applied_by="bench").up()
        finally:
            await conn.close()
        assert self.kafka is not None
        names = [*TOPICS.values(), "ingest-dlq"]
        await ensure_topics(self.kafka, names, partitions=partitions)

    def start_worker(self) -> None:
        assert self.kafka is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PIPELINE_"))}
        env.update(
            PYTHONPATH=str(self.source), DATABASE_URL=self.pg.url,
            KAFKA_BOOTSTRAP_SERVERS=self.kafka.bootstrap, KAFKA_IDEMPOTENT_PRODUCER="false",
            PIPELINE_GROUP_ID=GROUP, PIPELINE_WEB_PORT=str(self.port),
        )  # fmt: skip
        env.update(self.worker_env)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"],
            env=env, stdout=(self.tmp / "worker.log").open("wb"), stderr=subprocess.STDOUT,
            cwd=self.source,  # `python -m` puts the working directory first on sys.path
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"worker not ready after 90 s; see {self.tmp / 'worker.log'}")

    def flush_seconds(self, topic: str) -> float:
        """Sum of the worker's flush durations for ``topic`` (from its /metrics)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        prefix = f'pipeline_flush_duration_seconds_sum{{topic="{topic}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0

    def peak_rss_mib(self) -> float:
        return 0.0 if self.worker is None else status_kib(self.worker.pid, "VmHWM") / 1024

    def note_peak_rss(self) -> float:
        """The peak RSS since the previous call (MiB); starts a new measurement (Linux:
        writing 5 to clear_refs resets the peak). The largest is kept in ``max_rss_mib``."""
        peak = self.peak_rss_mib()
        self.max_rss_mib = max(self.max_rss_mib, peak)
        if self.worker is not None:
            Path(f"/proc/{self.worker.pid}/clear_refs").write_text("5")
        return peak

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far."""
        if self.worker is None:
            return 0.0
        return cpu_seconds(self.worker.pid)

    def postgres_cpu_seconds(self) -> float:
        """CPU time of the PostgreSQL server so far: the postmaster, its live children
        (backends, WAL writer, checkpointer, autovacuum) and the children it reaped."""
        postmaster = int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        total = cpu_seconds(postmaster, children=True)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.worker = None


async def produce(
    kafka: KafkaConfig, records: dict[EventKind, list[bytes]]
) -> dict[tuple[str, int], int]:
    producer = AIOKafkaProducer(
        **client_options(kafka), acks="all", linger_ms=5, max_request_size=4 << 20,
        max_batch_size=1 << 20,
    )  # fmt: skip
    await producer.start()
    targets: dict[tuple[str, int], int] = {}
    try:
        futures = [
            await producer.send(TOPICS[kind], value)
            for kind, values in records.items()
            for value in values
        ]
        for md in await asyncio.gather(*futures):
            key = (md.topic, md.partition)
            targets[key] = max(targets.get(key, 0), md.offset + 1)
    finally:
        await producer.stop()
    return targets


def measured(
    stack: Stack, label: str, records: dict[EventKind, list[bytes]], events: int, unit: str
) -> float:
    """Run ``records`` end to end; print the rate, the worker's and PostgreSQL's CPU-µs
    per event and the worker's peak RSS."""
    stack.note_peak_rss()
    cpu, pg_cpu = stack.cpu_seconds(), stack.postgres_cpu_seconds()
    seconds = asyncio.run(end_to_end(stack, records))
    cpu, pg_cpu = stack.cpu_seconds() - cpu, stack.postgres_cpu_seconds() - pg_cpu
    rate = events / seconds
    print(f"end to end, {label}: {rate:,.0f} {unit}/s ({events:,} in {seconds:.1f} s); "
          f"CPU-µs per {unit[:-1]}: worker {cpu / events * 1e6:.1f}, PostgreSQL "
          f"{pg_cpu / events * 1e6:.1f}; worker peak RSS "
          f"{stack.note_peak_rss():.0f} MiB")  # fmt: skip
    return rate


async def end_to_end(stack: Stack, records: dict[EventKind, list[bytes]]) -> float:
    """Seconds from the first produce until the watermark covers every record."""
    assert stack.kafka is not None
    conn = await asyncpg.connect(stack.pg.url)
    try:
        before = {
            (r["topic"], r["partition"]): r["next_offset"]
            for r in await conn.fetch("SELECT topic, partition, next_offset FROM ingest_offsets")
        }
        started = time.perf_counter()
        targets = await produce(stack.kafka, records)
        targets = {tp: max(end, before.get(tp, 0)) for tp, end in targets.items()}
        if not await wait_for_watermarks(conn, GROUP, targets, timeout_s=900, poll_s=0.02):
            raise SystemExit("the worker did not apply everything within 15 minutes")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def latency(stack: Stack, rate: float, seconds: float) -> tuple[float, float, int]:
    """p50/p99 ms from sending a record to the watermark covering it, at ``rate`` ev/s."""
    assert stack.kafka is not None
    factory = EventFactory(__import__("random").Random(1), int(time.time() * 1000))
    producer = AIOKafkaProducer(**client_options(stack.kafka), acks="all", linger_ms=1)
    await producer.start()
    conn = await asyncpg.connect(stack.pg.url)
    sent: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not (stop.is_set() and not sent):
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM ingest_offsets "
                "WHERE consumer_group = $1 AND topic = 'api-calls'",
                GROUP,
            )
            now = time.perf_counter()
            marks = {r["partition"]: r["next_offset"] for r in rows}
            for key in [k for k in sent if k[1] < marks.get(k[0], 0)]:
                latencies.append((now - sent.pop(key)) * 1000)
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    per_record = 100
    interval = per_record / rate
    started = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - started < seconds:
            now_ms = int(time.time() * 1000)
            events = []
            for _ in range(per_record):
                event = factory.api_call(False)
                event["occurred_at"] = now_ms
                events.append(event)
            t = time.perf_counter()
            md = await producer.send_and_wait("api-calls", orjson.dumps(events))
            sent[(md.partition, md.offset)] = t
            n += 1
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
        stop.set()
        await asyncio.wait_for(poller, 120)
    finally:
        await producer.stop()
        await conn.close()
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50, p99, len(latencies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=500_000, help="API calls, batched run")
    parser.add_argument("--single-events", type=int, default=500_000, help="API calls, single")
    parser.add_argument("--partitions", type=int, default=8, help="partitions per topic")
    parser.add_argument(
        "--worker-source",
        type=Path,
        default=REPO,
        help="source tree the worker process runs from (an A/B against another checkout)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the worker process (repeatable)",
    )
    parser.add_argument("--analyses", type=int, default=100_000, help="analysis events")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    now_ms = int(time.time() * 1000)
    print(f"machine: {machine()}")
    print("workload: standard (seed 42), API calls with 1 analysis per 10 and 1 log per 20 "
          "(only API calls are produced for the API runs)\n")  # fmt: skip

    def api_items(n: int) -> list[Item]:
        spec = WorkloadSpec(api_calls=n, start_ms=now_ms, analyses_per_api_call=0,
                            logs_per_api_call=0, metrics_per_api_call=0,
                            audits_per_api_call=0)  # fmt: skip
        return list(generate(spec))

    batched = records_of(api_items(args.events), "batched")
    single = records_of(api_items(args.single_events), "single")
    factory = EventFactory(__import__("random").Random(42), now_ms)
    analyses = records_of(
        (Item(EventKind.ANALYSIS, factory.analysis()) for _ in range(args.analyses)), "batched"
    )
    logs = records_of(
        (Item(EventKind.SYSTEM_LOG, factory.system_log()) for _ in range(args.analyses)),
        "batched",
    )
    samples = records_of(
        (Item(EventKind.PERFORMANCE_METRIC, factory.performance_metric())
         for _ in range(args.analyses)),
        "batched",
    )  # fmt: skip
    audits = records_of(
        (Item(EventKind.AUDIT, factory.audit()) for _ in range(args.analyses)), "batched"
    )
    top, n = ceiling(batched[EventKind.API_CALL], now_ms)
    top_single, _ = ceiling(single[EventKind.API_CALL], now_ms)
    print(f"ceiling (decode+validate+aggregate, in process): {top:,.0f} events/s batched, "
          f"{top_single:,.0f} events/s single ({n:,} events)")  # fmt: skip

    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    print(f"worker: {args.worker_source} {' '.join(args.worker_env)}".rstrip())
    with (
        tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp,
        Stack(Path(tmp), worker_env, args.worker_source) as stack,
    ):
        asyncio.run(stack.prepare(args.partitions))
        stack.start_worker()
        in_flush = stack.flush_seconds("api-calls")
        rate = measured(stack, "batched records (500 events)", batched, args.events, "events")
        in_flush = stack.flush_seconds("api-calls") - in_flush
        print(f"  {rate / top:.0%} of the ceiling; {in_flush:.1f} s inside flushes (partition "
              "check, dead letters, aggregation, the PostgreSQL transaction)")  # fmt: skip
        single_rate = measured(stack, "single-event records", single, args.single_events, "events")
        print(f"  {single_rate / top_single:.0%} of the ceiling; single / batched = "
              f"{single_rate / rate:.2f}")  # fmt: skip
        measured(stack, "analysis rows (ai_analysis)", analyses, args.analyses, "rows")
        measured(stack, "log rows (system_logs)", logs, args.analyses, "rows")
        if (stack.source / "pipeline" / "kinds" / "audit.py").exists():  # a source with them
            measured(stack, "metric samples (series + raw samples)", samples, args.analyses,
                     "events")  # fmt: skip
            measured(stack, "audit rows (audit_trail)", audits, args.analyses, "rows")
        p50, p99, count = asyncio.run(latency(stack, rate / 2, args.latency_seconds))
        print(f"latency at {rate / 2:,.0f} events/s (half the batched maximum), records of 100 "
              f"events: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {count} records")  # fmt: skip
        stack.note_peak_rss()
        print(f"worker peak RSS over the whole run: {stack.max_rss_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
