"""HTTP ingestion: ``pipeline http`` takes events over HTTPS from services without a Kafka
client and hands them to the broker, answering only once they are durable.

Public surface: :func:`serve` (the process) and :func:`build_app` / :class:`Ingest` (the
routes, for embedding and tests). The client-facing contract is ``docs/http.md`` and
``docs/openapi/events-v1.yaml``.

Reading guide, one job per module, in the order a request meets them:

- ``keys``: which API key a request carries, cached (:class:`~pipeline.http.keys.KeyCache`);
- ``body``: the body's events (JSON array or NDJSON);
- ``ratelimit``: the per-key token bucket;
- ``admit``: each event accepted (encoded for its topic) or rejected, with the workers'
  contract code and the organization binding;
- ``publish``: sending and waiting for ``acks=all``; knowing whether the broker answers;
- ``app``: the routes and the answers; ``server``: start-up, serving, graceful shutdown.

Importing this package does no I/O.
"""

from pipeline.http.app import Ingest, build_app
from pipeline.http.server import serve

__all__ = ["Ingest", "build_app", "serve"]
