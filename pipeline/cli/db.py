"""``pipeline db health``: the database's health, with recommendations, as a cron check.

The checks are :mod:`pipeline.dbhealth`; this module parses the options, opens one
read-only session to ``--database-url`` or the configured database (``DATABASE_URL``, or
the ``PG*`` variables), prints the report and returns its exit code: 0 healthy (warnings
allowed), 1 something needs action (or the database cannot be reached), 2 a usage or
configuration error (bad option, no or refused database settings).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pipeline import dbhealth
from pipeline.cli._common import run_with_connection
from pipeline.config import Config, DatabaseConfig
from pipeline.dbhealth.model import Report
from pipeline.dbhealth.render import FORMATS, render

_HEALTH_EPILOG = """\
checks: partition coverage (partitions ahead, past retention), index usage (scans per
index, unused, duplicate and invalid indexes with their size), cache hit ratios, table
and index bloat (estimate), dead tuples and autovacuum, long-running and idle-in-
transaction sessions, replication lag and slots, top statements (pg_stat_statements).
Thresholds: pipeline/dbhealth/thresholds.py; replication lag warns from
ANALYTICS_MAX_LAG_S. Run it as a login with pg_monitor to see every session (migration
0010 lets pg_monitor read the partition tables). Checking a standby with --database-url
while DATABASE_URL names its primary compares its replay with the primary's WAL position.
Read-only; reads statistics and the catalog, never the tables' data.

exit codes:
  0  healthy: nothing needs action (warnings may be listed)
  1  something needs action (each ACTION line says what to run), or the database
     cannot be reached
  2  usage or configuration error (bad option, no DATABASE_URL, a refused login)
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "db",
        help="database checks: health",
        description="Checks of the PostgreSQL database the pipeline writes to.",
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    health = sub.add_parser(
        "health",
        help="index usage, cache, bloat, vacuum, sessions, replication, partitions, "
        "top statements, with recommendations; exit 1 when something needs action",
        description=(
            "Report the database's health with a concrete recommendation for each problem.\n"
            "Exit 1 when something needs action, so it can run as a cron check."
        ),
        epilog=_HEALTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    health.add_argument(
        "--format", choices=FORMATS, default="table", help="table (default) or json"
    )
    health.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL to check (default: DATABASE_URL, else the PG* variables)",
    )
    health.set_defaults(handler=_health)


def _database(args: argparse.Namespace, config: Config) -> DatabaseConfig:
    """--database-url (with the configured timeouts), else the configured database."""
    if args.database_url:
        if config.database is not None:
            return dataclasses.replace(config.database, url=args.database_url)
        return DatabaseConfig(url=args.database_url)
    return config.require_database()


def _primary(database: DatabaseConfig, config: Config) -> DatabaseConfig | None:
    """The configured primary when the server checked is another one (--database-url,
    perhaps one of its standbys): a standby's lag is then judged against it."""
    if config.database is None or config.database.url == database.url:
        return None
    return config.database


def _health(args: argparse.Namespace, config: Config) -> int:
    database = _database(args, config)

    async def work(conn: Any) -> Report:
        return await dbhealth.run(
            conn,
            database=database.redacted_url,
            replication_lag_warn_s=config.analytics.max_lag_s,
            primary=_primary(database, config),
            primary_timeout_s=config.analytics.check_timeout_s,
        )

    report = run_with_connection(database, work, application_name="pipeline-db-health")
    print(render(report, args.format))
    return report.exit_code
