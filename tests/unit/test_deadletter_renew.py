"""After a transient failure the dead-letter publisher starts a new Kafka client (an
aiokafka producer whose sends timed out in a broker outage can stay stuck for minutes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from pipeline.config import KafkaConfig
from pipeline.contract import Reason
from pipeline.worker.batch import Record, Rejected
from pipeline.worker.deadletter import DeadLetterError, DeadLetterPublisher


class Client:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.started = self.stopped = False
        self.sent: list[bytes] = []

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append(key)
            future.set_result(None)
        return future


def item(offset: int) -> tuple[Record, Rejected]:
    record = Record(0, offset, 0, [])
    return record, Rejected(Reason.MALFORMED_JSON, "not JSON", None, b"{")


@pytest.mark.asyncio
async def test_a_transient_failure_is_retriable_and_the_next_publish_uses_a_new_client() -> None:
    clients = [Client(fail=True), Client(fail=False)]
    publisher = DeadLetterPublisher(
        KafkaConfig(bootstrap_servers=("127.0.0.1:9",), idempotent_producer=False), "dlq", "w1"
    )
    made = iter(clients)
    publisher._new_client = lambda: next(made)  # type: ignore[method-assign]
    publisher._producer = publisher._new_client()
    await publisher.start()
    with pytest.raises(DeadLetterError) as caught:
        await publisher.publish("calls", [item(1)])
    assert caught.value.retriable
    await publisher.publish("calls", [item(1), item(2)])
    assert clients[0].stopped and clients[1].started
    assert clients[1].sent == [b"calls/0/1", b"calls/0/2"]
    assert publisher.reconnects == 1
