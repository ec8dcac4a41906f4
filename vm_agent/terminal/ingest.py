"""Fair, bounded reading of many PTYs: how hundreds of flooding terminals share one loop,
and when a flooding PTY is better read a moment later (`FloodMeter`).

Without this, every readable PTY gets its callback in the same loop turn, so 200 programs
printing as fast as they can make each turn do 200 drains before an HTTP request, a keystroke
of another session or a timer gets a look in (measured: /health p99 of seconds). Here a
readable PTY is drained at once only while the loop turn's byte budget lasts; after that it
enqueues itself (its reader removed meanwhile) and a callback at the start of the next turn
drains queued PTYs, oldest first, up to the budget; the rest wait for the turn after. Work
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

Drain = Callable[[], int]  # reads what one PTY holds (bounded), returns bytes read

# A program flooding the terminal in small writes (line by line) makes an eager reader wake
# for every few hundred bytes: ~9 ms of CPU per MB in reads alone, and the program held back by
# the ping-pong (measured). When a PTY has given more than _FLOOD_BYTES within _FLOOD_WINDOW in
# reads averaging under _SMALL_READ bytes, its reader pauses one loop timer tick (~1 ms, the
# selector's resolution) so the next wake-up finds whole 4 KiB buffers: 2-3 ms per MB, and the
# program runs faster. Programs that write big blocks are read eagerly (pausing them would let
# the PTY fill and stall them), and so is anything interactive.
_FLOOD_BYTES = 64 * 1024
_FLOOD_WINDOW = 0.01
_SMALL_READ = 2048
FLOOD_PAUSE = 0.0005


class FloodMeter:
    """How a PTY's output arrived over the last _FLOOD_WINDOW: bytes, and in how many reads."""

    __slots__ = ("_reads", "_since", "_total")

    def __init__(self) -> None:
        self._since = 0.0
        self._total = 0
        self._reads = 0

    def record(self, now: float, total: int, reads: int) -> None:
        if now - self._since > _FLOOD_WINDOW:
            self._since, self._total, self._reads = now, 0, 0
        self._total += total
        self._reads += reads

    @property
    def flooding_in_small_writes(self) -> bool:
        return self._total >= _FLOOD_BYTES and self._total < _SMALL_READ * self._reads


class IngestScheduler:
    """Per loop turn, PTYs are drained in the order they became readable until TURN_BYTES.

    While the budget lasts, a PTY that becomes readable is drained at once (a keystroke echo
    must not wait an extra loop turn); once it is spent, PTYs queue for the next turn. The
    budget is renewed by a callback at the start of the turn after it ran out, not after every
    drain: small drains (echoes) then cost no extra loop turn, and no turn drains more than
    TURN_BYTES plus one PTY's share.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Drain] = deque()
        self._budget = TURN_BYTES
        self._scheduled = False

    def drain_now(self, drain: Drain) -> bool:
        """Drain at once if this turn's budget allows it; False means the caller must `queue`
        (and stop watching its fd meanwhile, or it would be reported readable every turn)."""
        if self._budget <= 0 or self._queue:
            return False
        self._budget -= drain()
        if self._budget <= 0:
            self._schedule()
        return True

    def queue(self, drain: Drain) -> None:
        self._queue.append(drain)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._scheduled = False
        self._budget = TURN_BYTES
        while self._queue and self._budget > 0:
            self._budget -= self._queue.popleft()()
        if self._queue or self._budget <= 0:
            # Queued PTYs wait for the next turn, after whatever else became ready meanwhile;
            # a budget spent here is renewed then too.
            self._scheduled = True
            self._loop.call_soon(self._next_turn)


_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IngestScheduler] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop) -> IngestScheduler:
    scheduler = _schedulers.get(loop)
    if scheduler is None:
        scheduler = _schedulers[loop] = IngestScheduler(loop)
    return scheduler
