"""``pipeline migrate up|down|status|verify|new``: the plain-SQL migration runner."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli._common import format_table, operator_name, run_with_connection
from pipeline.config import Config
from pipeline.migrations.files import Migration, new_migration
from pipeline.migrations.runner import MigrationRunner


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "migrate",
        help="apply, roll back and check the SQL migrations",
        description=(
            "Plain-SQL migrations from the migrations directory (PIPELINE_MIGRATIONS_DIR, "
            "default sql/migrations). Concurrent runners serialise on an advisory lock."
        ),
    )
    sub = parser.add_subparsers(dest="migrate_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="apply pending migrations")
    up.add_argument("--to", type=int, metavar="N", help="apply only migrations numbered <= N")
    up.add_argument("--dry-run", action="store_true", help="print what would run; change nothing")
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="roll back applied migrations (default: the newest one)")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--to", type=int, metavar="N", help="roll back every migration above N")
    which.add_argument("--steps", type=int, metavar="N", help="roll back the newest N migrations")
    down.add_argument("--dry-run", action="store_true", help="print what would run")
    down.set_defaults(handler=_down)

    status = sub.add_parser("status", help="list migrations and whether each is applied")
    status.set_defaults(handler=_status)

    verify = sub.add_parser(
        "verify", help="check applied migrations against their files (exit 1 on drift)"
    )
    verify.set_defaults(handler=_verify)

    new = sub.add_parser("new", help="create the next-numbered empty up/down pair")
    new.add_argument("name", help="lower-case name with underscores, e.g. add_region_index")
    new.set_defaults(handler=_new)


def _runner(conn: Any, config: Config) -> MigrationRunner:
    return MigrationRunner(
        conn,
        config.migrations.directory,
        applied_by=operator_name(),
        lock_timeout_s=config.migrations.lock_timeout_s,
        report=print,
    )


def _print_plan(plan: list[Migration], verb: str, direction: str) -> None:
    if not plan:
        print(f"nothing to {verb}")
        return
    for m in plan:
        script = m.up if direction == "up" else m.down
        mode = (
            "one transaction" if script.in_transaction else "no transaction, statement by statement"
        )
        print(f"would {verb} {m.label} ({mode}): {script.path}")


def _up(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> list[Migration]:
        return await _runner(conn, config).up(to=args.to, dry_run=args.dry_run)

    plan = run_with_connection(config.require_database(), work, application_name="pipeline-migrate")
    if args.dry_run:
        _print_plan(plan, "apply", "up")
    elif not plan:
        print("schema is up to date")
    return 0


def _down(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> list[Migration]:
        return await _runner(conn, config).down(to=args.to, steps=args.steps, dry_run=args.dry_run)

    plan = run_with_connection(config.require_database(), work, application_name="pipeline-migrate")
    if args.dry_run:
        _print_plan(plan, "roll back", "down")
    elif not plan:
        print("nothing to roll back")
    return 0


def _status(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> Any:
        return await _runner(conn, config).status()

    rows = run_with_connection(config.require_database(), work, application_name="pipeline-migrate")
    print(
        format_table(
            ["version", "name", "state", "applied_at", "applied_by", "ms"],
            [
                (
                    f"{r.version:04d}",
                    r.name,
                    r.state,
                    r.applied and f"{r.applied.applied_at:%Y-%m-%d %H:%M:%S}",
                    r.applied and r.applied.applied_by,
                    r.applied and r.applied.duration_ms,
                )
                for r in rows
            ],
        )
    )
    return 1 if any(r.state not in ("applied", "pending") for r in rows) else 0


def _verify(args: argparse.Namespace, config: Config) -> int:
    async def work(conn: Any) -> Any:
        return await _runner(conn, config).verify()

    problems = run_with_connection(
        config.require_database(), work, application_name="pipeline-migrate"
    )
    for p in problems:
        print(f"DRIFT {p.message}")
    if problems:
        print(
            f"{len(problems)} problem(s): `migrate up` and `migrate down` refuse to run until "
            "the files match the history"
        )
        return 1
    print("applied migrations match their files")
    return 0


def _new(args: argparse.Namespace, config: Config) -> int:
    up, down = new_migration(config.migrations.directory, args.name)
    print(f"created {up}\ncreated {down}")
    return 0
