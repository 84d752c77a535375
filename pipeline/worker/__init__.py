"""The stream worker, by stage.

- ``source``      consume: the group's aiokafka consumer; rebalances; one partition's problems.
- ``positions``   where each assigned partition starts: PostgreSQL's watermark.
- ``undecodable`` record batches the Kafka client cannot decode, and how to skip one.
- ``batch``       decode/validate: records of one topic with their offsets.
- ``ingest``      batch: one topic's pending batch, flush triggers, one flush in flight.
- ``engine``      the loop that ties the stages together; backpressure and revocation.
- ``flush``       write: one flush with retries, dead letters and partition checks.
- ``retry``       the backoff, and which errors stall a flush instead of ending the worker.
- ``transaction`` one flush's transaction: lock the watermark, skip, write, advance.
- ``aggregate``   API calls folded into hourly bucket deltas.
- ``metrics_aggregate`` performance-metric samples folded into hourly series deltas.
- ``writes``      staging tables and the shape of a kind's writer (SQL: ``pipeline.kinds``).
- ``offsets``     the exactly-once watermark in ``ingest_offsets``.
- ``partitions``  which partitions exist and what retention cuts off (cached per worker).
- ``deadletter``  publishing invalid records to the dead-letter topic.
- ``runtime``     what one worker process holds; leadership for the group-wide timers.
- ``app``         the faust app (web views, timers) and the ingest service.
- ``process``     running a worker: exit codes, the shutdown bound, GC and event loop.
"""
