"""Fair, bounded reading of many PTYs: how hundreds of flooding terminals share one loop.

Without this, every readable PTY gets its callback in the same loop turn, so 200 programs
printing as fast as they can make each turn do 200 drains before an HTTP request, a keystroke
of another session or a timer gets a look in (measured: /health p99 of seconds). Here a
readable PTY only enqueues itself (its reader is removed meanwhile) and one callback per turn
drains queued PTYs, oldest first, up to a byte budget; the rest wait for the next turn. Work
per turn is bounded, nobody is skipped, and a flooding program is only slowed when the loop is
genuinely saturated (its PTY fills while it waits its turn), never because nobody watches.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable

# Bytes drained from PTYs per loop turn (each PTY gives up to its own per-wake-up budget).
TURN_BYTES = 32 * 1024

Drain = Callable[[], int]  # reads what one PTY holds (bounded), re-arms it, returns bytes read


class IngestScheduler:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Drain] = deque()
        self._scheduled = False

    def ready(self, drain: Drain) -> None:
        self._queue.append(drain)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        budget = TURN_BYTES
        while self._queue and budget > 0:
            budget -= self._queue.popleft()()
        if self._queue:  # the rest go next turn, after whatever else became ready meanwhile
            self._scheduled = True
            self._loop.call_soon(self._run)


_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IngestScheduler] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop) -> IngestScheduler:
    scheduler = _schedulers.get(loop)
    if scheduler is None:
        scheduler = _schedulers[loop] = IngestScheduler(loop)
    return scheduler
