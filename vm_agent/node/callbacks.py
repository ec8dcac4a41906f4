"""Calls the daemon makes to the control plane: `ready` once at start, then heartbeats.

`ready` is retried with capped exponential backoff until it succeeds (a VM that booted while
the control plane was deploying must still register). A heartbeat that fails is logged and the
next one is sent on schedule; a `refreshedToken` in a heartbeat answer replaces the callback
token for every later call, so the control plane can rotate it without touching the VM.

Nothing the control plane answers may end these loops: a garbled body (a proxy glitch, a
half-deployed worker) or a bug of ours is logged and retried like a network error, because a
dead loop means a node that is never marked ready, or one the control plane believes dead. A
4xx other than 408/429 will not cure itself (wrong token, unknown node), so it is logged as an
error for an operator, and still retried with backoff: the control plane may be fixed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from vm_agent import __version__
from vm_agent.config import Settings
from vm_agent.identity import Identity
from vm_agent.node import sysinfo

log = structlog.get_logger("vm_agent.callbacks")

_TRANSIENT_4XX = (408, 429)


class CallbackError(RuntimeError):
    """The control plane answered with an HTTP error status."""

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"{path}: HTTP {status}")
        self.status = status

    @property
    def rejected(self) -> bool:
        """A 4xx that retrying alone will not fix (bad token, unknown node, bad request)."""
        return 400 <= self.status < 500 and self.status not in _TRANSIENT_4XX


def _log_failure(event: str, exc: Exception, **fields: Any) -> None:
    """One log line per failed call, at a level that says whether anyone needs to act."""
    if isinstance(exc, CallbackError) and exc.rejected:
        log.error(event, error=str(exc), status=exc.status, **fields)
    elif isinstance(exc, (aiohttp.ClientError, TimeoutError, CallbackError, ValueError)):
        log.warning(event, error=f"{type(exc).__name__}: {exc}", **fields)
    else:  # not the network, not the answer: our bug. Keep the stack, keep the loop.
        log.exception(event, error=f"{type(exc).__name__}: {exc}", **fields)


class ControlPlaneClient:
    def __init__(
        self, settings: Settings, identity: Identity, active_workspaces: Callable[[], Awaitable[int]]
    ) -> None:
        assert settings.control_plane_url
        self._settings = settings
        self._identity = identity
        self._base = settings.control_plane_url.rstrip("/")
        self._token = settings.read_callback_token()
        self._active_workspaces = active_workspaces
        self._session: aiohttp.ClientSession | None = None

    @property
    def token(self) -> str | None:
        return self._token

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._settings.callback_timeout))
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with self._session.post(f"{self._base}{path}", json=body, headers=headers) as response:
            if response.status >= 300:
                raise CallbackError(path, response.status)
            if response.content_type == "application/json":
                answer = await response.json()  # ValueError when the body is not JSON
                return answer if isinstance(answer, dict) else {}
            return {}

    async def send_ready(self) -> None:
        """POST /api/nodes/{id}/ready until it succeeds."""
        delay = self._settings.ready_initial_backoff
        path = f"/api/nodes/{self._identity.node_id}/ready"
        while True:
            try:
                await self._post(path, {"agentVersion": __version__})
                log.info("control_plane_ready_sent")
                return
            except Exception as exc:  # CancelledError is not an Exception: shutdown still stops us
                _log_failure("control_plane_ready_failed", exc, retry_in=round(delay, 2))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self._settings.ready_max_backoff)

    async def send_heartbeat(self) -> None:
        memory = await asyncio.to_thread(sysinfo.memory)
        disk = await asyncio.to_thread(sysinfo.disk, "/")
        body = {
            "nodeId": self._identity.node_id,
            "agentVersion": __version__,
            "activeWorkspaces": await self._active_workspaces(),
            "metrics": {
                "cpuLoadAvg1": sysinfo.load_average()["loadAvg1"],
                "memoryPercent": memory["usedPercent"],
                "diskPercent": disk["usedPercent"],
            },
        }
        answer = await self._post(f"/api/nodes/{self._identity.node_id}/heartbeat", body)
        refreshed = answer.get("refreshedToken")
        if isinstance(refreshed, str) and refreshed and refreshed != self._token:
            self._token = refreshed
            log.info("callback_token_refreshed")

    async def run(self) -> None:
        """Ready, then a heartbeat every HEARTBEAT_INTERVAL, forever (cancel to stop)."""
        try:
            await self.send_ready()
            while True:
                await asyncio.sleep(self._settings.heartbeat_interval)
                try:
                    await self.send_heartbeat()
                except Exception as exc:  # the next heartbeat is the retry
                    _log_failure("heartbeat_failed", exc)
        finally:
            if self._session is not None:
                await self._session.close()

