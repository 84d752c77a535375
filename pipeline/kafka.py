"""Kafka plumbing shared by the producer, the worker and the tools.

:func:`client_options` turns :class:`~pipeline.config.KafkaConfig` into aiokafka keyword
arguments (TLS and SASL included); :func:`producer_options` adds what every producer of
ours shares (acks=all, idempotence, compression); :func:`require_codecs` fails early, with
what to install, when the client cannot read every codec Kafka defines (a record from a
Go or Java service is often snappy, lz4 or zstd); :func:`ensure_topics` creates the
pipeline's topics if they are missing; :func:`batch_extent` reads where the record batch
holding an offset starts and ends, from its header, without decoding it (for a batch no
client can decode). Creating topics explicitly matters: a broker that
auto-creates them picks its own partition count (Tansu: 4), which caps how many workers
can share the load.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from pipeline.config import KafkaConfig
from pipeline.errors import BrokerUnreachableError, ConfigError

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


def producer_options(config: KafkaConfig, *, max_request_size: int) -> dict[str, Any]:
    """Keyword arguments for an ``AIOKafkaProducer``: :func:`client_options`, acks=all,
    idempotence as configured, ``KAFKA_COMPRESSION_TYPE``, a short linger and
    ``max_request_size`` (the largest record this producer may send, plus framing)."""
    codec = config.compression_type
    return {
        **client_options(config),
        "acks": "all",
        "enable_idempotence": config.idempotent_producer,
        "compression_type": None if codec == "none" else codec,
        "linger_ms": 5,
        "max_request_size": max_request_size,
    }


def require_codecs() -> None:
    """Raise :class:`ConfigError` unless aiokafka can decode gzip, snappy, lz4 and zstd.

    Without them a consumer crashes on the first compressed batch a foreign client wrote.
    """
    from aiokafka import codec

    missing = [
        name
        for name, present in (
            ("gzip", codec.has_gzip()),
            ("snappy", codec.has_snappy()),
            ("lz4", codec.has_lz4()),
            ("zstd", codec.has_zstd()),
        )
        if not present
    ]
    if missing:
        raise ConfigError(
            f"the Kafka client cannot decode {', '.join(missing)}-compressed records: "
            "install the codecs with `pip install 'aiokafka[snappy,lz4,zstd]'` (they come "
            "with the event-pipeline package; the environment is incomplete)"
        )


async def _require_resolvable(config: KafkaConfig) -> None:
    """Raise :class:`ConfigError` when no bootstrap host name resolves (a typo does not
    fix itself; a broker that is down is retried instead)."""
    loop = asyncio.get_running_loop()
    failures = []
    for server in config.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            await loop.getaddrinfo(host.strip("[]"), int(port))
            return
        except socket.gaierror as exc:
            failures.append(f"{host}: {exc.strerror}")
    raise ConfigError(
        f"no host of KAFKA_BOOTSTRAP_SERVERS resolves ({'; '.join(failures)}); check it"
    )


async def check_topics(config: KafkaConfig, settings: Mapping[str, str]) -> None:
    """Make sure every topic of ``settings`` (topic -> the variable that names it) exists.

    Raises :class:`~pipeline.errors.BrokerUnreachableError` (retriable) when the broker
    cannot be asked, and :class:`~pipeline.errors.ConfigError` naming the topic, the
    broker and the variable when a topic is missing or the broker refuses this client.
    """
    await _require_resolvable(config)
    admin = AIOKafkaAdminClient(**client_options(config))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except KafkaError as exc:
        if getattr(exc, "retriable", False) or isinstance(exc, KafkaConnectionError):
            raise BrokerUnreachableError(
                f"cannot reach the Kafka broker at {config.bootstrap} ({exc!r}); is it "
                "running, and is KAFKA_BOOTSTRAP_SERVERS right?"
            ) from exc
        raise ConfigError(
            f"the Kafka broker at {config.bootstrap} refused this client ({exc!r}); check "
            "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_*"
        ) from exc
    except OSError as exc:
        raise BrokerUnreachableError(
            f"cannot reach the Kafka broker at {config.bootstrap} ({exc!r}); is it running, "
            "and is KAFKA_BOOTSTRAP_SERVERS right?"
        ) from exc
    finally:
        await admin.close()
    for topic, setting in settings.items():
        if topic not in existing:
            raise ConfigError(
                f"topic {topic!r} does not exist on the broker at {config.bootstrap}: create "
                f"it (docs/operations.md, 'Deploying') or set {setting} to the right name"
            )


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


_CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@dataclass(frozen=True)
class BatchExtent:
    """The offsets and codec of one record batch, read from its header."""

    first_offset: int
    last_offset: int
    codec: str

    @property
    def records(self) -> int:
        return self.last_offset - self.first_offset + 1


async def batch_extent(
    config: KafkaConfig, topic: str, partition: int, offset: int, *, timeout_s: float = 10.0
) -> BatchExtent | None:
    """The record batch of ``topic[partition]`` that holds ``offset``, from its header.

    Fetches raw bytes with its own short-lived client and decodes nothing but the batch
    headers, so it works for batches a consumer cannot read (corrupt, unknown codec).
    Returns None when the broker returns no such batch or cannot be asked in
    ``timeout_s``; never raises for broker errors.
    """
    client = AIOKafkaClient(**client_options(config))
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            tp = TopicPartition(topic, partition)
            node = client.cluster.leader_for_partition(tp)
            if node is None or node < 0:
                await client.force_metadata_update()
                node = client.cluster.leader_for_partition(tp)
            if node is None or node < 0:
                return None
            request = FetchRequest(
                max_wait_time=100,
                min_bytes=1,
                max_bytes=1 << 20,
                isolation_level=0,
                topics=[(topic, [(partition, offset, 1 << 20)])],
            )
            response = await client.send(node, request)
        for _name, parts in response.topics:
            for part in parts:
                records = MemoryRecords(part[-1]) if part[-1] else None
                while records is not None and records.has_next():
                    batch = records.next_batch()
                    if batch is not None and batch.next_offset > offset:
                        codec = _CODECS.get(batch.compression_type, str(batch.compression_type))
                        return BatchExtent(batch.base_offset, batch.next_offset - 1, codec)
        return None
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning(
            "could not read the batch header at %s[%d] %d: %r", topic, partition, offset, exc
        )
        return None
    finally:
        await client.close()
