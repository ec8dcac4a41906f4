"""Window-size changes repeated for terminals whose program relays them elsewhere.

The kernel sends SIGWINCH once, when the size changes. A workspace terminal's program is the
docker CLI, which forwards the size to the engine when that signal arrives, but it starts
listening only after its first size request to the engine has returned, while the shell's
output is already streaming. A resize in that window (a web terminal fits itself to the page
right after connecting) was lost, and the shell in the container kept the old size for good:
one container terminal in three in our tests. So after a resize such a session signals its
foreground group again a few times. Each repeat makes the relay read the size, unchanged by
then, and send it: one engine call, and no signal inside the container, since nothing changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Seconds after the last resize at which the signal is repeated: the first covers the usual
# start-up window (a few milliseconds), the later ones a host too busy to run the relay soon.
_DELAYS = (0.25, 1.0, 3.0)


class ResizeEcho:
    """Repeats `signal_foreground` after each resize; a new resize restarts the series."""

    def __init__(self, signal_foreground: Callable[[], None]) -> None:
        self._signal = signal_foreground
        self._loop = asyncio.get_running_loop()
        self._pending: list[asyncio.TimerHandle] = []

    def resized(self) -> None:
        self.cancel()
        self._pending = [self._loop.call_later(delay, self._signal) for delay in _DELAYS]

    def cancel(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending = []
