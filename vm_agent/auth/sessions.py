"""Login sessions behind the `vm_session` cookies.

Browsers cannot put an Authorization header on a WebSocket, so a `?token=` login is traded for
an HttpOnly cookie naming an in-memory session. Bounded by count (oldest evicted) and by age;
memory only, so a daemon restart logs browsers out (they still hold a token to log in again).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from vm_agent.auth.principal import Principal


class SessionStore:
    def __init__(self, ttl: float, max_count: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal) -> str:
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = (principal, self._clock() + self.ttl)
        while len(self._sessions) > self.max_count:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str) -> Principal | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        principal, expires = entry
        if self._clock() >= expires:
            del self._sessions[session_id]
            return None
        return principal

    def revoke(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
