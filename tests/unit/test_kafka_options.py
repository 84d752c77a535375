"""Producer options and the codec check (no network)."""

from __future__ import annotations

import dataclasses

from pipeline.config import KafkaConfig
from pipeline.kafka import producer_options, require_codecs

KAFKA = KafkaConfig(bootstrap_servers=("k:1",), idempotent_producer=False)


def test_every_producer_gets_acks_all_idempotence_and_the_configured_codec() -> None:
    options = producer_options(KAFKA, max_request_size=1234)
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is False
    assert options["compression_type"] == "zstd"
    assert options["max_request_size"] == 1234
    assert options["bootstrap_servers"] == "k:1"
    plain = producer_options(
        dataclasses.replace(KAFKA, compression_type="none"), max_request_size=1
    )
    assert plain["compression_type"] is None


def test_the_installed_client_reads_every_codec() -> None:
    require_codecs()  # raises ConfigError naming what to install when a codec is missing
