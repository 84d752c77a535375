"""EventProducer checks everything about an event before buffering it (no broker needed).

The producers here are never started: an invalid event must fail on validation, before
the producer even looks at its own state, so nothing is buffered and nothing is sent.
"""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import KafkaConfig, TopicsConfig
from pipeline.contract import Analysis, ApiCall, ContractError, EventKind, Reason, SystemLog
from pipeline.errors import PipelineError
from pipeline.producer import (
    BrokerUnavailableError,
    DeliveryError,
    EventProducer,
    EventTooLargeError,
    ProducerClosedError,
    TransientDeliveryError,
    topic_for,
)
from pipeline.producer.errors import delivery_error

NOW_MS = 1_790_000_000_000
KAFKA = KafkaConfig(bootstrap_servers=("127.0.0.1:9",), idempotent_producer=False)
TOPICS = TopicsConfig(
    sources={
        EventKind.API_CALL: "calls",
        EventKind.ANALYSIS: "analyses",
        EventKind.SYSTEM_LOG: "logs",
    },
    dead_letters="dlq",
)


def producer(**options: object) -> EventProducer:
    return EventProducer(KAFKA, TOPICS, now_ms=lambda: NOW_MS, **options)  # type: ignore[arg-type]


def api_call(**changes: object) -> ApiCall:
    event = ApiCall.new(
        service="billing",
        endpoint="/v1/invoices/{id}",
        method="GET",
        success=True,
        response_time_ms=12.5,
        occurred_at=NOW_MS - 1000,
    )
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_an_invalid_event_raises_a_contract_error_naming_the_field() -> None:
    p = producer()
    with pytest.raises(ContractError, match="tokens") as caught:
        await p.send(api_call(tokens=-3))
    assert caught.value.reason is Reason.INVALID_NUMBER
    with pytest.raises(ContractError, match="method"):
        await p.send(api_call(method="get"))
    assert p.buffered_events == 0


@pytest.mark.asyncio
async def test_send_many_buffers_nothing_when_one_event_is_invalid() -> None:
    p = producer()
    events = [api_call(), api_call(), api_call(service=""), api_call()]
    with pytest.raises(ContractError, match="service"):
        await p.send_many(events)
    assert p.buffered_events == 0


@pytest.mark.asyncio
async def test_validation_uses_the_injected_clock() -> None:
    ahead = api_call(occurred_at_ms=NOW_MS + 10 * 60_000)
    with pytest.raises(ContractError) as caught:
        await producer().send(ahead)
    assert caught.value.reason is Reason.FUTURE_TIMESTAMP
    later = EventProducer(KAFKA, TOPICS, now_ms=lambda: NOW_MS + 3_600_000)
    # valid for that clock: it gets past validation and only then finds it is not started
    with pytest.raises(ProducerClosedError, match="not started"):
        await later.send(ahead)


@pytest.mark.asyncio
async def test_an_event_too_large_for_a_record_is_refused_before_buffering() -> None:
    p = producer(max_record_bytes=1000)
    log = SystemLog.new(level="info", service="svc", message="x" * 2000, occurred_at=NOW_MS)
    with pytest.raises(EventTooLargeError, match="max_record_bytes"):
        await p.send(log)
    assert p.buffered_events == 0


@pytest.mark.asyncio
async def test_only_contract_events_are_accepted() -> None:
    with pytest.raises(TypeError, match="dict"):
        await producer().send({"event_id": "x"})  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_valid_event_on_an_unstarted_producer_is_refused() -> None:
    p = producer()
    with pytest.raises(ProducerClosedError):
        await p.send(api_call())
    with pytest.raises(ProducerClosedError):
        await p.send_raw("calls", b"{}")
    with pytest.raises(ProducerClosedError):
        await p.flush()
    await p.close()  # closing a producer that never started is a no-op


def test_topics_follow_the_event_kind() -> None:
    assert topic_for(TOPICS, ApiCall.kind) == "calls"
    assert topic_for(TOPICS, Analysis.kind) == "analyses"
    assert topic_for(TOPICS, SystemLog.kind) == "logs"


def test_delivery_errors_say_whether_they_are_retriable() -> None:
    from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    transient = delivery_error([("calls", 500, KafkaTimeoutError()), ("logs", 1, OSError("x"))])
    assert isinstance(transient, TransientDeliveryError) and transient.retriable
    assert (transient.records, transient.events, transient.topics) == (2, 501, ("calls", "logs"))
    assert "retriable" in str(transient)
    refused = delivery_error(
        [("calls", 3, KafkaTimeoutError()), ("calls", 2, MessageSizeTooLargeError())]
    )
    assert type(refused) is DeliveryError and not refused.retriable
    assert "not retriable" in str(refused)
    assert isinstance(refused, PipelineError)
    assert BrokerUnavailableError.retriable and not ProducerClosedError.retriable
    assert not EventTooLargeError.retriable
