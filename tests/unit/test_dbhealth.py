"""``pipeline db health`` without a database: thresholds, duplicate and unused indexes,
partition coverage, recommendations, rendering and the JSON shape, the command line."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from pipeline import dbhealth
from pipeline.analytics.routing import ReplicaState
from pipeline.cli import build_parser
from pipeline.cli.db import _database, _primary
from pipeline.config import Config, DatabaseConfig
from pipeline.dbhealth import bloat, cache, coverage, indexes, replication, sessions, statements
from pipeline.dbhealth import thresholds as t
from pipeline.dbhealth._text import ident, qualified
from pipeline.dbhealth.model import (
    CheckResult,
    Column,
    Context,
    Details,
    Finding,
    Report,
    Severity,
)
from pipeline.dbhealth.render import TABLE_ROWS, cell, render
from pipeline.dbhealth.vacuum import TableVacuum, table_findings, xid_finding
from pipeline.errors import DatabaseUnavailableError

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
CTX = Context(now=NOW, stats_reset=None)
BTREE_INT = ("btree", "2", "1978", "0", "0", "", "")


def index(name: str, **kw: Any) -> indexes.IndexStat:
    base: dict[str, Any] = dict(
        schema="public", table="events", index=name, scans=0, bytes=8192, partitions=1,
        partitioned=False, primary=False, unique=False, exclusion=False, valid=True,
        constraint=None, signature=BTREE_INT, definition=f"CREATE INDEX {name} ON "
        "public.events USING btree (v)", table_activity=50_000,
    )  # fmt: skip
    base.update(kw)
    if "restore" not in kw:
        base["restore"] = base["definition"] + ";"
    return indexes.IndexStat(**base)


# ---- index usage -----------------------------------------------------------------------


def test_unused_means_never_scanned_enforcing_nothing_on_an_active_table() -> None:
    stats = [
        index("never_scanned", bytes=10),
        index("bigger_never_scanned", bytes=99, signature=("btree", "3")),
        index("scanned", scans=1, signature=("btree", "4")),
        index("pkey", primary=True, unique=True, signature=("btree", "5")),
        index("uniq", unique=True, signature=("btree", "6")),
        index("excl", exclusion=True, signature=("gist", "7")),
        index("quiet_table", table_activity=t.UNUSED_INDEX_MIN_TABLE_ACTIVITY - 1),
        index("invalid", valid=False, signature=("btree", "8")),
    ]
    assert [s.index for s in indexes.find_unused(stats)] == [
        "bigger_never_scanned", "never_scanned",
    ]  # fmt: skip
    assert indexes.find_unused([index("x", table_activity=t.UNUSED_INDEX_MIN_TABLE_ACTIVITY)])


def test_duplicates_are_same_table_keys_and_predicate_keeping_the_constraint() -> None:
    stats = [
        index("events_v", scans=10),
        index("events_v_copy", scans=500),
        index("events_pkey", primary=True, unique=True, constraint="events_pkey"),
        index("other_table_v", table="others"),
        index("partial_v", signature=(*BTREE_INT[:-1], "(v > 0)")),
        index("desc_v", signature=("btree", "2", "1978", "0", "3", "", "")),
        index("invalid_v", valid=False),
    ]
    groups = indexes.find_duplicates(stats)
    assert len(groups) == 1
    keep, others = groups[0]
    assert keep.index == "events_pkey"  # a constraint's index first, then the most scanned
    assert [o.index for o in others] == ["events_v_copy", "events_v"]

    unique_vs_plain = indexes.find_duplicates([index("plain", scans=9), index("uniq", unique=True)])
    assert unique_vs_plain[0][0].index == "uniq"


def test_a_duplicate_is_reported_once_even_when_also_unused() -> None:
    findings, details = indexes.check([index("events_v"), index("events_v_copy")], CTX)
    # Both never scanned: the copy is a duplicate, the one kept is still unused.
    assert [f.what for f in findings] == [
        "public.events_v on events (8.0 KiB) was never scanned",
        "public.events_v_copy (8.0 KiB) duplicates public.events_v on events",
    ]
    assert {f.severity for f in findings} == {Severity.WARN}
    assert [row[0] for row in details.rows] == ["public.events_v", "public.events_v_copy"]


def test_unused_finding_says_why_and_gives_a_migration_with_its_down() -> None:
    findings, _ = indexes.check([index("events_v", bytes=3 * 1024 * 1024)], CTX)
    (f,) = findings
    assert f.severity is Severity.WARN and f.subject == "public.events_v"
    assert "3.0 MiB" in f.what and "50,000" in f.why and "replica" in f.why
    assert f.recommendation.splitlines() == [
        "add a migration: pipeline migrate new drop_events_v",
        "  up (first line: -- pipeline:no-transaction):",
        "    DROP INDEX CONCURRENTLY public.events_v;",
        "  down:",
        "    CREATE INDEX events_v ON public.events USING btree (v);",
    ]


def test_drop_statements_by_kind_of_index() -> None:
    partitioned = index("logs_v", partitioned=True)
    assert indexes.drop_statement(partitioned) == "DROP INDEX public.logs_v;"
    assert "no-transaction" not in indexes.drop_recommendation(partitioned)
    constraint = index("events_key", unique=True, constraint="events_key")
    assert indexes.drop_statement(constraint) == (
        "ALTER TABLE public.events DROP CONSTRAINT events_key;"
    )
    quoted = index("Odd Name", schema="My")
    assert indexes.drop_statement(quoted) == 'DROP INDEX CONCURRENTLY "My"."Odd Name";'


def test_restore_statement_recreates_on_every_partition_or_the_constraint() -> None:
    definition = "CREATE INDEX logs_v ON ONLY public.logs USING btree (v)"
    assert indexes.restore_statement("public", "logs", None, None, definition) == (
        "CREATE INDEX logs_v ON public.logs USING btree (v);"
    )
    assert indexes.restore_statement("public", "t", "t_key", "UNIQUE (a, b)", "ignored") == (
        "ALTER TABLE public.t ADD CONSTRAINT t_key UNIQUE (a, b);"
    )


def test_an_invalid_index_is_rebuilt_concurrently() -> None:
    findings, _ = indexes.check([index("events_v", valid=False)], CTX)
    (f,) = findings
    assert "invalid" in f.what
    assert "DROP INDEX CONCURRENTLY public.events_v;" in f.recommendation
    assert "CREATE INDEX CONCURRENTLY events_v ON public.events" in f.recommendation


def test_table_activity_sums_partitions_into_their_parents_only() -> None:
    # 10 plain table; 20 partitioned (root) with 21, 22 partitions; 22 sub-partitioned
    # into 221 and 222.
    totals = indexes.table_activity(
        [
            (10, [], 500),
            (20, [20], 0),  # a partitioned table appears with no rows of its own
            (21, [21, 20], 7_000),
            (22, [22, 20], 0),
            (221, [221, 22, 20], 30_000),
            (222, [222, 22, 20], 100),
        ]
    )
    assert totals == {10: 500, 20: 37_100, 21: 7_000, 22: 30_100, 221: 30_000, 222: 100}


def test_a_local_index_on_one_partition_is_judged_by_that_partitions_activity() -> None:
    quiet = index("logs_p1_v", table="logs_p1", table_activity=50)
    busy = index("logs_p2_v", table="logs_p2", table_activity=50_000, signature=("btree", "9"))
    assert [s.index for s in indexes.find_unused([quiet, busy])] == ["logs_p2_v"]
    findings, _ = indexes.check([busy], CTX)
    assert findings[0].what.startswith("public.logs_p2_v on logs_p2 ")
    assert "DROP INDEX CONCURRENTLY public.logs_p2_v;" in findings[0].recommendation


def test_healthy_indexes_give_one_ok_finding() -> None:
    findings, _ = indexes.check([index("events_v", scans=3)], CTX)
    assert [f.severity for f in findings] == [Severity.OK]


# ---- partition coverage ----------------------------------------------------------------


def day(n: int) -> datetime:
    return datetime(2026, 11, 22, tzinfo=UTC) + timedelta(days=n)


def days(*offsets: int, expired: tuple[int, ...] = ()) -> list[coverage.Range]:
    return [coverage.Range(f"logs_p{o}", day(o), day(o + 1), o in expired) for o in offsets]


def test_coverage_counts_consecutive_partitions_after_the_current_one() -> None:
    c = coverage.coverage("logs", "day", 7, (day(0), day(1)), days(-1, 0, 1, 2, 3, 5, 6))
    assert c.current_exists and c.ahead == 3 and c.covered_until == day(4)
    [f] = coverage.coverage_findings(c)
    assert f.severity is Severity.WARN and "3 partitions ahead, premake is 7" in f.what


def test_missing_current_or_next_partition_needs_action() -> None:
    gap = coverage.coverage("logs", "day", 7, (day(0), day(1)), days(0, 2, 3))
    assert gap.ahead == 0
    [f] = coverage.coverage_findings(gap)
    assert f.severity is Severity.ACTION
    assert f.what == "logs: no partition for the next day (0 ahead, premake 7)"
    assert f.recommendation.startswith("pipeline partitions ensure")

    none = coverage.coverage("logs", "day", 7, (day(0), day(1)), [])
    assert not none.current_exists and none.covered_until is None
    assert "the current day" in coverage.coverage_findings(none)[0].what

    # premake 0 still needs the current partition and the next one.
    zero = coverage.coverage("logs", "day", 0, (day(0), day(1)), days(0))
    assert coverage.coverage_findings(zero)[0].severity is Severity.ACTION


def test_partitions_past_retention_and_pending_detaches_warn() -> None:
    ranges = days(-20, -19, *range(0, 8), expired=(-20, -19))
    ranges[0] = replace(ranges[0], bytes=1024, detach_pending=True)
    c = coverage.coverage("logs", "day", 7, (day(0), day(1)), ranges)
    findings = coverage.coverage_findings(c)
    assert [f.severity for f in findings] == [Severity.WARN, Severity.WARN]
    assert findings[0].what == "logs: 2 partitions past retention (1.0 KiB), oldest logs_p-20"
    assert "pipeline partitions prune" in findings[0].recommendation
    assert "detach pending for logs_p-20" in findings[1].what


# ---- cache, bloat, vacuum, sessions, replication, statements ---------------------------


def test_cache_ratio_needs_enough_accesses_and_warns_below_the_threshold() -> None:
    assert cache.ratio(100, 10) is None
    assert cache.judge("tables", 5, 5, "128MB").severity is Severity.OK
    assert cache.judge("tables", 99_000, 1_000, "128MB").severity is Severity.OK
    low = cache.judge("tables", 90_000, 10_000, "128MB")
    assert low.severity is Severity.WARN and "90.0 %" in low.what
    assert "shared_buffers (128MB)" in low.why and "ALTER SYSTEM SET" in low.recommendation


def test_bloat_estimates_pages_from_width_and_fillfactor() -> None:
    # (8192 - 24) // (24 + 40 + 4) = 120 rows per page.
    assert bloat.expected_heap_pages(1200, 40, columns=3, has_nulls=False) == 10
    assert bloat.expected_heap_pages(1200, 40, columns=3, has_nulls=False, fillfactor=50) == 20
    # A null bitmap of 9 columns makes the header 32 bytes: 8168 // 76 = 107 rows per page.
    assert bloat.expected_heap_pages(1070, 40, columns=9, has_nulls=True) == 10
    # (8192 - 40) * 0.9 // (16 + 4) = 366 entries per leaf; + 1 inner page + the metapage.
    assert bloat.expected_btree_pages(36_600, 8) == 100 + 1 + 1
    b = bloat.estimate("table", "public.t", "public.t", pages=100, expected=40, block=8192)
    assert b.wasted_bytes == 60 * 8192 and b.ratio == pytest.approx(0.6)
    assert bloat.estimate("index", "i", "t", pages=10, expected=40, block=8192).wasted_bytes == 0


def test_bloat_findings_only_above_the_ratio() -> None:
    big = t.BLOAT_MIN_BYTES
    measured = [
        bloat.Bloat("table", "public.a", "public.a", big, int(big * t.BLOAT_WARN_RATIO)),
        bloat.Bloat("index", "public.a_i", "public.a", big, int(big * 0.4)),
    ]
    findings, details = bloat.check(bloat.Measured(measured))
    assert [f.subject for f in findings] == ["public.a"]
    assert "VACUUM FULL public.a" in findings[0].recommendation
    assert "REINDEX INDEX CONCURRENTLY public.a_i" in bloat.finding(measured[1]).recommendation
    assert len(details.rows) == 2
    [nothing] = bloat.check(bloat.Measured([]))[0]
    assert nothing.severity is Severity.OK and "nothing to estimate" in nothing.what


def test_bloat_that_could_estimate_nothing_warns() -> None:
    # A pg_monitor login: pg_stats hides every column of tables it may not SELECT.
    [hidden], _ = bloat.check(bloat.Measured([], hidden=12))
    assert hidden.severity is Severity.WARN and hidden.subject == "pg_stats"
    assert hidden.what == (
        "12 relations over 64.0 MiB, none could be estimated "
        "(12 with statistics this login cannot see)"
    )
    assert "schema owner" in hidden.recommendation and "not absent" in hidden.why
    [unanalyzed], _ = bloat.check(bloat.Measured([], unanalyzed=1))
    assert unanalyzed.severity is Severity.WARN and "ANALYZE" in unanalyzed.recommendation
    # Some estimated: the check stands, and says what it could not see.
    one = bloat.Bloat("table", "public.a", "public.a", t.BLOAT_MIN_BYTES, 0)
    [partial], _ = bloat.check(bloat.Measured([one], hidden=3))
    assert partial.severity is Severity.OK and "3 not estimated" in partial.what


def table_vacuum(**kw: Any) -> TableVacuum:
    base: dict[str, Any] = dict(
        name="public.t", live=1_000_000, dead=0, changed=0, reltuples=1_000_000.0,
        last_vacuum=NOW - timedelta(hours=1), last_analyze=NOW, autovacuum_enabled=True,
    )  # fmt: skip
    base.update(kw)
    return TableVacuum(**base)


def test_dead_tuples_warn_by_share_or_when_autovacuum_is_stale() -> None:
    def judged(**kw: Any) -> list[Finding]:
        return table_findings(table_vacuum(**kw), now=NOW, av_threshold=50, av_scale=0.2)

    assert judged(dead=100_000) == []  # 9 %, under the trigger of 200,050
    share = judged(live=100_000, dead=30_000)  # 23 %
    assert share[0].severity is Severity.WARN and "30,000 dead rows (23.1 %)" in share[0].what
    assert "VACUUM (ANALYZE, VERBOSE) public.t;" in share[0].recommendation
    stale = judged(dead=250_000, last_vacuum=NOW - t.VACUUM_STALE_AFTER)  # past the trigger
    assert "last vacuumed 24.0 h ago" in stale[0].what
    assert judged(dead=250_000, last_vacuum=None)[0].what.endswith("never vacuumed")
    assert judged(live=10, dead=t.DEAD_TUPLES_MIN - 1) == []  # too few to matter
    never = judged(last_analyze=None, changed=t.ANALYZE_MIN_CHANGES)
    assert never[0].recommendation == "ANALYZE public.t;"


def test_transaction_id_age_thresholds() -> None:
    assert xid_finding(t.XID_AGE_WARN - 1).severity is Severity.OK
    assert xid_finding(t.XID_AGE_WARN).severity is Severity.WARN
    assert xid_finding(t.XID_AGE_ACTION).severity is Severity.ACTION
    # The cluster's oldest database, which may not be the one checked.
    other = xid_finding(t.XID_AGE_ACTION, "reports")
    assert other.what == "transaction-ID age of the cluster is 1,000,000,000 (database reports)"
    assert other.recommendation.startswith("connect to database reports and ")
    assert other.subject == "reports"


def session(**kw: Any) -> sessions.Session:
    base: dict[str, Any] = dict(
        pid=42, login="analyst", application="psql", client="10.0.0.9", state="active",
        waiting_on="", transaction_s=1.0, state_s=1.0, query="SELECT 1",
    )  # fmt: skip
    base.update(kw)
    return sessions.Session(**base)


def test_idle_in_transaction_and_long_transactions_by_threshold() -> None:
    idle = t.IDLE_IN_TRANSACTION_WARN.total_seconds()
    assert sessions.session_finding(session(state="idle in transaction", state_s=idle - 1)) is None
    warn = sessions.session_finding(session(state="idle in transaction", state_s=idle))
    assert warn is not None and warn.severity is Severity.WARN
    assert "SELECT pg_terminate_backend(42);" in warn.recommendation
    assert "idle_in_transaction_session_timeout" in warn.recommendation
    aborted = "idle in transaction (aborted)"
    limit = t.IDLE_IN_TRANSACTION_ACTION.total_seconds()
    action = sessions.session_finding(session(state=aborted, state_s=limit))
    assert action is not None and action.severity is Severity.ACTION

    long_s = t.LONG_TRANSACTION_WARN.total_seconds()
    assert sessions.session_finding(session(transaction_s=long_s - 1)) is None
    long = sessions.session_finding(session(transaction_s=long_s, waiting_on="Lock:relation"))
    assert long is not None and long.severity is Severity.WARN
    assert (
        "waiting on Lock:relation" in long.what and "pg_cancel_backend(42)" in long.recommendation
    )
    assert sessions.session_finding(session(state="idle", transaction_s=None)) is None


def test_idle_in_transaction_is_judged_by_its_transactions_age_too() -> None:
    brief = t.IDLE_IN_TRANSACTION_WARN.total_seconds() - 1
    old = t.LONG_TRANSACTION_ACTION.total_seconds()
    # Idle only a moment between statements of a transaction open for an hour.
    found = sessions.session_finding(
        session(state="idle in transaction", state_s=brief, transaction_s=old)
    )
    assert found is not None and found.severity is Severity.ACTION
    assert "in a transaction open for 60 min" in found.what
    warn = sessions.session_finding(
        session(
            state="idle in transaction",
            state_s=brief,
            transaction_s=t.LONG_TRANSACTION_WARN.total_seconds(),
        )
    )
    assert warn is not None and warn.severity is Severity.WARN
    young = session(state="idle in transaction", state_s=brief, transaction_s=brief)
    assert sessions.session_finding(young) is None


@pytest.mark.parametrize(
    ("login", "quoted"),
    [("analyst", "analyst"), ("user", '"user"'), ("Alice", '"Alice"'), ('a"b', '"a""b"'),
     ("order", '"order"'), ("name", "name")],
)  # fmt: skip
def test_recommended_sql_quotes_logins_as_quote_ident_does(login: str, quoted: str) -> None:
    long = t.LONG_TRANSACTION_WARN.total_seconds()
    idle = sessions.session_finding(session(login=login, state="idle in transaction", state_s=long))
    active = sessions.session_finding(session(login=login, transaction_s=long))
    assert idle is not None and active is not None
    assert f"ALTER ROLE {quoted} SET idle_in_transaction_session_timeout" in idle.recommendation
    assert f"ALTER ROLE {quoted} SET statement_timeout" in active.recommendation


def test_ident_quotes_reserved_words_and_anything_not_plain() -> None:
    assert [ident(n) for n in ("events", "user", "select", "between", "int", "abort")] == [
        "events", '"user"', '"select"', '"between"', '"int"', "abort",
    ]  # fmt: skip
    assert qualified("My Schema", "t") == '"My Schema".t'


def test_hidden_sessions_are_a_warning() -> None:
    findings, _ = sessions.check([], privileged=False)
    assert [f.subject for f in findings] == ["pg_read_all_stats"]
    assert sessions.check([], privileged=True)[0][0].severity is Severity.OK


def test_replication_lag_and_slots() -> None:
    assert replication.lag_severity(t.REPLICATION_LAG_WARN_S - 0.1) is Severity.OK
    assert replication.lag_severity(t.REPLICATION_LAG_WARN_S) is Severity.WARN
    assert replication.lag_severity(t.REPLICATION_LAG_ACTION_S) is Severity.ACTION
    # The warning threshold follows ANALYTICS_MAX_LAG_S.
    assert replication.lag_severity(2.0, warn_s=1.5) is Severity.WARN
    assert replication.lag_severity(9.0, warn_s=30.0) is Severity.OK
    standby = dict(name="replica1", client="10.0.0.2", state="streaming", lag_s=0.0,
                   behind_bytes=0, sync_state="async")  # fmt: skip
    assert replication.standby_finding(standby).severity is Severity.OK
    assert replication.standby_finding({**standby, "state": "catchup"}).severity is Severity.WARN
    slow = replication.standby_finding({**standby, "lag_s": 2.0}, warn_s=1.5)
    assert slow.severity is Severity.WARN and "1.5 s or more behind" in slow.why
    slot = dict(name="old", type="physical", active=False, retained=t.SLOT_RETAINED_ACTION_BYTES)
    found = replication.slot_finding(slot)
    assert found is not None and found.severity is Severity.ACTION
    assert "SELECT pg_drop_replication_slot('old');" in found.recommendation
    assert replication.slot_finding({**slot, "active": True}) is None


def standby(**kw: Any) -> ReplicaState:
    base: dict[str, Any] = dict(
        in_recovery=True, receiving=True, pending_bytes=0.0, replay_paused=False,
        replay_age_s=600.0, behind_primary_bytes=None, primary_lsn=None,
    )  # fmt: skip
    base.update(kw)
    return ReplicaState(**base)


def severities(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.subject, f.severity) for f in findings]


def test_a_standby_judges_itself_as_the_routing_does() -> None:
    # At the primary's position: lag 0 although its last commit is 10 minutes old.
    [ok] = replication.self_findings(standby(behind_primary_bytes=0.0, primary_lsn="0/5"))
    assert ok.severity is Severity.OK and "0 s behind its primary" in ok.what
    # Replayed all it received but behind the primary (a backlog): the commit age counts.
    [far] = replication.self_findings(standby(behind_primary_bytes=1e6, primary_lsn="0/5"))
    assert far.severity is Severity.ACTION and "10 min behind" in far.what
    assert "1000000 bytes behind the primary" in far.what
    # Without the primary: the weaker rule, receive <= replay (a restart can leave the
    # receive position below replay) is caught up.
    [alone] = replication.self_findings(standby(pending_bytes=-16.0))
    assert alone.severity is Severity.OK and "primary position unknown" in alone.what
    # The routing's threshold: ANALYTICS_MAX_LAG_S.
    behind = standby(pending_bytes=4096.0, replay_age_s=2.0)
    assert severities(replication.self_findings(behind, warn_s=1.0)) == [("replay", Severity.WARN)]
    assert severities(replication.self_findings(behind, warn_s=5.0)) == [("replay", Severity.OK)]


def test_unknown_lag_and_a_missing_wal_receiver_warn_paused_replay_needs_action() -> None:
    unknown = replication.self_findings(standby(pending_bytes=4096.0, replay_age_s=None))
    assert severities(unknown) == [("replay", Severity.WARN)]
    assert "replay lag unknown" in unknown[0].what
    assert "--database-url <this standby>" in unknown[0].recommendation
    no_receiver = replication.self_findings(
        standby(receiving=False, pending_bytes=None, replay_age_s=1.0)
    )
    assert severities(no_receiver) == [("replay", Severity.OK), ("wal_receiver", Severity.WARN)]
    assert "primary_conninfo" in no_receiver[1].recommendation
    neither = replication.self_findings(
        standby(receiving=False, pending_bytes=None, replay_age_s=None)
    )
    assert severities(neither) == [("replay", Severity.WARN), ("wal_receiver", Severity.WARN)]
    paused = replication.self_findings(
        standby(replay_paused=True, pending_bytes=4096.0, replay_age_s=0.5)
    )
    assert severities(paused) == [("replay", Severity.ACTION)]
    assert "pg_wal_replay_resume()" in paused[0].recommendation


def test_how_to_enable_pg_stat_statements() -> None:
    text = statements.enable_recommendation("auto_explain", library_loaded=False)
    assert "shared_preload_libraries = 'auto_explain, pg_stat_statements'" in text
    assert "restart" in text and "CREATE EXTENSION pg_stat_statements;" in text
    assert statements.enable_recommendation("", library_loaded=True).startswith(
        "CREATE EXTENSION pg_stat_statements;"
    )
    missing = statements.unavailable("", library_loaded=False, extension=False)
    assert missing.severity is Severity.WARN and missing.what == "pg_stat_statements is not enabled"
    assert "= 'pg_stat_statements'" in missing.recommendation


def test_frequent_slow_statements_are_findings() -> None:
    row = dict(queryid=7, calls=t.SLOW_STATEMENT_MIN_CALLS, mean_ms=t.SLOW_STATEMENT_MEAN_MS,
               query="SELECT * FROM ai_analysis")  # fmt: skip
    assert [f.subject for f in statements.slow_findings([row])] == ["7"]
    assert statements.slow_findings([{**row, "calls": 1}]) == []


# ---- the report, its rendering and its JSON --------------------------------------------


def report(*checks: CheckResult) -> Report:
    return Report("postgresql://u@db/events", "16.4", NOW, checks)


ACTION = Finding(
    Severity.ACTION, "logs: no partition", "why it matters", "pipeline partitions ensure", "logs"
)
WARN = Finding(Severity.WARN, "index unused", "costs writes", "DROP INDEX x;\nsecond line")
OK = Finding(Severity.OK, "all good")
DETAILS = Details(
    (Column("index"), Column("size", "bytes"), Column("ratio", "ratio"), Column("at", "time")),
    (("public.x", 2048, 0.5, NOW), ("public.y", 0, None, None)),
    title="indexes",
)


def test_exit_code_is_one_only_when_something_needs_action() -> None:
    assert report(CheckResult("a", "A", (OK, WARN))).exit_code == 0
    assert report(CheckResult("a", "A", (WARN,)), CheckResult("b", "B", (ACTION,))).exit_code == 1
    assert report().exit_code == 0


def test_json_shape() -> None:
    r = report(CheckResult("partitions", "Partition coverage", (ACTION, OK), (DETAILS,)))
    data = json.loads(render(r, "json"))
    assert set(data) == {
        "database", "server_version", "checked_at", "severity", "exit_code", "counts", "checks",
    }  # fmt: skip
    assert data["severity"] == "action" and data["exit_code"] == 1
    assert data["counts"] == {"ok": 1, "warn": 0, "action": 1}
    assert data["checked_at"] == "2026-11-22T10:30:00+00:00"
    (check,) = data["checks"]
    assert check["name"] == "partitions" and check["severity"] == "action"
    assert check["findings"][0] == {
        "severity": "action", "subject": "logs", "what": "logs: no partition",
        "why": "why it matters", "recommendation": "pipeline partitions ensure",
    }  # fmt: skip
    assert check["details"][0]["rows"][0] == {
        "index": "public.x", "size": 2048, "ratio": 0.5, "at": "2026-11-22T10:30:00+00:00",
    }  # fmt: skip


def test_table_rendering() -> None:
    r = report(CheckResult("indexes", "Index usage", (WARN,), (DETAILS,)))
    text = render(r, "table")
    lines = text.splitlines()
    assert lines[0] == (
        "Database health of postgresql://u@db/events (PostgreSQL 16.4) at 2026-11-22 10:30 UTC"
    )
    assert "== Index usage: WARN" in lines
    assert "  WARN  index unused" in lines
    assert "        why: costs writes" in lines
    assert "        do:  DROP INDEX x;" in lines and "             second line" in lines
    assert any("public.x" in line and "2.0 KiB" in line and "50.0 %" in line for line in lines)
    assert lines[-1] == "0 need action, 1 warnings, 0 ok (exit 0)"


def test_findings_sharing_why_and_do_print_them_once() -> None:
    second = replace(ACTION, what="api: no partition", subject="api")
    text = render(report(CheckResult("partitions", "P", (ACTION, second))), "table")
    assert text.count("why it matters") == 1
    assert text.index("logs: no partition") < text.index("api: no partition") < text.index("why")


def test_long_detail_tables_are_cut_in_the_table_output_only() -> None:
    many = Details((Column("n", "count"),), tuple((i,) for i in range(TABLE_ROWS + 5)))
    r = report(CheckResult("x", "X", (OK,), (many,)))
    assert "... 5 more (--format json lists them all)" in render(r, "table")
    assert len(json.loads(render(r, "json"))["checks"][0]["details"][0]["rows"]) == TABLE_ROWS + 5


def test_cells() -> None:
    assert cell(Column("s", "seconds"), 90.0) == "90 s"
    assert cell(Column("s", "seconds"), 4000.0) == "67 min"
    assert cell(Column("n", "count"), 1234567) == "1,234,567"
    assert cell(Column("b", "bytes"), 3 * 1024**3) == "3.0 GiB"
    assert cell(Column("x"), None) == "-"
    assert Column("size_bytes", "bytes", "size").header == "size"
    assert Column("covered_until", "time").header == "covered until"
    with pytest.raises(ValueError, match="unknown column kind"):
        Column("x", "nope")
    with pytest.raises(ValueError, match="unknown format"):
        render(report(), "csv")


# ---- running checks --------------------------------------------------------------------


class FakeConnection:
    async def execute(self, sql: str) -> None:
        return None

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any]:
        return {
            "now": NOW, "stats_reset": None, "block_size": 8192, "server_version": "16.4",
            "login": "monitor", "monitor": False,
        }  # fmt: skip


def denied_error() -> Exception:
    error: Exception = asyncpg.exceptions.InsufficientPrivilegeError("permission denied for x")
    error.sqlstate = "42501"  # type: ignore[attr-defined]
    return error


def test_a_check_failing_on_the_server_becomes_an_action_finding() -> None:
    async def denied(conn: Any, ctx: Context) -> CheckResult:
        raise denied_error()

    async def broken(conn: Any, ctx: Context) -> CheckResult:
        error = asyncpg.exceptions.UndefinedTableError("relation x does not exist")
        error.sqlstate = "42P01"
        raise error

    async def fine(conn: Any, ctx: Context) -> CheckResult:
        return CheckResult("fine", "Fine", (OK,))

    checks = (("denied", "Denied", denied), ("broken", "Broken", broken), ("fine", "Fine", fine))
    r = asyncio.run(dbhealth.run(FakeConnection(), database="db", checks=checks))
    assert [c.severity for c in r.checks] == [Severity.ACTION, Severity.ACTION, Severity.OK]
    assert "permission denied" in r.checks[0].findings[0].what
    # A missing privilege: the exact GRANT for this login.
    assert r.checks[0].findings[0].recommendation == "as a superuser: GRANT pg_monitor TO monitor;"
    assert "pipeline migrate up" in r.checks[1].findings[0].recommendation
    assert r.exit_code == 1


def test_a_missing_privilege_names_the_exact_grant() -> None:
    monitor = Context(now=NOW, stats_reset=None, login="monitor", monitor=True)
    text = dbhealth.grant_recommendation(coverage.NAME, monitor)
    assert text.splitlines() == [
        "as the schema owner (a member of pipeline_migrator): "
        "GRANT SELECT ON partition_policies, partition_ranges TO pg_monitor;",
        "  (migration 0010 grants exactly this: pipeline migrate up)",
    ]
    outsider = replace(monitor, login="user", monitor=False)
    assert dbhealth.grant_recommendation(coverage.NAME, outsider).endswith(
        'and, as a superuser: GRANT pg_monitor TO "user";'
    )
    assert "already has pg_monitor" in dbhealth.grant_recommendation("sessions", monitor)


def test_a_lost_connection_ends_the_run() -> None:
    async def lost(conn: Any, ctx: Context) -> CheckResult:
        raise ConnectionResetError("connection reset")

    with pytest.raises(DatabaseUnavailableError):
        asyncio.run(dbhealth.run(FakeConnection(), database="db", checks=(("x", "X", lost),)))


def test_every_check_is_registered_in_report_order() -> None:
    assert [name for name, _, _ in dbhealth.CHECKS] == [
        "partitions", "indexes", "cache", "bloat", "vacuum", "sessions", "replication",
        "statements",
    ]  # fmt: skip


# ---- command line ----------------------------------------------------------------------


def test_command_line_options_and_database_choice() -> None:
    args = build_parser().parse_args(["db", "health", "--format", "json"])
    assert args.format == "json" and args.database_url is None
    configured = Config(database=DatabaseConfig(url="postgresql://a@h/db", statement_timeout_ms=5))
    assert _database(args, configured).url == "postgresql://a@h/db"
    args = build_parser().parse_args(["db", "health", "--database-url", "postgresql://b@h/x"])
    chosen = _database(args, configured)
    assert chosen.url == "postgresql://b@h/x" and chosen.statement_timeout_ms == 5
    assert _database(args, Config()).url == "postgresql://b@h/x"
    # Another server than DATABASE_URL (a standby?) is compared with it; the same is not.
    assert _primary(chosen, configured) == configured.database
    assert _primary(_database(build_parser().parse_args(["db", "health"]), configured),
                    configured) is None  # fmt: skip
    assert _primary(chosen, Config()) is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["db", "health", "--format", "csv"])


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["db", "health", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "1  something needs action" in out
    assert "2  usage or configuration error" in out
