"""Every threshold of ``pipeline db health``, with why it has the value it has.

``warn`` means worth a look (the command still exits 0); ``action`` means someone must act
(exit 1, so a cron check fails). Change a value here, not in the checks.
"""

from __future__ import annotations

from datetime import timedelta

# ---- index usage -----------------------------------------------------------------------
# An index never scanned counts as unused only on a table that saw at least this many rows
# written plus scans (summed over its partitions) since the statistics were reset. Below
# that, zero scans says nothing yet (a fresh database, statistics just reset, a table only
# a monthly job reads), and an index costs mostly on a table that is written to.
UNUSED_INDEX_MIN_TABLE_ACTIVITY = 10_000

# ---- cache -----------------------------------------------------------------------------
# Below this share of block reads served from shared_buffers, reads go to the OS cache or
# the disk often enough to show in latency. Not 99 % (the OLTP rule of thumb): analysts
# legitimately read old partitions that are not in memory.
CACHE_HIT_RATIO_WARN = 0.95
# A ratio over fewer block accesses than this (80 MB of 8 KiB blocks) is dominated by
# the catalog reads right after a start or a statistics reset: not judged.
CACHE_MIN_BLOCKS = 10_000

# ---- bloat -----------------------------------------------------------------------------
# Only relations at least this big are estimated: below it, rewriting gains little and
# the estimate's error (a few pages, see pipeline.dbhealth.bloat) dominates.
BLOAT_MIN_BYTES = 64 * 1024 * 1024
# Warn when the estimated waste is at least this share of the relation. The estimate is
# off by up to ~20-30 % of the size (alignment, TOAST, deduplicated index entries), so
# only a ratio this high is clearly bloat.
BLOAT_WARN_RATIO = 0.5

# ---- vacuum ----------------------------------------------------------------------------
# Dead rows below this count are not worth reporting whatever their share.
DEAD_TUPLES_MIN = 10_000
# autovacuum's default trigger is 50 rows + 20 % of the table: with more dead rows than
# this share, autovacuum is behind or cannot remove them (a long transaction, a slot).
DEAD_TUPLE_RATIO_WARN = 0.2
# A table past its autovacuum trigger that has not been vacuumed for this long: autovacuum
# is not keeping up (too few workers, a cost limit too low, or it keeps being cancelled).
VACUUM_STALE_AFTER = timedelta(days=1)
# A table changed this many rows and was never analyzed: the planner guesses its size.
ANALYZE_MIN_CHANGES = 10_000
# Transaction-ID age: the oldest age(datfrozenxid) of any database of the cluster (the
# transaction-ID counter is cluster-wide, so the worst database decides when writes stop
# everywhere). autovacuum forces a freeze at
# autovacuum_freeze_max_age (200 million by default); above 500 million those vacuums are
# not finishing. PostgreSQL stops accepting writes near 2.1 billion: at 1 billion, act.
XID_AGE_WARN = 500_000_000
XID_AGE_ACTION = 1_000_000_000

# ---- sessions --------------------------------------------------------------------------
# The pipeline's own statements are bounded by DATABASE_STATEMENT_TIMEOUT_MS (60 s); an
# active transaction older than 5 minutes is someone else's, and past an hour it holds
# back vacuum (its snapshot) long enough to bloat the busy tables.
LONG_TRANSACTION_WARN = timedelta(minutes=5)
LONG_TRANSACTION_ACTION = timedelta(hours=1)
# A session idle inside a transaction holds its locks and its snapshot while doing
# nothing: partition creation and DETACH wait behind its locks. One minute is already
# unusual for a client; ten minutes is a leaked transaction. Its transaction's age is judged
# too, by the LONG_TRANSACTION thresholds: a client that pauses briefly between statements
# of a transaction open for hours holds the same snapshot.
IDLE_IN_TRANSACTION_WARN = timedelta(minutes=1)
IDLE_IN_TRANSACTION_ACTION = timedelta(minutes=10)

# ---- replication -----------------------------------------------------------------------
# The lag from which analytics reads leave a replica: `pipeline db health` passes
# ANALYTICS_MAX_LAG_S from the configuration (Context.replication_lag_warn_s); this is its
# default, used when no configuration is given.
REPLICATION_LAG_WARN_S = 5.0
# Five minutes behind: the replica is not keeping up (or is stuck), not merely busy.
REPLICATION_LAG_ACTION_S = 300.0
# An inactive replication slot keeps every WAL segment since its consumer left; past
# 1 GiB it is filling the primary's disk, which ends in an outage.
SLOT_RETAINED_ACTION_BYTES = 1024 * 1024 * 1024

# ---- statements ------------------------------------------------------------------------
# How many statements the top-by-total-time list shows.
STATEMENTS_TOP_N = 10
# A statement averaging a second or more, run at least 100 times: where an index or a
# rewrite pays. Rare slow ones (reports, maintenance) are expected.
SLOW_STATEMENT_MEAN_MS = 1000.0
SLOW_STATEMENT_MIN_CALLS = 100
