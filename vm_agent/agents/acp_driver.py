"""The ACP driver: Agent Client Protocol (v1) sessions over a JsonRpcConnection.

The client advertises no fs or terminal capabilities: agents then use their own tools inside
the workspace, and any fs/terminal request that arrives anyway is answered -32601 rather than
touching files from the daemon's side of a container boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import structlog

from vm_agent import __version__ as _version
from vm_agent.agents.acp import INVALID_PARAMS, METHOD_NOT_FOUND, JsonRpcConnection, RpcError
from vm_agent.agents.driver import (
    AgentCrashed,
    AgentDriver,
    AgentError,
    AgentStartError,
    ContentBlocks,
    NotSupported,
    PromptFailed,
    TransientProviderError,
    looks_transient,
    stop_shielded,
)
from vm_agent.agents.permissions import auto_outcome, cancelled_outcome
from vm_agent.agents.process import AgentProcess

log = structlog.get_logger("vm_agent.agents.acp")

PROTOCOL_VERSION = 1
STEER_METHOD = "_session/steering"


class AcpDriver(AgentDriver):
    protocol = "acp"

    _process: AgentProcess | None = None
    _conn: JsonRpcConnection | None = None
    _loading = False
    _cwd: str = "."

    async def start(self, resume_session_id: str | None = None) -> str:
        self._permission_waits: set[asyncio.Future[Any]] = set()
        self._process = await AgentProcess.spawn(self.spec, self.launch, self.settings)
        self._conn = JsonRpcConnection(self._process, on_notification=self._notification,
                                       on_request=self._agent_request, on_close=self._closed)
        self._conn.start()
        self._cwd = self.launch.cwd or self.launch.placement.workdir
        try:
            init = await self._conn.request("initialize", {
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False},
                "clientInfo": {"name": "vm-agent", "version": _version},
            }, self.settings.acp_init_timeout)
            self._read_capabilities(init if isinstance(init, dict) else {})
            session_id = await self._open_session(resume_session_id)
            await self._apply_launch_options()
        except (RpcError, AgentCrashed, TimeoutError, OSError) as exc:
            stderr = self.stderr_tail()
            await self.stop()
            what = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise AgentStartError(f"agent {self.spec.name!r} failed to start: {what}"
                                  + (f"; stderr: {stderr[-500:]}" if stderr else "")) from exc
        except BaseException:
            # Cancelled (the session was stopped or closed meanwhile) or a bug: the half-started
            # process must not outlive this call.
            await stop_shielded(self)
            raise
        return session_id

    def _read_capabilities(self, init: dict[str, Any]) -> None:
        caps = init.get("agentCapabilities") or {}
        meta = init.get("_meta") or {}
        steering = meta.get("steering") if isinstance(meta, dict) else None
        self.capabilities.supports_load = bool(isinstance(caps, dict) and caps.get("loadSession"))
        self.capabilities.supports_steer = isinstance(steering, dict) and steering.get("supported") is True
        self.capabilities.supports_follow_up = False
        self.capabilities.supports_new_session = True

    async def _open_session(self, resume_session_id: str | None) -> str:
        assert self._conn is not None
        params = {"cwd": self._cwd, "mcpServers": list(self.launch.mcp_servers)}
        if resume_session_id and self.capabilities.supports_load:
            # The agent replays the conversation as session/update notifications before it
            # answers; viewers already have (or do not want) them, so they are not delivered.
            self._loading = True
            try:
                await self._conn.request("session/load", {"sessionId": resume_session_id, **params},
                                         self.settings.acp_init_timeout)
                self.session_id = resume_session_id
                return resume_session_id
            except RpcError as exc:
                log.warning("acp_session_load_failed", agent=self.spec.name, error=exc.message)
            finally:
                self._loading = False
        result = await self._conn.request("session/new", params, self.settings.acp_init_timeout)
        session_id = result.get("sessionId") if isinstance(result, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise RpcError(INVALID_PARAMS, "session/new returned no sessionId")
        self.session_id = session_id
        return session_id

    async def _apply_launch_options(self) -> None:
        for setter, value in ((self.set_model, self.launch.model), (self.set_mode, self.launch.permission_mode)):
            if value:
                try:
                    await setter(value)
                except (NotSupported, RpcError) as exc:
                    log.warning("acp_launch_option_ignored", agent=self.spec.name, value=value, error=str(exc))

    # --- reader callbacks (run inside the reader task) -------------------------------------------

    def _notification(self, message: dict[str, Any], raw: bytes) -> Awaitable[None] | None:
        if message.get("method") == "session/update":
            if self._loading:
                return None
            params = message.get("params")
            update = params.get("update") if params.__class__ is dict else None
            if update.__class__ is dict and update.get("sessionUpdate") == "usage_update":
                self.usage = {k: v for k, v in update.items() if k != "sessionUpdate"}
        return self.deliver_nowait(message, raw)

    def _agent_request(self, method: str, params: Any) -> Any:
        if method != "session/request_permission":
            # fs/* and terminal/* are not advertised; anything else is unknown to us.
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "session/request_permission needs params")
        if self._request_permission is None:
            return _resolved(auto_outcome(params.get("options")))
        pending = asyncio.ensure_future(self._request_permission(params))
        self._permission_waits.add(pending)
        pending.add_done_callback(self._permission_waits.discard)
        return _or_cancelled(pending)

    def _closed(self, returncode: int | None) -> None:
        self._exited(returncode)

    # --- operations ------------------------------------------------------------------------------

    def _connection(self) -> JsonRpcConnection:
        if self._conn is None or self._conn.closed:
            raise AgentCrashed("agent is not running", self._process.returncode if self._process else None,
                               self.stderr_tail())
        return self._conn

    async def prompt(self, content: ContentBlocks) -> str:
        conn = self._connection()
        try:
            result = await conn.request("session/prompt", {"sessionId": self.session_id, "prompt": content},
                                        self.settings.acp_prompt_timeout)
        except RpcError as exc:
            if looks_transient(exc.message, exc.data):
                raise TransientProviderError(exc.message) from exc
            raise PromptFailed(exc.message, exc.code, exc.data) from exc
        except TimeoutError:
            await self.cancel()
            raise PromptFailed("prompt timed out", -32000) from None
        stop_reason = result.get("stopReason") if isinstance(result, dict) else None
        return stop_reason if isinstance(stop_reason, str) else "end_turn"

    async def cancel(self) -> None:
        # ACP: pending permission requests of a cancelled turn are answered "cancelled".
        for pending in list(self._permission_waits):
            pending.cancel()
        if self._conn is not None and not self._conn.closed and self.session_id:
            # Best effort, briefly: an agent that does not read its stdin cannot take it, and
            # whoever cancels (a viewer, stop) must not wait on it. The session's cancel
            # deadline stops an agent that does not end its turn.
            with contextlib.suppress(AgentCrashed):
                await self._conn.notify("session/cancel", {"sessionId": self.session_id},
                                        within=self.settings.acp_stop_grace_period)

    async def steer(self, content: ContentBlocks) -> bool:
        if not self.capabilities.supports_steer:
            raise NotSupported("this agent does not advertise steering")
        result = await self._connection().request(
            STEER_METHOD, {"sessionId": self.session_id, "prompt": content, "idleBehavior": "promptRequired"},
            self.settings.acp_rpc_timeout)
        outcome = result.get("outcome") if isinstance(result, dict) else None
        return outcome != "promptRequired"

    async def new_session(self) -> str:
        return await self._open_session(None)

    async def set_mode(self, mode_id: str) -> None:
        await self._connection().request("session/set_mode", {"sessionId": self.session_id, "modeId": mode_id},
                                         self.settings.acp_rpc_timeout)

    async def set_model(self, model: str) -> None:
        try:
            await self._connection().request("session/set_model", {"sessionId": self.session_id, "modelId": model},
                                             self.settings.acp_rpc_timeout)
        except RpcError as exc:
            if exc.code != METHOD_NOT_FOUND:
                raise
            await self._connection().request(
                "session/set_config_option", {"sessionId": self.session_id, "configId": "model", "value": model},
                self.settings.acp_rpc_timeout)

    async def stop(self) -> None:
        with contextlib.suppress(AgentError, OSError):  # bounded, and never in the way of the stop
            await self.cancel()
        if self._process is not None:
            await self._process.stop()
        if self._conn is not None:
            await self._conn.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive and not (self._conn and self._conn.closed)

    def stderr_tail(self) -> str:
        return self._process.stderr_tail() if self._process is not None else ""


def _resolved(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def _or_cancelled(pending: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await pending
    except asyncio.CancelledError:
        if pending.cancelled():
            return cancelled_outcome()
        raise
