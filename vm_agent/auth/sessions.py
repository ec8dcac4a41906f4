"""Login sessions behind the `vm_session` cookies.

Browsers cannot put an Authorization header on a WebSocket, so a `?token=` login is traded for
an HttpOnly cookie naming an in-memory session. Bounded by count (oldest evicted) and by age;
memory only, so a daemon restart logs browsers out (they still hold a token to log in again).

A session never outlives the token it was made from: it ends at the earlier of SESSION_TTL
and the token's `exp` plus JWT_LEEWAY, the same instant the token itself stops being accepted.
Otherwise a token of a few minutes, used once in a link, would be a 24-hour cookie.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from vm_agent.auth.principal import Principal


class SessionStore:
    def __init__(
        self, ttl: float, max_count: int, clock: Callable[[], float] = time.time, *, leeway: float = 0.0
    ) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.leeway = leeway
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _token_deadline(self, principal: Principal) -> float:
        return float("inf") if principal.expires_at is None else principal.expires_at + self.leeway

    def create(self, principal: Principal) -> str:
        session_id = secrets.token_urlsafe(32)
        expires = min(self._clock() + self.ttl, self._token_deadline(principal))
        self._sessions[session_id] = (principal, expires)
        while len(self._sessions) > self.max_count:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str) -> Principal | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        principal, expires = entry
        if self._clock() >= expires:  # `create` stored the earlier of TTL and token deadline
            del self._sessions[session_id]
            return None
        return principal

    def remaining(self, session_id: str) -> float:
        """Seconds the session has left (0 when it is gone): the login cookie's max_age."""
        entry = self._sessions.get(session_id)
        return max(0.0, entry[1] - self._clock()) if entry is not None else 0.0

    def revoke(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
