"""The stream worker, by stage.

- ``batch``       records of one topic with their offsets: what a flush covers.
- ``aggregate``   API calls folded into hourly bucket deltas.
- ``writes``      the SQL that applies a batch: bucket upserts, row inserts.
- ``offsets``     the exactly-once watermark in ``ingest_offsets``.
- ``partitions``  which partitions exist and what retention cuts off (cached per worker).
- ``deadletter``  publishing invalid records to the dead-letter topic.
- ``flush``       one flush = one transaction, with retries and data-error isolation.
- ``app``         the faust app factory: agents, acks, rebalances, timers, web views.
"""
