"""Our worker beside a peer (Quix Streams), on the same broker and the same records.

    python -m bench.peer [--peer-dir ../shared/peers/quix] [--peer-python /tmp/quixvenv/bin/python]

Prints figures, asserts nothing. In one sitting, on one embedded Tansu broker:

1. the peer's own producer (``produce.py``, confluent-kafka / librdkafka) writes its
   1,000,000 single-event API-call records, keyed, into a fresh 4-partition topic;
2. the peer's harness runs its Quix Streams application once (``bench.py quix TOPIC 1
   current``: 1-hour tumbling windows, ``.current()``, PostgreSQLSink with upsert) and
   reports its wall time, CPU and peak RSS;
3. one ``pipeline worker`` process consumes the same topic (as its API-call topic) into an
   embedded PostgreSQL 16: wall time from launching the process until the watermark covers
   every record, the same definition as the peer's (process start and group join
   included), its CPU-seconds and peak RSS; then its totals are compared with the peer's
   expected totals (events, errors, tokens).

The peer's code is not part of this repository: ``--peer-dir`` points at a checkout of it
and ``--peer-python`` at a virtual environment with its requirements installed (see its
README). Broker, both PostgreSQL servers, the producer and the application under test
share the machine; the two applications never run at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from bench._machine import cpu_seconds, machine, status_kib
from pipeline.config import TopicsConfig
from pipeline.contract import EventKind
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from pipeline.kafka import ensure_topics
from pipeline.kinds import KINDS
from pipeline.migrations.runner import MigrationRunner

REPO = Path(__file__).resolve().parent.parent
RECORDS = 1_000_000


def run_peer(peer_dir: Path, python: str, broker: str, topic: str) -> dict[str, object]:
    env = {
        **os.environ,
        "BROKER": broker,
        "RESULTS": str(Path(tempfile.gettempdir()) / "peer.jsonl"),
    }
    produce_with_peer(peer_dir, python, broker, topic)
    out = subprocess.run(
        [python, "bench.py", "quix", topic, "1", "current"],
        cwd=peer_dir, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def produce_with_peer(peer_dir: Path, python: str, broker: str, topic: str) -> None:
    env = {**os.environ, "BROKER": broker}
    subprocess.run([python, "produce.py", topic], cwd=peer_dir, env=env, check=True)


async def run_ours(
    broker: EmbeddedBroker, topic: str, tmp: Path, partitions: int
) -> dict[str, float | int]:
    pg = EmbeddedPostgres(tmp / "pg")
    pg.start()
    try:
        conn = await asyncpg.connect(pg.url)
        try:
            await MigrationRunner(conn, REPO / "sql" / "migrations", applied_by="bench").up()
            # The peer's workload is dated 2024-01-01: keep it within retention.
            await conn.execute(
                "UPDATE partition_policies SET retention = interval '10 years' "
                "WHERE parent_table LIKE 'api_usage%'"
            )
            kafka = broker.kafka_config()
            topics = TopicsConfig(
                sources={
                    spec.kind: topic if spec.kind is EventKind.API_CALL else f"peer-{spec.topic}"
                    for spec in KINDS
                },
                dead_letters="peer-dlq",
            )
            names = [name for name in topics.settings() if name != topic]
            await ensure_topics(kafka, names, partitions=partitions)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PIPELINE_"))}
            env.update(
                PYTHONPATH=str(REPO), DATABASE_URL=pg.url, KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
                KAFKA_IDEMPOTENT_PRODUCER="false", PIPELINE_GROUP_ID="peer-bench",
                PIPELINE_WEB_PORT=str(free_port()),
            )  # fmt: skip
            env.update({setting: name for name, setting in topics.settings().items()})
            started = time.perf_counter()
            worker = _start_worker(env, tmp / "worker.log")
            peak_kib = 0
            try:
                while True:
                    applied = await conn.fetchval(
                        "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets "
                        "WHERE consumer_group = 'peer-bench' AND topic = $1",
                        topic,
                    )
                    peak_kib = max(peak_kib, status_kib(worker.pid, "VmHWM"))
                    if applied >= RECORDS:
                        break
                    if worker.poll() is not None:
                        raise SystemExit(f"the worker exited; see {tmp / 'worker.log'}")
                    if time.perf_counter() - started > 1800:
                        raise SystemExit("the worker did not finish within 30 minutes")
                    await asyncio.sleep(0.2)
                wall = time.perf_counter() - started
                cpu = cpu_seconds(worker.pid)
            finally:
                worker.terminate()
                worker.wait(60)
            row = await conn.fetchrow(
                "SELECT sum(request_count) AS events, sum(error_count) AS errors, "
                "sum(token_usage) AS tokens, count(*) AS rows FROM api_usage"
            )
        finally:
            await conn.close()
    finally:
        pg.stop()
    return {
        "wall_s": wall, "eps": RECORDS / wall, "cpu_s": cpu, "peak_rss_mib": peak_kib / 1024,
        "events": int(row["events"]), "errors": int(row["errors"]),
        "tokens": int(row["tokens"]), "rows": int(row["rows"]),
    }  # fmt: skip


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peer-dir", type=Path, default=REPO.parent / "shared" / "peers" / "quix")
    parser.add_argument("--peer-python", default="/tmp/quixvenv/bin/python")
    parser.add_argument("--skip-peer", action="store_true", help="produce, run ours only")
    args = parser.parse_args(argv)
    if not (args.peer_dir / "bench.py").is_file():
        parser.error(f"no peer harness in {args.peer_dir} (see its README)")
    print(f"machine: {machine()}")
    print(f"workload: the peer's generator, {RECORDS:,} single-event API-call records, "
          "keyed, 4 partitions, produced with librdkafka\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        broker = EmbeddedBroker(log_path=Path(tmp) / "broker.log")
        broker.start()
        try:
            bootstrap = broker.kafka_config().bootstrap
            topic = f"peer_{int(time.time())}"
            peer: dict[str, object] | None = None
            if args.skip_peer:
                produce_with_peer(args.peer_dir, args.peer_python, bootstrap, topic)
            else:
                peer = run_peer(args.peer_dir, args.peer_python, bootstrap, topic)
                print(f"peer (Quix Streams, .current() + PostgreSQLSink): {peer['eps']:,} "
                      f"events/s ({peer['wall_s']} s), app CPU {peer['app_cpu_s']} s, "
                      f"peak RSS {peer['app_peak_rss_mb']} MB, "
                      f"totals correct: {peer['correct']}")  # fmt: skip
            ours = asyncio.run(run_ours(broker, topic, Path(tmp), 4))
        finally:
            broker.stop()
    expected_file = Path("/tmp/quix_expected.json")
    expected = json.loads(expected_file.read_text()) if expected_file.exists() else {}
    exact = all(ours[k] == expected.get(k) for k in ("events", "errors", "tokens"))
    print(f"ours (pipeline worker, 1 process): {ours['eps']:,.0f} events/s "
          f"({ours['wall_s']:.1f} s), worker CPU {ours['cpu_s']:.1f} s, peak RSS "
          f"{ours['peak_rss_mib']:.0f} MiB, totals equal to the peer's expected totals: "
          f"{exact if expected else 'unknown (no expected totals file)'}")  # fmt: skip
    if peer is not None:
        print(f"ratio ours / peer: {ours['eps'] / float(str(peer['eps'])):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
