"""Soak: two workers under steady load for a long time; resources must stay flat.

    python -m bench.soak [--minutes 20] [--rate 20000]

Prints figures, asserts nothing (not part of CI). Starts an embedded broker and PostgreSQL,
two ``pipeline worker`` processes in one group, and produces standard-workload API calls
stamped "now" at ``--rate`` events/s in records of 100 events (about half of what one
worker applies at most on the project's machine) for ``--minutes``. Every minute it prints,
per worker, the resident memory, open file descriptors and threads, and for PostgreSQL its
client connections, with the events produced and applied so far and the lag. At the end it
compares the applied API calls with what was produced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench._machine import machine
from pipeline.config import Config, DatabaseConfig, TopicsConfig, WorkerConfig
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from pipeline.kafka import client_options, ensure_topics
from pipeline.launch import WorkerProcess
from pipeline.migrations.runner import MigrationRunner
from pipeline.workload import EventFactory

REPO = Path(__file__).resolve().parent.parent
GROUP = "soak"


def status(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open file descriptors, threads) of ``pid``."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


async def soak(
    kafka_bootstrap: str, pg_url: str, workers: list[WorkerProcess], minutes: float, rate: float
) -> None:
    kafka = Config.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}).require_kafka()
    producer = AIOKafkaProducer(**client_options(kafka), linger_ms=5)
    await producer.start()
    conn = await asyncpg.connect(pg_url)
    factory = EventFactory(random.Random(42), int(time.time() * 1000))
    produced = 0
    started = time.perf_counter()
    next_report = started
    print("minute  produced   applied      lag  " + "  ".join(
        f"w{i} RSS MiB  fds thr" for i in range(1, len(workers) + 1)) + "  pg conns")  # fmt: skip
    try:
        while True:
            now = time.perf_counter()
            if now >= next_report:
                await report(conn, workers, (now - started) / 60, produced)
                next_report += 60
            if now - started >= minutes * 60:
                break
            now_ms = int(time.time() * 1000)
            events = []
            for _ in range(100):
                event = factory.api_call(False)
                event["occurred_at"] = now_ms
                events.append(event)
            await producer.send("api-calls", orjson.dumps(events))
            produced += 100
            await asyncio.sleep(max(0.0, started + produced / rate - time.perf_counter()))
        await producer.flush()
        deadline = time.monotonic() + 300
        applied = 0
        while time.monotonic() < deadline:
            applied = int(
                await conn.fetchval("SELECT coalesce(sum(request_count), 0) FROM api_usage")
            )
            if applied >= produced:
                break
            await asyncio.sleep(1)
        await report(conn, workers, (time.perf_counter() - started) / 60, produced)
        verdict = "equal" if applied == produced else "DIFFERENT"
        print(f"\napplied {applied:,} API calls of {produced:,} produced: {verdict}")
    finally:
        await producer.stop()
        await conn.close()


async def report(
    conn: asyncpg.Connection, workers: list[WorkerProcess], minute: float, produced: int
) -> None:
    applied = int(await conn.fetchval("SELECT coalesce(sum(request_count), 0) FROM api_usage"))
    connections = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    cells = []
    for worker in workers:
        assert worker.process is not None
        rss, fds, threads = status(worker.process.pid)
        cells.append(f"{rss:10.0f} {fds:4d} {threads:3d}")
    print(f"{minute:6.1f} {produced:9,} {applied:9,} {produced - applied:8,}  "
          + "  ".join(cells) + f"  {connections:8d}", flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=20_000.0, help="API calls per second")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"load: {args.rate:,.0f} API calls/s in records of 100 events, 2 workers, "
          f"{args.minutes:g} minutes\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        pg = EmbeddedPostgres(tmp / "pg")
        broker = EmbeddedBroker(log_path=tmp / "broker.log")
        pg.start()
        broker.start()
        workers: list[WorkerProcess] = []
        try:
            kafka = broker.kafka_config()

            async def prepare() -> None:
                conn = await asyncpg.connect(pg.url)
                try:
                    await MigrationRunner(conn, REPO / "sql" / "migrations", applied_by="soak").up()
                finally:
                    await conn.close()
                topics = TopicsConfig()
                names = [*topics.source_topics, topics.dead_letters]
                await ensure_topics(kafka, names, partitions=8)

            asyncio.run(prepare())
            config = Config(
                database=DatabaseConfig(url=pg.url),
                kafka=kafka,
                worker=WorkerConfig(group_id=GROUP),
            )
            for i in (1, 2):
                worker = WorkerProcess(
                    config, worker_id=f"soak-{i}", web_port=free_port(),
                    log_path=tmp / f"worker-{i}.log",
                )  # fmt: skip
                worker.start()
                workers.append(worker)
            for worker in workers:
                if not worker.wait_ready(120):
                    print(worker.log_tail(), file=sys.stderr)
                    raise SystemExit("a worker did not become ready")
            asyncio.run(soak(kafka.bootstrap, pg.url, workers, args.minutes, args.rate))
        finally:
            for worker in workers:
                worker.stop()
            broker.stop()
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
