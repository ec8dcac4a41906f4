"""A token bucket: `rate` messages per second with bursts up to `burst` (rate 0: unlimited).

One definition for both sides of a terminal socket: the daemon refuses a message when the
bucket is empty (`take`), and the coordinator client, holding the same bucket for its own
socket, waits instead of being cut off (`reserve`).
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

    def reserve(self) -> float:
        """Spend a token now, going into debt if need be; returns the seconds to wait before
        the message is within the limit. Callers reserving in turn queue up fairly, no lock."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        self.tokens -= 1
        return max(0.0, -self.tokens / self.rate)
