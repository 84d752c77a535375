"""Event-ingestion pipeline: Kafka events into time-partitioned PostgreSQL tables.

Reading guide (one job per module, grouped by pipeline stage):

- ``pipeline.config``      the frozen configuration tree, built from the environment once.
- ``pipeline.errors``      the exception hierarchy and the one place asyncpg errors are classified.
- ``pipeline.logs``        log output: text, or one JSON object per line.
- ``pipeline.kafka``       Kafka client options, codecs, topic checks, batch headers.
- ``pipeline.startup``     waiting for PostgreSQL and the broker at start-up, bounded.
- ``pipeline.contract``    the event wire contract: typed events, validation, reasons.
- ``pipeline.kinds``       each event kind declared once: topic, contract, writer, tables.
- ``pipeline.worker``      the stream worker, stage by stage (its own reading guide).
- ``pipeline.db``          connecting to PostgreSQL with the configured settings.
- ``pipeline.embedded``    a Tansu broker and a PostgreSQL 16 started from PyPI wheels.
- ``pipeline.migrations``  plain-SQL migrations: discovery, checksums, the runner.
- ``pipeline.maintenance`` partition maintenance: ensure ahead, prune, stats.
- ``pipeline.dbhealth``    database health checks and their report (``pipeline db health``).
- ``pipeline.importer``    ``pipeline import``: files into the pipeline, resumable, verified.
- ``pipeline.apikeys``     API keys: created, listed, revoked, checked (SHA-256 stored only).
- ``pipeline.http``        ``pipeline http``: events over HTTP, durable before the answer.
- ``pipeline.cli``         the ``pipeline`` command and its subcommands.

Nothing here does I/O at import time and no module reads ``os.environ`` except
``pipeline.config.Config.from_env``, called by the entry point.
"""

__version__ = "0.1.0"
