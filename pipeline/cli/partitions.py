"""``pipeline partitions ensure|prune|stats``: partition maintenance by hand."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli._common import format_table, run_with_connection
from pipeline.config import Config
from pipeline.maintenance import partitions
from pipeline.units import human_bytes


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "partitions",
        help="create partitions ahead, prune expired ones, show sizes",
        description="Partition maintenance following the rows of partition_policies.",
    )
    sub = parser.add_subparsers(dest="partitions_command", metavar="ACTION", required=True)
    ensure = sub.add_parser(
        "ensure", help="create each table's partitions from now - lookback to now + premake"
    )
    ensure.set_defaults(handler=_ensure)
    prune = sub.add_parser(
        "prune",
        help="detach and drop partitions wholly older than retention, and the analysis "
        "lifecycles that outlived the analyses' retention",
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would be dropped")
    prune.set_defaults(handler=_prune)
    stats = sub.add_parser("stats", help="each partition with its range, estimated rows and size")
    stats.set_defaults(handler=_stats)


def _ensure(args: argparse.Namespace, config: Config) -> int:
    results = run_with_connection(
        config.require_database(), partitions.ensure, application_name="pipeline-partitions"
    )
    created = [r for r in results if r.created]
    for r in created:
        print(f"created {r.partition_name}")
    print(f"{len(created)} partitions created, {len(results) - len(created)} already existed")
    return 0


def _prune(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> partitions.PruneResult:
        return await partitions.prune(conn, dry_run=args.dry_run)

    dropped = run_with_connection(
        config.require_database(), work, application_name="pipeline-partitions"
    )
    verb = "would drop" if args.dry_run else "dropped"
    for p in dropped:
        print(f"{verb} {p.partition_name} [{p.range_start:%Y-%m-%d} .. {p.range_end:%Y-%m-%d})")
    if dropped:
        print(f"{len(dropped)} partitions {verb.split()[-1]}")
    if dropped.lifecycle_rows:
        print(
            f"{'would delete' if args.dry_run else 'deleted'} {dropped.lifecycle_rows} "
            "analysis lifecycles older than the analyses' retention"
        )
    if not dropped and not dropped.lifecycle_rows:
        print("nothing to prune")
    return 0


def _stats(args: argparse.Namespace, config: Config) -> int:
    rows = run_with_connection(
        config.require_database(), partitions.stats, application_name="pipeline-partitions"
    )
    print(
        format_table(
            ["table", "partition", "from", "to", "rows (est.)", "size"],
            [
                (
                    p.parent_table,
                    p.partition_name + (" (detach pending)" if p.detach_pending else ""),
                    f"{p.range_start:%Y-%m-%d %H:%M}",
                    f"{p.range_end:%Y-%m-%d %H:%M}",
                    p.estimated_rows,
                    human_bytes(p.total_bytes),
                )
                for p in rows
            ],
        )
    )
    return 0
