"""Answers to ACP `session/request_permission`, by policy: auto, ask (a viewer decides), deny.

The answer shape is ACP's RequestPermissionOutcome: `{"outcome": {"outcome": "selected",
"optionId": ...}}` or `{"outcome": {"outcome": "cancelled"}}`. Option kinds are `allow_once`,
`allow_always`, `reject_once`, `reject_always`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

POLICIES = ("auto", "ask", "deny")
_ALLOW = ("allow_once", "allow_always")
_REJECT = ("reject_once", "reject_always")


def _options(options: Any) -> list[dict[str, Any]]:
    return [o for o in options if isinstance(o, dict) and isinstance(o.get("optionId"), str)] \
        if isinstance(options, list) else []


def selected(option_id: str) -> dict[str, Any]:
    return {"outcome": {"outcome": "selected", "optionId": option_id}}


def cancelled_outcome() -> dict[str, Any]:
    return {"outcome": {"outcome": "cancelled"}}


def auto_outcome(options: Any) -> dict[str, Any]:
    """Approve with the first allow option the agent offers (its preferred one comes first)."""
    for option in _options(options):
        if option.get("kind") in _ALLOW:
            return selected(option["optionId"])
    return cancelled_outcome()


def deny_outcome(options: Any) -> dict[str, Any]:
    """Reject with the first reject option; an agent that offers none gets `cancelled`."""
    for option in _options(options):
        if option.get("kind") in _REJECT:
            return selected(option["optionId"])
    return cancelled_outcome()


def valid_answer(options: Any, answer: Any) -> dict[str, Any] | None:
    """A viewer's answer normalized to an outcome, or None when it names no offered option.

    Accepts the ACP result shape ({"outcome": {...}}), the bare outcome, or {"optionId": ...}.
    """
    if not isinstance(answer, dict):
        return None
    outcome = answer.get("outcome", answer)
    if isinstance(outcome, dict) and outcome.get("outcome") == "cancelled":
        return cancelled_outcome()
    option_id = outcome.get("optionId") if isinstance(outcome, dict) else None
    if option_id is None:
        option_id = answer.get("optionId")
    if isinstance(option_id, str) and any(o["optionId"] == option_id for o in _options(options)):
        return selected(option_id)
    return None


class PermissionBroker:
    """Turns an agent's permission requests into answers according to the session's policy.

    `ask` relays the request to viewers as a JSON-RPC `permission/request` (id "perm-N") in the
    session's event log and waits for the first valid viewer answer; after `timeout` seconds the
    request is denied, so an agent never blocks forever on a tab nobody looks at.
    """

    def __init__(self, policy: str, timeout: float, emit: Callable[[dict[str, Any]], None]) -> None:
        if policy not in POLICIES:
            raise ValueError(f"permission policy must be one of {POLICIES}")
        self.policy = policy
        self._timeout = timeout
        self._emit = emit
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], Any, asyncio.TimerHandle]] = {}

    def request(self, params: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Called from the driver's reader task; emits synchronously, returns the answer's future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        options = params.get("options")
        if self.policy == "auto":
            future.set_result(auto_outcome(options))
        elif self.policy == "deny":
            future.set_result(deny_outcome(options))
        else:
            request_id = f"perm-{next(self._ids)}"
            timer = loop.call_later(self._timeout, self._expire, request_id)
            self._pending[request_id] = (future, options, timer)
            future.add_done_callback(lambda _f: self._forget(request_id))
            self._emit({"jsonrpc": "2.0", "id": request_id, "method": "permission/request", "params": params})
        return future

    def answer(self, request_id: Any, answer: Any) -> bool:
        """A viewer's JSON-RPC response; False when the id is unknown/answered or the option invalid."""
        entry = self._pending.get(request_id) if isinstance(request_id, str) else None
        if entry is None:
            return False
        future, options, _timer = entry
        outcome = valid_answer(options, answer)
        if outcome is None or future.done():
            return False
        future.set_result(outcome)
        self._emit({"type": "permission_resolved", "id": request_id, "outcome": outcome["outcome"],
                    "reason": "answered"})
        return True

    def _expire(self, request_id: str) -> None:
        entry = self._pending.get(request_id)
        if entry is not None and not entry[0].done():
            outcome = deny_outcome(entry[1])
            entry[0].set_result(outcome)
            self._emit({"type": "permission_resolved", "id": request_id, "outcome": outcome["outcome"],
                        "reason": "timeout"})

    def _forget(self, request_id: str, reason: str = "cancelled") -> None:
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        entry[2].cancel()
        if entry[0].cancelled():
            # Nobody answered it: the driver gave up on it (its turn was cancelled or timed out,
            # or it was stopped). Viewers must not keep a dialog open for it.
            self._emit({"type": "permission_resolved", "id": request_id,
                        "outcome": cancelled_outcome()["outcome"], "reason": reason})

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def cancel_all(self, reason: str = "cancelled") -> None:
        """The turn was cancelled or ended, or the agent exited (`reason` "agent_exited"): ACP
        wants its open permission requests answered `cancelled`, and viewers are told why."""
        for request_id, (future, _options, _timer) in list(self._pending.items()):
            if not future.done():
                future.set_result(cancelled_outcome())
                self._emit({"type": "permission_resolved", "id": request_id,
                            "outcome": cancelled_outcome()["outcome"], "reason": reason})
            elif future.cancelled():  # the driver dropped it a moment ago: tell viewers now
                self._forget(request_id, reason)
