"""An agent session: one agent conversation, its prompt queue, and the history viewers replay.

State machine: idle → starting → ready ⇄ prompting; any → error; → suspended; → stopped.
A prompt on a session whose agent is not running starts it first (reloading the agent's
conversation with session/load when one is known).

Concurrency: the session's ONE control task (`_run`) owns the driver's lifecycle and runs one
prompt at a time from the queue. The verbs (`prompt`, `follow_up`, `steer`, `abort`, ...) are
called from handlers; they only change the queue, request a cancel, or hand a steer to the
driver, then wake the control task — no locks. Every prompt completes exactly once
(`_complete` is guarded by the item's `done` flag): end of turn, cancel, abort, timeout, crash.

History: every viewer-visible message goes through `_append`, which gives it the next `seq`
and stores the serialized JSON in a bounded EventLog. Driver messages arrive from the driver's
single reader task and everything else from the control task or a verb, all on one event
loop, so the log's order is the order viewers see, for every viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from vm_agent import metrics
from vm_agent.agents._runner import PromptRunner
from vm_agent.agents.driver import (
    CANCELLED,
    AgentDriver,
    AgentError,
    ContentBlocks,
    Launch,
    NotSupported,
    create_driver,
)
from vm_agent.agents.permissions import PermissionBroker
from vm_agent.agents.prompts import PromptItem
from vm_agent.agents.redact import scrub_surrogates
from vm_agent.agents.registry import AgentRegistry
from vm_agent.config import Settings
from vm_agent.streams import EventLog

log = structlog.get_logger("vm_agent.agents.session")

RECOVERED = "recovered"
STATUSES = ("idle", "starting", "ready", "prompting", "error", "suspended", "stopped")


class AgentSession(PromptRunner):
    def __init__(
        self,
        session_id: str,
        workspace_id: str,
        *,
        settings: Settings,
        registry: AgentRegistry,
        launcher: Callable[[AgentSession], Awaitable[Launch]],
        agent_type: str = "pi",
        label: str = "",
        acp_session_id: str | None = None,
        created_at: float | None = None,
        permission_policy: str | None = None,
        on_change: Callable[[AgentSession], None] = lambda _s: None,
        driver_factory: Callable[..., AgentDriver] = create_driver,
    ) -> None:
        self.id = session_id
        self.workspace_id = workspace_id
        self.settings = settings
        self.agent_type = agent_type
        self.label = label
        self.acp_session_id = acp_session_id
        self.last_prompt: str | None = None
        self.created_at = created_at or time.time()
        self.updated_at = self.created_at
        self.status = "idle"
        self.error: str | None = None
        self.last_stop_reason: str | None = None
        self.model: str | None = None
        self.permission_mode: str | None = None
        self.mcp_servers: list[dict[str, Any]] = []
        self.viewer_count = 0
        self.deleted = False  # removed by DELETE: viewers are told so, not that we are going away
        self.counts = {"prompts": 0, "retries": 0, "restarts": 0, "crashes": 0}
        # items are always bytes (serialized JSON), so `len` is their size
        self.log: EventLog[bytes] = EventLog(settings.acp_message_buffer_size, settings.acp_message_buffer_bytes,
                                             len)
        self._uncounted = 0  # appended messages not yet added to the metric (see emit)
        self.permissions = PermissionBroker(permission_policy or settings.acp_permission_policy,
                                            settings.acp_permission_timeout, self.emit)
        self._registry = registry
        self._launcher = launcher
        self._on_change = on_change
        self._driver_factory = driver_factory
        self._driver: AgentDriver | None = None
        self._secrets: list[str] = []
        self._queue: deque[PromptItem] = deque()
        self._current: PromptItem | None = None
        self._current_merged: list[PromptItem] = []
        self._cancel = asyncio.Event()
        self._cancel_deadline: asyncio.Timeout | None = None  # armed by cancel() while a prompt runs
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._start_lock = asyncio.Lock()
        self._generation = 0  # bumped by stop/suspend/close/select_agent: starts begun before are stale
        self._starting: asyncio.Future[str] | None = None  # the driver's start() under way
        self._reaping: set[asyncio.Task[None]] = set()  # abandoned drivers being stopped
        self._restarts: deque[float] = deque()
        self._closing = False
        # A fresh context: the control task outlives the request that created the session, and
        # must not log under that request's id.
        self._task = asyncio.create_task(self._run(), name=f"agent-session-{session_id}",
                                         context=contextvars.Context())
        self._log = log.bind(session_id=session_id, workspace=workspace_id)

    # --- history -------------------------------------------------------------------------------

    def emit(self, message: dict[str, Any], raw: bytes | str | None = None) -> int:
        """Append one viewer-visible message with the next seq (the driver's `emit` callback).

        The log holds UTF-8 JSON bytes, ready for a WebSocket frame or an SSE `data:` line."""
        seq = self.log.last_seq + 1
        if isinstance(raw, str):
            raw = _utf8(raw)
        if raw is None or not message or "seq" in message or raw[:1] != b"{":
            # The envelope's `seq` is the gateway's: an agent's own top-level one would shadow it
            # (parsers keep the last of two equal keys) and break resuming, so it is dropped.
            message = {key: value for key, value in message.items() if key != "seq"}
            if not message:
                self.log.append(b'{"seq":%d}' % seq)
                return self._counted(seq)
            raw = _serialize(message)
        # Splicing the number in front keeps the agent's bytes as they were: no re-serializing.
        # (`message` is a non-empty object, so its text continues after "{" with a key.)
        self.log.append(raw.replace(b"{", b'{"seq":%d,' % seq, 1))
        return self._counted(seq)

    def _counted(self, seq: int) -> int:
        # The metric is counted once per burst, not per message: a Counter.inc takes a lock and
        # costs as much as the rest of emit for a streamed token.
        self._uncounted += 1
        if self._uncounted == 1:
            asyncio.get_running_loop().call_soon(self._count_messages)
        return seq

    def _count_messages(self) -> None:
        metrics.AGENT_MESSAGES.inc(self._uncounted)
        self._uncounted = 0

    def _set_status(self, status: str, error: str | None = None) -> None:
        """Change status; viewers get `agent_status` for agent lifecycle changes. ready ⇄ prompting
        is not repeated as agent_status: session_prompting / session_prompt_done say it."""
        quiet = error is None and self.error is None and {self.status, status} <= {"ready", "prompting"}
        self.status = status
        self.error = error
        self.updated_at = time.time()
        if quiet:
            return
        message: dict[str, Any] = {"type": "agent_status", "status": status, "agentType": self.agent_type}
        if error:
            message["error"] = error
        self.emit(message)

    def _queue_update(self) -> None:
        self.emit({"type": "queue_update", "queue": [item.summary() for item in self._queue]})

    # --- verbs -----------------------------------------------------------------------------------

    def prompt(self, content: ContentBlocks, *, kind: str = "prompt", request_id: Any = None,
               front: bool = False) -> dict[str, Any]:
        """Run now if nothing runs, else queue. Returns {"status": "prompting"|"queued", ...}."""
        if self._closing:
            raise AgentError("session is closed")
        item = PromptItem(content, kind, request_id)
        summary = item.summary()  # before queueing: nothing may fail once the item is queued
        busy = self._current is not None or bool(self._queue)
        item.queued = busy
        (self._queue.appendleft if front else self._queue.append)(item)
        self.last_prompt = summary["text"] or self.last_prompt
        self._on_change(self)
        if busy:
            self._queue_update()
        self._wake.set()
        if not busy:
            return {"status": "prompting", "promptId": item.id}
        # position counts what runs before it; the head of the queue runs next if nothing runs now
        position = list(self._queue).index(item) + (1 if self._current is not None else 0)
        return {"status": "queued", "promptId": item.id, "position": max(position, 1)}

    async def follow_up(self, content: ContentBlocks, request_id: Any = None) -> dict[str, Any]:
        """After the current prompt and everything queued; native when the agent offers it."""
        driver, current = self._driver, self._current
        if current is not None and not self._queue and driver is not None and driver.capabilities.supports_follow_up:
            try:
                await driver.follow_up(content)
            except (NotSupported, AgentError) as exc:
                self._log.warning("native_follow_up_failed", error=str(exc))
            else:
                item = PromptItem(content, "follow_up", request_id)
                self._merge_into(current, item)
                return {"status": "queued", "promptId": item.id, "position": 1, "native": True}
        return self.prompt(content, kind="follow_up", request_id=request_id)

    async def steer(self, content: ContentBlocks, request_id: Any = None) -> dict[str, Any]:
        """Redirect the running prompt: natively if the agent can, else cancel it and run this first."""
        driver, current = self._driver, self._current
        if current is None:
            return self.prompt(content, kind="steer", request_id=request_id, front=True)
        if driver is not None and driver.capabilities.supports_steer:
            try:
                if await driver.steer(content):
                    item = PromptItem(content, "steer", request_id)
                    self.emit({"type": "steer_delivered", "promptId": item.id, "into": current.id})
                    self._merge_into(current, item)
                    return {"status": "steered", "promptId": item.id}
            except (NotSupported, AgentError, TimeoutError) as exc:
                self._log.warning("native_steer_failed", error=str(exc))
            return self.prompt(content, kind="steer", request_id=request_id, front=True)
        result = self.prompt(content, kind="steer", request_id=request_id, front=True)
        await self.cancel()
        return result

    def _merge_into(self, current: PromptItem, item: PromptItem) -> None:
        """`item` went into the agent's running turn: it completes with that turn. If the turn
        ended while the agent was taking it (the await above), it completes now."""
        if self._current is current and not current.done:
            self._current_merged.append(item)
        else:
            self._complete(item, self.last_stop_reason or "end_turn")

    async def cancel(self) -> bool:
        """Cancel the running prompt (the queue stays). False when nothing was running."""
        if self._current is None:
            return False
        self._cancel.set()
        self._arm_cancel_deadline()
        self.permissions.cancel_all()
        if self._driver is not None:
            with contextlib.suppress(AgentError, OSError):
                await self._driver.cancel()
        return True

    def _mark_cancelled(self) -> None:
        """Before a start is called off: the prompt waiting on it then ends `cancelled`, which
        is what the user asked for, not an error about an agent that failed to start."""
        if self._current is not None:
            self._cancel.set()

    async def abort(self) -> dict[str, Any]:
        """Cancel the running prompt and drop everything queued (each dropped prompt completes)."""
        dropped = list(self._queue)
        self._queue.clear()
        for item in dropped:
            self._complete(item, CANCELLED)
        if dropped:
            self._queue_update()
        cancelled = await self.cancel()
        return {"cancelled": cancelled, "dropped": len(dropped)}

    def get_state(self) -> dict[str, Any]:
        return {
            "sessionId": self.id,
            "status": self.status,
            "agentType": self.agent_type,
            "acpSessionId": self.acp_session_id,
            "error": self.error,
            "queue": [item.summary() for item in self._queue],
            "currentPrompt": self._current.summary() if self._current else None,
            "counts": {**self.counts, "queued": len(self._queue), "messages": self.log.last_seq},
            "lastStopReason": self.last_stop_reason,
            "usage": dict(self._driver.usage) if self._driver else {},
            "agentPid": self._driver.pid if self._driver else None,
            "permissionPolicy": self.permissions.policy,
            "pendingPermissions": self.permissions.pending,
            "viewerCount": self.viewer_count,
        }

    async def new_session(self) -> str:
        """Fresh conversation: abort what runs, then a new agent session (same process if possible)."""
        await self.abort()
        await self._until_idle()
        driver = self._driver
        if driver is not None and driver.alive and driver.capabilities.supports_new_session:
            self.acp_session_id = await driver.new_session()
        else:
            await self._stop_driver()
            self.acp_session_id = None
            await self._start_agent(resume=False)
        self.emit({"type": "session_new", "acpSessionId": self.acp_session_id})
        self._on_change(self)
        return self.acp_session_id or ""

    def check_agent_type(self, agent_type: str) -> None:
        """Raises UnknownAgentType for a type the registry does not know."""
        self._registry.get(agent_type)

    async def select_agent(self, agent_type: str) -> None:
        """Switch agent type: what runs is aborted and the old agent stopped; the next start uses it."""
        self._registry.get(agent_type)
        if agent_type == self.agent_type:
            return
        await self._halt()
        self.agent_type = agent_type
        self.acp_session_id = None
        self._on_change(self)
        self._set_status("idle")

    async def ensure_started(self) -> None:
        """Start the agent now (headless `/start`), if it is not running."""
        if self._driver is None or not self._driver.alive:
            await self._start_agent(resume=True)

    async def suspend(self) -> None:
        """Stop the agent process but keep the conversation id for a later session/load."""
        await self._halt()
        self._set_status("suspended")

    async def resume(self) -> None:
        await self._start_agent(resume=True)

    async def stop(self) -> None:
        await self._halt()
        self._set_status("stopped")

    async def _halt(self) -> None:
        """Abort what runs, call off a start under way (see `_call_off_start`), stop the agent
        (and any abandoned one still being stopped: when this returns, no agent process runs)."""
        self._mark_cancelled()
        await self._call_off_start()
        await self.abort()
        await self._until_idle()
        await self._stop_driver()
        await self._reaped()

    async def close(self) -> None:
        """Stop everything for good (daemon shutdown, workspace deleted): ends the viewers' streams."""
        self._closing = True
        dropped = list(self._queue)
        self._queue.clear()
        for item in dropped:
            self._complete(item, CANCELLED)
        self._mark_cancelled()
        await self._call_off_start()
        if self._current is not None:
            await self.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stop_driver()
        await self._reaped()
        self.log.close()

    @property
    def unused(self) -> bool:
        """Nothing ever happened in it: no history, no prompt, no agent started (or starting)."""
        return (self.log.last_seq == 0 and self._current is None and not self._queue and self._driver is None
                and self._starting is None)

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def agent_running(self) -> bool:
        return self._driver is not None and self._driver.alive

    async def _until_idle(self, wait: float = 30.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._idle.wait()


def _utf8(text: str) -> bytes | None:
    """`text` as UTF-8, or None (re-serialize the message) when it holds a lone surrogate."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


def _serialize(message: dict[str, Any]) -> bytes:
    """A message as UTF-8 JSON. Whatever still carries a lone surrogate (drivers replace them
    while parsing; this is the last line) goes out with U+FFFD instead: a message that cannot
    be encoded must reach viewers changed rather than be dropped without a trace."""
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(scrub_surrogates(message), separators=(",", ":"), ensure_ascii=False).encode()
