"""Per-topic batching of encoded events into JSON-array records, with bounded memory.

:class:`RecordBuffer` is the producer's memory, independent of Kafka (the unit tests drive
it directly):

- :meth:`~RecordBuffer.put` appends one encoded event to its topic's *open* batch. A batch
  is *sealed* into a :class:`Record` (value ``[e1,e2,...]``) when it holds
  ``max_record_events`` events, when the next event would take it over
  ``max_record_bytes``, when it is ``linger_s`` old (:meth:`~RecordBuffer.seal_expired`),
  or on :meth:`~RecordBuffer.seal_all`. A record never exceeds either limit; an event that
  cannot fit in a record on its own raises :class:`EventTooLargeError`.
- :meth:`~RecordBuffer.put_raw` adds a record value as it is (seals the topic's open batch
  first, so a topic's records keep the order of the calls).
- Sealed records wait in :meth:`~RecordBuffer.take_ready` order for the sender; each is
  held until :meth:`~RecordBuffer.release` (acknowledged or failed).

**Backpressure**: every event counts against ``max_buffered_events`` and its bytes against
``max_buffered_bytes`` from ``put`` until its record is released. When either bound would
be exceeded, ``put`` waits (first come, first served) until releases make room; if nothing
is in flight that could be released, the open batches are sealed so the sender can drain
them. **Flush**: :meth:`~RecordBuffer.seal_all` returns the sequence number of the last
sealed record and :meth:`~RecordBuffer.wait_released` waits until it and every record
before it are released.

One event loop only; no method is thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pipeline.producer.errors import EventTooLargeError, ProducerClosedError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_MAX_RECORD_EVENTS",
    "Record",
    "RecordBuffer",
    "pack_arrays",
]

T = TypeVar("T")

DEFAULT_MAX_RECORD_EVENTS = 500
DEFAULT_MAX_RECORD_BYTES = 1_048_576
_YIELD_EVENTS = 256


@dataclass(frozen=True, slots=True)
class Record:
    """One sealed Kafka record value for ``topic``.

    ``events`` is the number of events it carries (a raw record counts as one), ``held`` the
    bytes it holds against the buffer's bound, ``seq`` its sealing order (from 0).
    """

    topic: str
    value: bytes
    events: int
    held: int
    seq: int
    raw: bool = False


class _Open:
    """A topic's batch being filled: encoded events and the record size so far."""

    __slots__ = ("held", "parts", "since", "size")

    def __init__(self, since: float) -> None:
        self.parts: list[bytes] = []
        self.size = 1  # "[", then each event adds its length plus "," or "]"
        self.held = 0
        self.since = since


