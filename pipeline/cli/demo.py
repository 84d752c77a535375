"""``pipeline demo``: the main job on embedded services, in one command.

Starts a Tansu broker and a PostgreSQL 16 from the installed wheels, applies the
migrations, creates the topics and the partitions around now, and prints the state. With
``--keep`` it then keeps the services running and prints the variables that point other
``pipeline`` commands (and psql) at them, until Ctrl-C. Everything it started is stopped on
exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline import db
from pipeline.cli._common import format_table, human_bytes, operator_name
from pipeline.config import Config, DatabaseConfig, KafkaConfig
from pipeline.embedded import EmbeddedBroker, EmbeddedPostgres
from pipeline.kafka import ensure_topics
from pipeline.maintenance import partitions
from pipeline.migrations.runner import MigrationRunner


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the pipeline on embedded Kafka and PostgreSQL (no Docker needed)",
        description=(
            "Start an embedded Tansu broker and PostgreSQL 16, migrate, create topics and "
            "partitions, and print the state. Stops everything it started on exit."
        ),
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the services running until Ctrl-C and print how to connect to them",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="PostgreSQL data directory to use and keep (default: a temporary directory)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=8,
        help="partitions per topic: the most workers a group can use (default: 8)",
    )
    parser.set_defaults(handler=run)


def _step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.perf_counter()


def _done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s{': ' + detail if detail else ''}")


def run(args: argparse.Namespace, config: Config) -> int:
    with tempfile.TemporaryDirectory(prefix="pipeline-demo-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "postgres"
        t = _step(f"starting PostgreSQL 16 (data in {data_dir})")
        with EmbeddedPostgres(data_dir) as pg:
            _done(t)
            t = _step("starting the Tansu Kafka broker")
            with EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
                _done(t, broker.bootstrap_servers)
                database = DatabaseConfig(url=pg.url)
                kafka = broker.kafka_config()
                asyncio.run(_prepare(config, database, kafka, args.partitions))
                if args.keep:
                    _wait_for_interrupt(pg.url, broker.bootstrap_servers)
            print("==> stopping the broker and PostgreSQL")
    return 0


async def _prepare(config: Config, database: DatabaseConfig, kafka: KafkaConfig, n: int) -> None:
    t = _step("creating topics")
    topics = config.topics
    names = [topics.api_calls, topics.analyses, topics.logs, topics.dead_letters]
    created = await ensure_topics(kafka, names, partitions=n)
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
        await _print_state(conn)
    finally:
        await conn.close()


async def _print_state(conn: Any) -> None:
    print("\nSchema:")
    rows = await conn.fetch(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    )
    print(format_table(["version", "migration", "applied_at"], [
        (f"{r['version']:04d}", r["name"], f"{r['applied_at']:%H:%M:%S}") for r in rows
    ]))  # fmt: skip
    print("\nPartitioned tables:")
    policies = await conn.fetch(
        "SELECT p.parent_table, p.granularity, p.retention::text AS retention, "
        "count(r.*) AS partitions, min(r.range_start) AS first, max(r.range_end) AS last, "
        "coalesce(sum(r.total_bytes), 0)::bigint AS bytes "
        "FROM partition_policies p LEFT JOIN partition_ranges r USING (parent_table) "
        "GROUP BY 1, 2, 3 ORDER BY 1"
    )
    print(format_table(["table", "per", "retention", "partitions", "from", "to", "size"], [
        (r["parent_table"], r["granularity"], r["retention"], r["partitions"],
         f"{r['first']:%Y-%m-%d}", f"{r['last']:%Y-%m-%d}", human_bytes(r["bytes"]))
        for r in policies
    ]))  # fmt: skip
    print()


def _wait_for_interrupt(database_url: str, bootstrap: str) -> None:
    print(
        "\nThe services keep running until Ctrl-C. In another shell:\n"
        f"  export DATABASE_URL='{database_url}'\n"
        f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
        "  pipeline migrate status; pipeline partitions stats\n",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print()
