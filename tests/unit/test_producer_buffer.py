"""RecordBuffer: record limits, linger, backpressure and flush bookkeeping, without a broker."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from pipeline.producer import EventTooLargeError, ProducerClosedError, Record, RecordBuffer


def event(i: int, pad: int = 0) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * pad})


def elements(records: list[Record]) -> list[int]:
    out: list[int] = []
    for record in records:
        out += [e["i"] for e in orjson.loads(record.value)]
    return out


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_records_hold_at_most_max_record_events() -> None:
    buffer = RecordBuffer(max_record_events=7, max_buffered_events=1000)
    for i in range(50):
        await buffer.put("t", event(i))
    records = buffer.take_ready()
    assert [r.events for r in records] == [7] * 7  # full records are sealed at once
    buffer.seal_all()
    records += buffer.take_ready()
    assert [r.events for r in records] == [7] * 7 + [1]
    assert elements(records) == list(range(50))
    assert [r.seq for r in records] == list(range(8))
    assert all(len(orjson.loads(r.value)) == r.events for r in records)


@pytest.mark.asyncio
async def test_records_never_exceed_max_record_bytes() -> None:
    limit = 1000
    buffer = RecordBuffer(max_record_bytes=limit, max_buffered_bytes=1_000_000)
    datas = [event(i, (i * 37) % 300) for i in range(200)]
    for data in datas:
        await buffer.put("t", data)
    buffer.seal_all()
    records = buffer.take_ready()
    assert elements(records) == list(range(200))
    consumed = 0
    for n, record in enumerate(records):
        assert len(record.value) <= limit
        consumed += record.events
        if n + 1 < len(records):  # sealed only because the next event did not fit
            assert len(record.value) + len(datas[consumed]) + 1 > limit


@pytest.mark.asyncio
async def test_an_event_exactly_at_the_limit_fits_and_a_larger_one_is_refused() -> None:
    buffer = RecordBuffer(max_record_bytes=100)
    fits = b'{"a":"' + b"x" * (98 - 8) + b'"}'
    assert len(fits) == 98  # "[" + 98 + "]" = 100
    await buffer.put("t", fits)
    with pytest.raises(EventTooLargeError, match="99 bytes"):
        await buffer.put("t", fits[:-2] + b'x"}')
    assert buffer.buffered_events == 1
    buffer.seal_all()
    [record] = buffer.take_ready()
    assert len(record.value) == 100


@pytest.mark.asyncio
async def test_raw_records_are_sent_as_given_after_the_open_batch() -> None:
    buffer = RecordBuffer(max_record_bytes=50)
    await buffer.put("t", event(1))
    await buffer.put_raw("t", b"not json")
    await buffer.put("u", event(2))
    await buffer.put_raw("t", b"")
    with pytest.raises(EventTooLargeError):
        await buffer.put_raw("t", b"x" * 51)
    buffer.seal_all()
    records = buffer.take_ready()
    assert [(r.topic, r.value, r.raw) for r in records] == [
        ("t", b'[{"i":1,"pad":""}]', False),
        ("t", b"not json", True),
        ("t", b"", True),
        ("u", b'[{"i":2,"pad":""}]', False),
    ]


@pytest.mark.asyncio
async def test_linger_seals_only_batches_old_enough() -> None:
    now = [100.0]
    buffer = RecordBuffer(linger_s=0.05, clock=lambda: now[0])
    assert buffer.next_deadline() is None
    await buffer.put("a", event(1))
    now[0] = 100.03
    await buffer.put("b", event(2))
    assert buffer.next_deadline() == pytest.approx(100.05)
    now[0] = 100.06
    buffer.seal_expired()
    assert [r.topic for r in buffer.take_ready()] == ["a"]
    assert buffer.next_deadline() == pytest.approx(100.08)


@pytest.mark.asyncio
async def test_a_full_buffer_blocks_put_until_records_are_released() -> None:
    buffer = RecordBuffer(max_record_events=5, max_buffered_events=10)
    for i in range(10):
        await buffer.put("t", event(i))
    assert buffer.buffered_events == 10
    blocked = asyncio.create_task(buffer.put("t", event(10)))
    await settle()
    assert not blocked.done()  # backpressure: the 11th event waits
    first, second = buffer.take_ready()
    buffer.release(second)  # out of order is fine
    await settle()
    assert blocked.done()
    assert buffer.buffered_events == 6
    buffer.release(first)
    assert buffer.buffered_events == 1


@pytest.mark.asyncio
async def test_the_byte_bound_also_applies() -> None:
    buffer = RecordBuffer(max_record_bytes=100, max_buffered_bytes=300)
    data = event(0, 70)  # 87 bytes: one per record
    for _ in range(3):
        await buffer.put("t", data)
    blocked = asyncio.create_task(buffer.put("t", data))
    await settle()
    assert not blocked.done()
    buffer.release(buffer.take_ready()[0])
    await settle()
    assert blocked.done()


@pytest.mark.asyncio
async def test_waiting_puts_seal_open_batches_when_nothing_is_in_flight() -> None:
    buffer = RecordBuffer(max_record_events=10, max_buffered_events=10)
    for i in range(5):
        await buffer.put("a", event(i))
        await buffer.put("b", event(i))
    assert buffer.take_ready() == []  # two half-full open batches hold everything
    blocked = asyncio.create_task(buffer.put("a", event(99)))
    await settle()
    records = buffer.take_ready()  # sealed so they can be sent without waiting for linger
    assert sorted(r.events for r in records) == [5, 5]
    assert not blocked.done()
    buffer.release(records[0])
    await settle()
    assert blocked.done()


@pytest.mark.asyncio
async def test_waiters_are_admitted_in_order_and_a_cancelled_one_leaks_nothing() -> None:
    buffer = RecordBuffer(max_record_events=1, max_buffered_events=1)
    await buffer.put("t", event(0))
    order: list[int] = []

    async def put(i: int) -> None:
        await buffer.put("t", event(i))
        order.append(i)

    tasks = [asyncio.create_task(put(i)) for i in (1, 2, 3)]
    await settle()
    tasks[1].cancel()
    for _ in range(2):
        buffer.release(buffer.take_ready()[0])
        await settle()
    assert order == [1, 3]
    assert tasks[1].cancelled()
    assert buffer.buffered_events == 1


@pytest.mark.asyncio
async def test_wait_released_covers_every_record_sealed_before() -> None:
    buffer = RecordBuffer(max_record_events=2)
    for i in range(5):
        await buffer.put("t", event(i))
    upto = buffer.seal_all()
    await buffer.put("t", event(5))  # sent after the flush point: not waited for
    records = buffer.take_ready()
    assert upto == 2 and len(records) == 3
    flushed = asyncio.create_task(buffer.wait_released(upto))
    buffer.release(records[2])
    buffer.release(records[0])
    await settle()
    assert not flushed.done()
    buffer.release(records[1])
    await settle()
    assert flushed.done()
    await buffer.wait_released(upto)  # already released: returns at once
    assert buffer.buffered_events == 1


@pytest.mark.asyncio
async def test_close_refuses_puts_and_fails_waiting_ones() -> None:
    buffer = RecordBuffer(max_record_events=1, max_buffered_events=1)
    await buffer.put("t", event(0))
    blocked = asyncio.create_task(buffer.put("t", event(1)))
    await settle()
    buffer.close()
    with pytest.raises(ProducerClosedError):
        await blocked
    with pytest.raises(ProducerClosedError):
        await buffer.put("t", event(2))


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_record_events"):
        RecordBuffer(max_record_events=0)
    with pytest.raises(ValueError, match="max_buffered_events"):
        RecordBuffer(max_record_events=10, max_buffered_events=5)
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        RecordBuffer(max_record_bytes=1000, max_buffered_bytes=999)


@pytest.mark.asyncio
async def test_a_put_admitted_just_before_close_is_refused_not_lost() -> None:
    buffer = RecordBuffer(max_record_events=1, max_buffered_events=1)
    await buffer.put("t", event(0))
    blocked = asyncio.create_task(buffer.put("t", event(1)))
    await settle()
    buffer.release(buffer.take_ready()[0])  # admits the waiting put...
    buffer.close()  # ...which is closed before it resumes
    with pytest.raises(ProducerClosedError):
        await blocked
    buffer.seal_all()
    assert buffer.take_ready() == []
    assert buffer.buffered_events == 0
