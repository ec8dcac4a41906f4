"""Bounded, append-only logs with absolute positions, read by any number of cursors.

Everything that streams (terminal output, agent events, log records) goes through these two
types. The writer never waits for a reader: `append` stores and wakes waiters, nothing more.
Each reader keeps its own position and asks for "everything after N"; when N has already been
trimmed away the answer says exactly how much was lost (a gap) instead of silently skipping.

An append wakes the readers that are waiting (one `set_result` each) and costs nothing when
none is: a reader that is busy sending picks up everything appended meanwhile in one read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class _Signal:
    """A broadcast "something changed" that any number of tasks can await.

    Each waiter awaits its own future: a shared one would have to be shielded (a cancelled
    waiter must not cancel it for the others), and a shield costs every wake-up an extra loop
    turn, which is latency on every keystroke echo and every agent notification.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[None], None] = {}

    def fire(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, {}
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters[future] = None
        try:
            await future
        finally:
            self._waiters.pop(future, None)


@dataclass(frozen=True, slots=True)
class ByteSlice:
    """Bytes read from a ByteLog: `offset` is where `data` starts, `gap` how many bytes were lost."""

    offset: int
    data: bytes
    gap: int = 0

    @property
    def next(self) -> int:
        return self.offset + len(self.data)


class ByteLog:
    """The last `capacity` bytes of a stream, addressed by absolute position.

    Stored in a ring: position p lives at index p % capacity. The ring starts small and doubles
    as output arrives until it reaches the capacity, so an idle terminal costs almost nothing;
    from then on appends overwrite in place. (A bytearray trimmed at the front cost a copy of
    the whole buffer per append once full: 18 µs per 32 KiB appended, measured, against ~3 µs.)
    """

    _INITIAL = 4096

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._ring = bytearray()
        self._end = 0
        self._closed = False
        self._signal = _Signal()
        self._listeners: list[Callable[[], None]] = []

    @property
    def start(self) -> int:
        """Oldest position still retained."""
        return max(0, self._end - self.capacity)

    @property
    def end(self) -> int:
        """Position the next appended byte will get (= total bytes ever appended)."""
        return self._end

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, data: bytes) -> None:
        if not data or self._closed:
            return
        capacity = self.capacity
        end = self._end + len(data)
        if len(data) > capacity:
            data = data[-capacity:]
        ring = self._ring
        if len(ring) < capacity and end > len(ring):
            # Still growing (never wrapped: positions so far are < len(ring) <= capacity).
            size = max(len(ring), self._INITIAL)
            while size < end and size < capacity:
                size *= 2
            ring.extend(bytes(min(size, capacity) - len(ring)))
        at = (end - len(data)) % capacity
        first = min(len(data), capacity - at)
        ring[at : at + first] = data[:first] if first < len(data) else data
        if first < len(data):
            ring[: len(data) - first] = data[first:]
        self._end = end
        self._changed()

    def close(self) -> None:
        """No more appends; readers drain what is left and then see end-of-stream."""
        self._closed = True
        self._changed()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` synchronously after every append and at close.

        For a reader that can act on new bytes at once (write a keystroke's echo to its
        socket) without the loop turn that waking a waiting task costs. It runs inside the
        writer's call, so it must be quick and must not raise."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    def _changed(self) -> None:
        if self._listeners:
            for listener in tuple(self._listeners):
                listener()
        self._signal.fire()

    def _copy(self, start: int, end: int) -> bytes:
        """Bytes [start, end) (both retained), joined across the ring's wrap if need be."""
        if end <= start:
            return b""
        capacity = self.capacity
        at = start % capacity
        size = end - start
        with memoryview(self._ring) as view:
            if at + size <= capacity:
                return bytes(view[at : at + size])
            return bytes(view[at:capacity]) + bytes(view[: size - (capacity - at)])

    def read(self, position: int, limit: int) -> ByteSlice:
        """Up to `limit` bytes from `position` on (clamped into what is retained)."""
        gap = 0
        start = self.start
        if position < start:
            gap = start - position
            position = start
        position = min(position, self._end)
        return ByteSlice(position, self._copy(position, min(position + limit, self._end)), gap)

    def peek(self, start: int, end: int) -> bytes:
        """The retained bytes between two absolute positions (for replay analysis)."""
        lo = max(start, self.start)
        return self._copy(lo, max(min(end, self._end), lo))

    async def wait_beyond(self, position: int) -> bool:
        """Wait until there is data at or after `position`; False once closed and drained."""
        while self.end <= position:
            if self._closed:
                return False
            await self._signal.wait()
        return True

    def cursor(self, position: int | None = None) -> ByteCursor:
        return ByteCursor(self, self.end if position is None else position)


class ByteCursor:
    """One reader's position in a ByteLog."""

    def __init__(self, log: ByteLog, position: int) -> None:
        self.log = log
        self.position = position

    async def next(self, limit: int = 65536) -> ByteSlice | None:
        """The next slice (waiting for it), or None at end-of-stream."""
        if not await self.log.wait_beyond(self.position):
            return None
        chunk = self.log.read(self.position, limit)
        self.position = chunk.next
        return chunk

    def read_now(self, limit: int = 65536) -> ByteSlice:
        """Whatever is available right now without waiting (possibly empty)."""
        chunk = self.log.read(self.position, limit)
        self.position = chunk.next
        return chunk


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers `first..last` (inclusive) were trimmed before this reader saw them."""

    first: int
    last: int


class Entry(NamedTuple, Generic[T]):
    """One event. A tuple rather than a frozen dataclass: built for every agent notification,
    it costs half as much to create (measured: EventLog.append 1.8 µs against 3.1 µs)."""

    seq: int
    item: T
    size: int


class EventLog(Generic[T]):
    """The most recent events, numbered from 1, bounded by count and by total size.

    `size_of` measures an item (e.g. the length of its serialized JSON) so one huge tool
    output cannot pin unbounded memory just because the count cap is not reached.
    """

    def __init__(self, max_items: int, max_bytes: int, size_of: Callable[[T], int] = lambda _item: 1) -> None:
        if max_items <= 0 or max_bytes <= 0:
            raise ValueError("limits must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._entries: deque[Entry[T]] = deque()
        self._bytes = 0
        self._last_seq = 0
        self._closed = False
        self._signal = _Signal()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """Oldest sequence number retained (last_seq + 1 when empty)."""
        return self._entries[0].seq if self._entries else self._last_seq + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, item: T) -> int:
        """Store `item` under the next sequence number and return that number."""
        self._last_seq += 1
        size = self._size_of(item)
        self._entries.append(Entry(self._last_seq, item, size))
        self._bytes += size
        # Always keep the newest entry, even if it alone is over the byte cap.
        while len(self._entries) > 1 and (len(self._entries) > self.max_items or self._bytes > self.max_bytes):
            self._bytes -= self._entries.popleft().size
        self._signal.fire()
        return self._last_seq

    def close(self) -> None:
        self._closed = True
        self._signal.fire()

    def read(self, after: int, limit: int = 1000) -> tuple[Gap | None, list[Entry[T]]]:
        """Entries with seq > `after` (up to `limit`), and the gap if some were trimmed."""
        first = self.first_seq
        gap = Gap(after + 1, first - 1) if after + 1 < first else None
        if not self._entries or after >= self._last_seq:
            return gap, []
        index = max(after + 1 - first, 0)
        out = [self._entries[i] for i in range(index, min(index + limit, len(self._entries)))]
        return gap, out

    async def wait_beyond(self, after: int) -> bool:
        while self._last_seq <= after:
            if self._closed:
                return False
            await self._signal.wait()
        return True

    def cursor(self, after: int = 0) -> EventCursor[T]:
        return EventCursor(self, after)


class EventCursor(Generic[T]):
    """One reader's position in an EventLog."""

    def __init__(self, log: EventLog[T], after: int) -> None:
        self.log = log
        self.after = after

    async def next(self, limit: int = 1000) -> tuple[Gap | None, list[Entry[T]]] | None:
        """The next batch (waiting for it) and any gap before it, or None at end-of-stream."""
        if not await self.log.wait_beyond(self.after):
            return None
        return self.read_now(limit)

    def read_now(self, limit: int = 1000) -> tuple[Gap | None, list[Entry[T]]]:
        gap, entries = self.log.read(self.after, limit)
        if entries:
            self.after = entries[-1].seq
        elif gap is not None:
            self.after = gap.last
        return gap, entries
