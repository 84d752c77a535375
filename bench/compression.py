"""What each Kafka codec costs our producers and saves on the wire (prints, asserts nothing).

    python -m bench.compression [--events 200000]

For every codec Kafka defines (none, gzip, snappy, lz4, zstd) and both record shapes, the
SDK (``EventProducer.send_raw``, i.e. what services and the dead-letter publisher use)
sends the same pre-packed standard-workload API-call records to a fresh topic of an
embedded Tansu broker, ``acks=all``. Per run: events/s, the producer process's CPU time per
event (this process: encoding, compression, the client), and bytes on the wire per event
(the loopback interface's transmitted bytes during the run, ``/proc/net/dev``: produce
requests with their framing plus the broker's small responses; the machine is otherwise
quiet on loopback during a run).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._machine import machine
from pipeline.cli._common import format_table
from pipeline.config import COMPRESSION_TYPES, KafkaConfig, TopicsConfig
from pipeline.contract import EventKind
from pipeline.embedded import EmbeddedBroker
from pipeline.kafka import ensure_topics
from pipeline.producer import EventProducer
from pipeline.workload import WorkloadSpec, generate, pack


def written_bytes() -> int:
    """Bytes transmitted on the loopback interface so far."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[8])
    return 0


async def run(kafka: KafkaConfig, topic: str, values: Sequence[bytes]) -> tuple[float, float, int]:
    """Send ``values``; return (seconds, CPU seconds, bytes written)."""
    await ensure_topics(kafka, [topic], partitions=8)
    topics = TopicsConfig(sources={EventKind.API_CALL: topic})
    wrote, cpu, started = written_bytes(), time.process_time(), time.perf_counter()
    async with EventProducer(kafka, topics, max_record_bytes=4 << 20) as producer:
        for value in values:
            await producer.send_raw(topic, value)
    return time.perf_counter() - started, time.process_time() - cpu, written_bytes() - wrote


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000, help="API calls per run")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    spec = WorkloadSpec(
        api_calls=args.events,
        start_ms=int(time.time() * 1000),
        analyses_per_api_call=0,
        logs_per_api_call=0,
        metrics_per_api_call=0,
        audits_per_api_call=0,
    )
    items = list(generate(spec))
    shapes = {shape: [r.value for r in pack(items, shape)] for shape in ("batched", "single")}
    print(f"workload: standard, {args.events:,} API calls; JSON value bytes per event: "
          f"{sum(map(len, shapes['batched'])) / args.events:.0f} batched, "
          f"{sum(map(len, shapes['single'])) / args.events:.0f} single\n")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        try:
            base = broker.kafka_config()
            for shape, values in shapes.items():
                for codec in COMPRESSION_TYPES:
                    kafka = dataclasses.replace(base, compression_type=codec)
                    topic = f"compression-{shape}-{codec}-{time.time_ns()}"
                    seconds, cpu, wrote = asyncio.run(run(kafka, topic, values))
                    n = args.events
                    rows.append((shape, codec, round(n / seconds), round(cpu / n * 1e6, 2),
                                 round(wrote / n, 1)))  # fmt: skip
        finally:
            broker.stop()
    plain = {shape: next(r[4] for r in rows if r[:2] == (shape, "none")) for shape in shapes}
    table = [(*r, f"{plain[r[0]] / r[4]:.1f}x") for r in rows]
    print(format_table(
        ["shape", "codec", "events/s", "producer CPU µs/event", "wire bytes/event", "smaller"],
        table,
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
