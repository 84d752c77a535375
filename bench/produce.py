"""Producer throughput on an embedded Tansu broker, both record shapes, three paths.

``python -m bench.produce --events 200000`` starts a broker, generates the standard
workload (``--events`` API calls, analyses and logs by the workload ratios; no poison),
and times, per shape, with fresh topics each time:

- ``sdk``: ``EventProducer.send`` of typed events (validation and encoding included);
  the single shape is the SDK with ``max_record_events=1``;
- ``raw``: ``EventProducer.send_raw`` of records packed beforehand (the transport alone);
- ``produce``: :func:`pipeline.producer.produce_workload`, i.e. ``pipeline produce``
  (generation, totals and packing included).

Each figure runs from the first send to the acknowledgement of the last record
(``acks=all``). Events are built before the clock starts for ``sdk`` and ``raw``.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiokafka

from bench._machine import machine
from pipeline.cli._common import format_table
from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import Event, validate_event
from pipeline.embedded import EmbeddedBroker
from pipeline.kafka import ensure_topics
from pipeline.producer import EventProducer, produce_workload, topic_for
from pipeline.workload import PackedRecord, Shape, WorkloadSpec, generate, pack_stream

SHAPES: tuple[Shape, ...] = ("batched", "single")


@dataclass(frozen=True)
class Result:
    path: str
    shape: Shape
    events: int
    records: int
    value_bytes: int
    seconds: float

    def row(self) -> tuple[object, ...]:
        return (
            self.path,
            self.shape,
            self.events,
            self.records,
            round(self.seconds, 2),
            round(self.events / self.seconds),
            round(self.value_bytes / self.seconds / 1e6, 1),
        )


class Bench:
    def __init__(self, kafka: KafkaConfig, partitions: int) -> None:
        self.kafka = kafka
        self.partitions = partitions
        self.runs = 0

    async def topics(self) -> TopicsConfig:
        self.runs += 1
        prefix = f"bench{self.runs}"
        topics = TopicsConfig(
            sources={kind: f"{prefix}-{kind.value}" for kind in TopicsConfig().sources},
            dead_letters=f"{prefix}-dlq",
        )
        names = list(topics.source_topics)
        await ensure_topics(self.kafka, names, partitions=self.partitions)
        return topics

    async def timed(
        self, producer: EventProducer, work: Callable[[EventProducer], Awaitable[int]]
    ) -> tuple[int, float]:
        async with producer:
            started = time.perf_counter()
            value_bytes = await work(producer)
            await producer.flush()
            return value_bytes, time.perf_counter() - started

    async def sdk(self, shape: Shape, events: list[Event], wire_bytes: int) -> Result:
        topics = await self.topics()
        per_record = 500 if shape == "batched" else 1
        producer = EventProducer(self.kafka, topics, max_record_events=per_record)

        async def work(p: EventProducer) -> int:
            send = p.send
            for event in events:
                await send(event)
            return wire_bytes

        value_bytes, seconds = await self.timed(producer, work)
        return Result("sdk (validated)", shape, producer.events_acked,
                      producer.records_acked, value_bytes, seconds)  # fmt: skip

    async def raw(self, shape: Shape, records: list[PackedRecord]) -> Result:
        topics = await self.topics()
        producer = EventProducer(self.kafka, topics)
        topic_of = {r.kind: topic_for(topics, r.kind) for r in records}

        async def work(p: EventProducer) -> int:
            send_raw = p.send_raw
            for record in records:
                await send_raw(topic_of[record.kind], record.value)
            return sum(len(r.value) for r in records)

        value_bytes, seconds = await self.timed(producer, work)
        events = sum(r.events for r in records)
        return Result("raw (pre-packed)", shape, events, producer.records_acked,
                      value_bytes, seconds)  # fmt: skip

    async def load(self, shape: Shape, spec: WorkloadSpec) -> Result:
        topics = await self.topics()
        report = await produce_workload(self.kafka, topics, spec, shape=shape)
        return Result("produce_workload", shape, report.items, report.record_count,
                      report.record_bytes, report.elapsed_s)  # fmt: skip


async def run(kafka: KafkaConfig, spec: WorkloadSpec, partitions: int) -> list[Result]:
    items = list(generate(spec))
    events = [validate_event(i.kind, i.event, now_ms=spec.start_ms) for i in items]
    packed = {shape: list(pack_stream(items, shape)) for shape in SHAPES}
    bench = Bench(kafka, partitions)
    results = []
    for shape in SHAPES:
        wire_bytes = sum(len(r.value) for r in packed[shape])
        for result in (
            await bench.sdk(shape, events, wire_bytes),
            await bench.raw(shape, packed[shape]),
            await bench.load(shape, spec),
        ):
            print(f"  {result.path:<18} {result.shape:<8} {result.seconds:6.2f}s", flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.produce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000, help="API-call events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--partitions", type=int, default=8, help="partitions per topic")
    args = parser.parse_args(argv)
    spec = WorkloadSpec(seed=args.seed, api_calls=args.events, start_ms=time.time_ns() // 10**6)
    print(
        f"machine: {machine()}, aiokafka {aiokafka.__version__}\n"
        f"broker: embedded Tansu (memory storage) on the same machine, "
        f"{args.partitions} partitions per topic, acks=all, idempotence off\n"
        f"workload: seed {spec.seed}, {spec.api_calls:,} API calls + {spec.analyses:,} "
        f"analyses + {spec.logs:,} logs = {spec.valid_events:,} events, no poison"
    )
    with tempfile.TemporaryDirectory(prefix="bench-produce-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        try:
            results = asyncio.run(run(broker.kafka_config(), spec, args.partitions))
        finally:
            broker.stop()
    print()
    print(format_table(
        ["path", "shape", "events", "records", "seconds", "events/s", "MB/s"],
        [r.row() for r in results],
    ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
