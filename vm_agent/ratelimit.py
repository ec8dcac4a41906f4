"""A token bucket: `rate` messages per second with bursts up to `burst` (rate 0: unlimited):
the daemon's limit on what a terminal socket may send. (The coordinator client paces itself
with its own copy, `_Pacer` in vm_agent/client/terminals.py: it ships without daemon modules.)
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, float(burst))
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> bool:
        """Spend a token if there is one; False means the message is over the limit."""
        if self.rate <= 0:
            return True
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
