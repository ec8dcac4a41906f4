"""When is an agent session done? Its state and its event stream, read together.

`get_state` tells whether a session is idle *now*; the events say what happened up to some
seq. A coordinator needs both to agree before it takes a reply as final, or it would return
while the last chunks of text are still in flight.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vm_agent.client.events import Event

# Statuses during which a session is still working on something (the rest mean "waiting for us").
BUSY_STATUSES = frozenset({"starting", "installing", "prompting", "restarting", "recovering", "busy", "running"})
# Events after which the session may have become idle, so `wait_idle` asks again.
SETTLING_EVENTS = frozenset(
    {"session_prompt_done", "agent_status", "agent_crash_report", "queue_update", "prompt_result", "prompt_error"}
)


def queue_length(state: dict[str, Any]) -> int:
    queue = state.get("queue")
    if isinstance(queue, list):
        return len(queue)
    if isinstance(queue, int):
        return queue
    for key in ("queueLength", "queued", "pendingMessageCount"):
        if isinstance(state.get(key), int):
            return state[key]
    return 0


def is_idle(state: dict[str, Any]) -> bool:
    """True when the session runs no prompt and has nothing queued."""
    if state.get("isStreaming") is True or state.get("currentPrompt"):
        return False
    return str(state.get("status", "idle")) not in BUSY_STATUSES and queue_length(state) == 0


def last_seq(state: dict[str, Any]) -> int:
    """The seq of the newest event the session had when `state` was read (0: read everything)."""
    seq = state.get("lastSeq", (state.get("counts") or {}).get("messages"))
    return seq if isinstance(seq, int) else 0


class Settling:
    """Decides, event by event, when a session has settled.

    `get_state` answers for *now* while the events being read may lag behind it; "idle" is
    only believed once every event up to the state's own last seq has been read, so the
    reply text of the turn is complete when the caller gets it.
    """

    def __init__(self, get_state: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._get_state = get_state
        self._idle_at: int | None = None
        self.state: dict[str, Any] = {}

    def seed(self, state: dict[str, Any]) -> None:
        """Start from a state read before the events: a session already idle then is settled as
        soon as the events up to that state's last seq are read, even if no settling event
        comes after them (resuming `watch --until-idle --after N` of finished work)."""
        if is_idle(state):
            self.state, self._idle_at = state, last_seq(state)

    async def check(self, event: Event) -> bool:
        if self._idle_at is None and event.kind in SETTLING_EVENTS:
            state = await self._get_state()
            if is_idle(state):
                self.state, self._idle_at = state, last_seq(state)
        return self._idle_at is not None and (event.seq or 0) >= self._idle_at
