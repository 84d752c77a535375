"""HTTP ingestion throughput and latency (``pipeline http``), next to the producer SDK.

``python -m bench.http`` starts an embedded PostgreSQL (API keys) and Tansu broker, a real
``pipeline http`` process (rate limit off) and then, from this process:

1. **throughput**: ``--connections`` keep-alive connections each POST bodies of
   ``--batch`` (100) API-call events of the standard workload, back to back, for
   ``--events`` events. Events/s counts events the server answered accepted (a 2xx means
   acknowledged by the broker, ``acks=all``); the server's CPU seconds are read from
   ``/proc`` so the figure can be read per server core too (the client and the broker
   share the machine's cores);
2. **latency**: the same bodies paced at half the measured rate for ``--latency-seconds``,
   each request timed from send to answer: p50, p99, max;
3. **SDK**: the same events through :class:`pipeline.producer.EventProducer` (validation,
   batching, ``acks=all``) on the same broker, for the rate a Kafka client gets there.

Asserts nothing; prints the machine, then the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import asyncpg
import orjson

from bench._machine import cpu_seconds, machine
from pipeline import apikeys
from pipeline.config import Config, DatabaseConfig, HttpConfig, KafkaConfig, TopicsConfig
from pipeline.contract import EventKind, validate_event
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from pipeline.kafka import ensure_topics
from pipeline.migrations.runner import MigrationRunner
from pipeline.producer import EventProducer
from pipeline.workload import WorkloadSpec, generate

REPO = Path(__file__).resolve().parents[1]
ORG = "bench-org"


def api_events(n: int) -> list[dict[str, object]]:
    """``n`` API-call events of the standard workload, all of one organization."""
    start_ms = int(time.time() * 1000)
    out: list[dict[str, object]] = []
    spec = WorkloadSpec(api_calls=n, start_ms=start_ms)
    for item in generate(spec):
        if item.kind is EventKind.API_CALL and item.event is not None:
            out.append({**item.event, "organization_id": ORG})
    return out[:n]


class Server:
    def __init__(self, tmp: Path, pg_url: str, kafka: KafkaConfig, topics: TopicsConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = Config(
            database=DatabaseConfig(url=pg_url),
            kafka=kafka,
            topics=topics,
            http=HttpConfig(port=self.port, rate_limit_events_per_s=0.0),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PIPELINE_"))}
        env.update(config.to_env(), PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "http"],
            env=env, stdout=(tmp / "http.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(
            "pipeline http not ready after 60 s:\n" + (tmp / "http.log").read_text()[-3000:]
        )

    def cpu_s(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def throughput(
    url: str, key: str, bodies: list[bytes], per_body: int, connections: int
) -> tuple[float, int, int]:
    """(seconds, events accepted, non-2xx answers) for POSTing every body once."""
    queue = list(reversed(bodies))
    accepted = failed = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)

    async with aiohttp.ClientSession(connector=connector) as session:

        async def lane() -> None:
            nonlocal accepted, failed
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers=headers) as response:
                    answer = orjson.loads(await response.read())
                    if response.status == 200:
                        accepted += answer["accepted"]
                    else:
                        failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(connections)))
        return time.perf_counter() - started, accepted, failed


async def paced(
    url: str, key: str, bodies: list[bytes], requests_per_s: float, seconds: float
) -> list[float]:
    """Latencies (s) of bodies sent at ``requests_per_s`` (open loop) for ``seconds``."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: bytes) -> None:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - started)

        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + n / requests_per_s
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(bodies[n % len(bodies)])))
            n += 1
        await asyncio.gather(*tasks)
    return latencies


async def sdk_rate(
    kafka: KafkaConfig, topics: TopicsConfig, events: list[dict[str, object]]
) -> float:
    now_ms = int(time.time() * 1000)
    typed = [validate_event(EventKind.API_CALL, dict(e), now_ms=now_ms) for e in events]
    async with EventProducer(kafka, topics) as producer:
        started = time.perf_counter()
        await producer.send_many(typed)
        await producer.flush()
        return len(typed) / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace, tmp: Path) -> None:
    pg = EmbeddedPostgres(tmp / "pg")
    broker = EmbeddedBroker(log_path=tmp / "broker.log")
    pg.start()
    broker.start()
    server: Server | None = None
    try:
        kafka = broker.kafka_config()
        conn = await asyncpg.connect(pg.url)
        try:
            await MigrationRunner(conn, REPO / "sql" / "migrations", applied_by="bench").up()
            _, key = await apikeys.create(conn, ORG, "bench")
        finally:
            await conn.close()
        http_topics = TopicsConfig(
            sources={k: f"http-{k.value}" for k in EventKind}, dead_letters="http-dlq"
        )
        sdk_topics = TopicsConfig(
            sources={k: f"sdk-{k.value}" for k in EventKind}, dead_letters="sdk-dlq"
        )
        names = [*http_topics.source_topics, *sdk_topics.source_topics]
        await ensure_topics(kafka, names, partitions=args.partitions)
        print(f"generating {args.events} API-call events ...", file=sys.stderr)
        events = api_events(args.events)
        bodies = [
            orjson.dumps(events[i : i + args.batch]) for i in range(0, len(events), args.batch)
        ]
        server = Server(tmp, pg.url, kafka, http_topics)
        url = server.url + "/v1/events"
        warm = max(1, len(bodies) // 20)
        await throughput(url, key, bodies[:warm], args.batch, args.connections)
        print("throughput ...", file=sys.stderr)
        cpu_before = server.cpu_s()
        seconds, accepted, failed = await throughput(url, key, bodies, args.batch, args.connections)
        server_cpu = server.cpu_s() - cpu_before
        rate = accepted / seconds
        print(f"latency at {rate / 2:,.0f} events/s ...", file=sys.stderr)
        latencies = await paced(url, key, bodies, rate / 2 / args.batch, args.latency_seconds)
        print("producer SDK ...", file=sys.stderr)
        sdk = await sdk_rate(kafka, sdk_topics, events)
    finally:
        if server is not None:
            server.stop()
        broker.stop()
        pg.stop()
    body_kib = statistics.mean(len(b) for b in bodies) / 1024
    print(f"machine: {machine()}")
    print(
        f"workload: {len(events)} API-call events (standard workload), bodies of {args.batch} "
        f"events ({body_kib:.1f} KiB JSON), {args.connections} keep-alive connections, "
        f"{args.partitions} partitions, embedded Tansu and PostgreSQL on the same machine"
    )
    print(
        f"http    throughput: {rate:>9,.0f} events/s  ({seconds:.2f} s, {failed} non-2xx; "
        f"server CPU {server_cpu:.2f} s = {accepted / server_cpu:,.0f} events per CPU-second)"
    )
    print(
        f"http    latency at {rate / 2:,.0f} events/s ({len(latencies)} requests): "
        f"p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    print(f"sdk     throughput: {sdk:>9,.0f} events/s  (EventProducer, same events and broker)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000, help="API-call events to send")
    parser.add_argument("--batch", type=int, default=100, help="events per request body")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--partitions", type=int, default=8, help="partitions per topic")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
