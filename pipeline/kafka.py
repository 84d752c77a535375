"""Kafka plumbing shared by the producer, the worker and the tools.

:func:`client_options` turns :class:`~pipeline.config.KafkaConfig` into aiokafka keyword
arguments (TLS and SASL included); :func:`ensure_topics` creates the pipeline's topics if
they are missing. Creating topics explicitly matters: a broker that auto-creates them picks
its own partition count (Tansu: 4), which caps how many workers can share the load.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.config import KafkaConfig

log = logging.getLogger(__name__)


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap,
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=config.ssl_cafile)
        if config.ssl_certfile:
            context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
        options["ssl_context"] = context
    if config.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = config.sasl_password
    return options


async def ensure_topics(
    config: KafkaConfig, names: Iterable[str], *, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create the topics in ``names`` that do not exist yet; return the ones created.

    Existing topics are left as they are (their partition count is not changed).
    """
    admin = AIOKafkaAdminClient(**client_options(config))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        created = []
        for name in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name, num_partitions=partitions, replication_factor=replication_factor
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # created by another process meanwhile
        if created:
            log.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        await admin.close()