class RecordBuffer:
    """Batches encoded events per topic within record limits; bounds what it holds.

    Raises ``ValueError`` for limits below 1 (2 bytes for ``max_record_bytes``) or buffer
    bounds smaller than one record. ``clock`` is monotonic seconds (for ``linger_s``).
    """

    def __init__(
        self,
        *,
        max_record_events: int = DEFAULT_MAX_RECORD_EVENTS,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_buffered_events: int = 100_000,
        max_buffered_bytes: int = 64 * 1_048_576,
        linger_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_record_events < 1:
            raise ValueError(f"max_record_events must be >= 1, got {max_record_events}")
        if max_record_bytes < 3:
            raise ValueError(f"max_record_bytes must be >= 3, got {max_record_bytes}")
        if max_buffered_events < max_record_events:
            raise ValueError("max_buffered_events must be at least max_record_events")
        if max_buffered_bytes < max_record_bytes:
            raise ValueError("max_buffered_bytes must be at least max_record_bytes")
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        self.max_record_events = max_record_events
        self.max_record_bytes = max_record_bytes
        self.max_buffered_events = max_buffered_events
        self.max_buffered_bytes = max_buffered_bytes
        self.linger_s = linger_s
        self._clock = clock
        # A caller that never suspends would starve the sender until the buffer is full:
        # put() yields to the event loop once this many sealed events wait to be sent.
        self._yield_at = max(max_record_events, _YIELD_EVENTS)
        self._open: dict[str, _Open] = {}
        self._ready: deque[Record] = deque()
        self._ready_events = 0
        self._events = 0  # held: open + ready + in flight
        self._bytes = 0
        self._open_events = 0
        self._next_seq = 0
        self._low = 0  # lowest sequence number not yet released
        self._released: set[int] = set()  # released sequence numbers above _low
        self._waiters: deque[tuple[asyncio.Future[None], int, int]] = deque()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        self.wakeup = asyncio.Event()
        """Set when a record is sealed or a batch is opened (the sender's cue)."""

    # --- state -------------------------------------------------------------------------

    @property
    def buffered_events(self) -> int:
        """Events held: in open batches, in sealed records, in flight until released."""
        return self._events

    @property
    def buffered_bytes(self) -> int:
        """Bytes held (the same scope as :attr:`buffered_events`)."""
        return self._bytes

    @property
    def last_seq(self) -> int:
        """Sequence number of the last sealed record (-1 before the first)."""
        return self._next_seq - 1

    @property
    def closed(self) -> bool:
        return self._closed

    def check_size(self, nbytes: int, *, raw: bool = False) -> None:
        """Raise :class:`EventTooLargeError` if an event of ``nbytes`` encoded bytes (or a
        raw record value) cannot fit in a record by itself."""
        size = nbytes if raw else nbytes + 2
        if size > self.max_record_bytes:
            what = "raw record" if raw else "event"
            raise EventTooLargeError(
                f"{what} of {nbytes} bytes does not fit in a record of at most "
                f"{self.max_record_bytes} bytes (max_record_bytes)"
            )

    # --- adding ------------------------------------------------------------------------

    async def put(self, topic: str, data: bytes) -> None:
        """Add one encoded event (a JSON object) to ``topic``'s open batch.

        Returns once it is buffered; waits while the buffer is full. Raises
        :class:`EventTooLargeError` (nothing buffered) or :class:`ProducerClosedError`.
        """
        self.check_size(len(data))
        need = len(data) + 1
        await self._reserve(1, need)
        self._append(topic, data, need)
        if self._ready_events >= self._yield_at:
            await asyncio.sleep(0)  # enough is waiting: let the sender run

    async def put_raw(self, topic: str, value: bytes) -> None:
        """Add ``value`` as one record of its own (after ``topic``'s open batch).

        Same contract as :meth:`put`.
        """
        self.check_size(len(value), raw=True)
        await self._reserve(1, len(value))
        if topic in self._open:
            self._seal(topic)
        self._push(Record(topic, value, 1, len(value), self._next_seq, raw=True))
        self._next_seq += 1
        if self._ready_events >= self._yield_at:
            await asyncio.sleep(0)

    def _append(self, topic: str, data: bytes, need: int) -> None:
        batch = self._open.get(topic)
        if batch is not None and batch.size + need > self.max_record_bytes:
            self._seal(topic)
            batch = None
        if batch is None:
            batch = self._open[topic] = _Open(self._clock())
            self.wakeup.set()
        batch.parts.append(data)
        batch.size += need
        batch.held += need
        self._open_events += 1
        if len(batch.parts) >= self.max_record_events:
            self._seal(topic)

    async def _reserve(self, events: int, nbytes: int) -> None:
        if self._closed:
            raise ProducerClosedError("the producer is closed")
        if not self._waiters and self._fits(events, nbytes):
            self._events += events
            self._bytes += nbytes
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (future, events, nbytes)
        self._waiters.append(entry)
        self._relieve()
        try:
            await future
            if self.closed:  # admitted, but closed before this put could resume
                self._events -= events
                self._bytes -= nbytes
                raise ProducerClosedError("the producer was closed")
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled
                self._events -= events
                self._bytes -= nbytes
                self._grant()
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._grant()
            raise

    def _fits(self, events: int, nbytes: int) -> bool:
        return self._events == 0 or (
            self._events + events <= self.max_buffered_events
            and self._bytes + nbytes <= self.max_buffered_bytes
        )

    def _grant(self) -> None:
        """Admit waiting puts in order while they fit."""
        waiters = self._waiters
        while waiters:
            future, events, nbytes = waiters[0]
            if future.done():  # cancelled while waiting
                waiters.popleft()
                continue
            if not self._fits(events, nbytes):
                break
            waiters.popleft()
            self._events += events
            self._bytes += nbytes
            future.set_result(None)
        self._relieve()

    def _relieve(self) -> None:
        """If puts wait and only open batches hold capacity, seal them so they can drain."""
        if self._waiters and self._open and self._open_events == self._events:
            self.seal_all()

    # --- sealing -----------------------------------------------------------------------

    def _seal(self, topic: str) -> None:
        batch = self._open.pop(topic)
        value = b"[" + b",".join(batch.parts) + b"]"
        self._open_events -= len(batch.parts)
        self._push(Record(topic, value, len(batch.parts), batch.held, self._next_seq))
        self._next_seq += 1

    def _push(self, record: Record) -> None:
        self._ready.append(record)
        self._ready_events += record.events
        self.wakeup.set()

    def seal_all(self) -> int:
        """Seal every open batch; return :attr:`last_seq` (what a flush must wait for)."""
        for topic in list(self._open):
            self._seal(topic)
        return self.last_seq

    def next_deadline(self) -> float | None:
        """When the oldest open batch is due (clock seconds), or None if none is open."""
        if not self._open:
            return None
        return min(batch.since for batch in self._open.values()) + self.linger_s

    def seal_expired(self) -> None:
        """Seal the open batches that are at least ``linger_s`` old."""
        cutoff = self._clock() - self.linger_s
        for topic in [t for t, batch in self._open.items() if batch.since <= cutoff]:
            self._seal(topic)

    def take_ready(self) -> list[Record]:
        """Remove and return the sealed records in sealing order (they stay held)."""
        records = list(self._ready)
        self._ready.clear()
        self._ready_events = 0
        return records

    def requeue(self, record: Record) -> None:
        """Put ``record`` (taken, not released) back at the front of the ready queue: it
        is sent again. It stays held against the bounds meanwhile."""
        ready = self._ready
        if not ready or ready[0].seq > record.seq:
            ready.appendleft(record)
        else:  # keep sealing order (put_raw promises a topic's records keep theirs)
            items = list(ready)
            at = next((i for i, r in enumerate(items) if r.seq > record.seq), len(items))
            items.insert(at, record)
            self._ready = deque(items)
        self._ready_events += record.events
        self.wakeup.set()

    def waiting(self) -> list[Record]:
        """The sealed records not taken by the sender yet, in sending order."""
        return list(self._ready)

    # --- completion --------------------------------------------------------------------

    def release(self, record: Record) -> None:
        """``record`` is done (acknowledged or failed): free its room, wake waiters."""
        self._events -= record.events
        self._bytes -= record.held
        seq = record.seq
        if seq == self._low:
            self._low += 1
            released = self._released
            while self._low in released:
                released.remove(self._low)
                self._low += 1
            self._wake_flushes()
        else:
            self._released.add(seq)
        self._grant()

    def _wake_flushes(self) -> None:
        if not self._flush_waiters:
            return
        pending = []
        for upto, future in self._flush_waiters:
            if upto < self._low:
                if not future.done():
                    future.set_result(None)
            else:
                pending.append((upto, future))
        self._flush_waiters = pending

    async def wait_released(self, upto: int) -> None:
        """Return once every record with ``seq <= upto`` is released."""
        if upto < self._low:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((upto, future))
        await future

    def close(self) -> None:
        """Refuse further puts; waiting puts raise :class:`ProducerClosedError`."""
        self._closed = True
        while self._waiters:
            future, _, _ = self._waiters.popleft()
            if not future.done():
                future.set_exception(ProducerClosedError("the producer was closed"))


def pack_arrays(
    events: Iterable[tuple[T, bytes]], max_bytes: int
) -> Iterator[tuple[bytes, list[T]]]:
    """JSON-array record values of at most ``max_bytes`` from ``(tag, encoded event)``
    pairs, each with the tags of the events it holds, in order (the same input always gives
    the same records). An event larger than ``max_bytes`` gets a record of its own (the
    contract bounds events far below a record)."""
    batch: list[bytes] = []
    positions: list[T] = []
    size = 2
    for position, data in events:
        if batch and size + len(data) + 1 > max_bytes:
            yield b"[" + b",".join(batch) + b"]", positions
            batch, positions, size = [], [], 2
        size += len(data) + (1 if batch else 0)
        batch.append(data)
        positions.append(position)
    if batch:
        yield b"[" + b",".join(batch) + b"]", positions
