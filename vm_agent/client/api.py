"""`AgentClient`: the typed async library a coordinator uses to drive one VM's daemon.

It speaks only the wire contract (HTTPS JSON routes, Server-Sent Events, the terminal
WebSocket), needs nothing but aiohttp, and raises only `vm_agent.client.errors` exceptions.
Agent verbs go through `…/agent-sessions/{sid}/rpc`, the FIFO scaffold's own message format
carried over HTTPS, so a coordinator that used to write JSON lines into /tmp/pi-rpc/in sends the
same objects here and gets each answer back on the same request instead of polling a file.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from vm_agent.client._transport import Transport
from vm_agent.client.errors import AgentError, ApiError, ConflictError, RequestTimeout
from vm_agent.client.events import Event, EventStream
from vm_agent.client.settling import RunResult, Settling, is_idle, last_seq
from vm_agent.client.terminals import RemoteTerminal
from vm_agent.client.tls import TlsConfig


def _seg(value: str) -> str:
    return quote(value, safe="")


class AgentClient:
    """A connection to one daemon. Use as `async with AgentClient(url, token) as client:`.

    `workspace` and `session` are the defaults for every call that takes them: most
    coordinators drive one agent session ("main") in the VM's host workspace.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        workspace: str = "host",
        session: str = "main",
        verify: TlsConfig | bool | str | None = None,
        timeout: float = 30.0,
        name: str | None = None,
        reconnect_attempts: int = 8,
    ) -> None:
        if verify is False:
            tls = TlsConfig(insecure=True)
        elif isinstance(verify, str):
            tls = TlsConfig(ca_file=verify)
        elif isinstance(verify, TlsConfig):
            tls = verify
        else:
            tls = TlsConfig()
        self._t = Transport(base_url, token, tls, timeout)
        self.workspace = workspace
        self.session = session
        url = self._t.base_url
        self.name = name or (f"{url.host}:{url.explicit_port}" if url.explicit_port else str(url.host))
        self.reconnect_attempts = reconnect_attempts
        # Called with every event `wait_result` reads (progress displays); must not block.
        self.on_event: Callable[[Event], None] | None = None

    @property
    def base_url(self) -> str:
        return str(self._t.base_url)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._t.close()

    # --- node -------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._t.request("GET", "/health", auth=False)

    async def system_info(self) -> dict[str, Any]:
        return await self._t.request("GET", "/system-info")

    async def logs(
        self, *, limit: int | None = None, cursor: str | None = None, level: str | None = None, since: str | None = None
    ) -> dict[str, Any]:
        params = {"limit": limit, "cursor": cursor, "level": level, "since": since}
        return await self._t.request("GET", "/logs", params=params)

    # --- workspaces -------------------------------------------------------------------------

    async def list_workspaces(self) -> list[dict[str, Any]]:
        return (await self._t.request("GET", "/workspaces")).get("workspaces", [])

    async def create_workspace(self, workspace_id: str, **fields: Any) -> dict[str, Any]:
        """`fields`: repository, branch, image, env, gitUserName, gitUserEmail, gitToken (camelCase)."""
        body = {"workspaceId": workspace_id, **{k: v for k, v in fields.items() if v is not None}}
        return await self._t.request("POST", "/workspaces", body=body)

    async def workspace_action(self, workspace_id: str, action: str) -> dict[str, Any]:
        """`action`: stop, restart or rebuild."""
        return await self._t.request("POST", f"/workspaces/{_seg(workspace_id)}/{action}")

    async def delete_workspace(self, workspace_id: str) -> dict[str, Any]:
        return await self._t.request("DELETE", f"/workspaces/{_seg(workspace_id)}")

    async def tabs(self, workspace: str | None = None) -> list[dict[str, Any]]:
        path = f"/workspaces/{_seg(workspace or self.workspace)}/tabs"
        return (await self._t.request("GET", path)).get("tabs", [])

    # --- agent sessions ---------------------------------------------------------------------

    def _sessions_path(self, workspace: str | None) -> str:
        return f"/workspaces/{_seg(workspace or self.workspace)}/agent-sessions"

    def _session_path(self, session: str | None, workspace: str | None) -> str:
        return f"{self._sessions_path(workspace)}/{_seg(session or self.session)}"

    async def list_sessions(self, *, workspace: str | None = None) -> list[dict[str, Any]]:
        return (await self._t.request("GET", self._sessions_path(workspace))).get("sessions", [])

    async def create_session(
        self,
        session: str | None = None,
        *,
        label: str | None = None,
        agent_type: str | None = None,
        mcp_servers: list[dict[str, Any]] | None = None,
        idempotency_key: str | None = None,
        workspace: str | None = None,
    ) -> dict[str, Any]:
        sid = session or self.session
        body = {"sessionId": sid, "label": label, "agentType": agent_type, "mcpServers": mcp_servers}
        headers = {"Idempotency-Key": idempotency_key or f"create-{sid}"}
        body = {k: v for k, v in body.items() if v is not None}
        return await self._t.request("POST", self._sessions_path(workspace), body=body, headers=headers)

    async def ensure_session(
        self, session: str | None = None, *, agent_type: str | None = None, workspace: str | None = None
    ) -> dict[str, Any]:
        """The session, created when missing; an existing one is returned as it is."""
        sid = session or self.session
        try:
            return await self.create_session(sid, agent_type=agent_type, workspace=workspace)
        except ConflictError:
            for existing in await self.list_sessions(workspace=workspace):
                if existing.get("id") == sid:
                    return existing
            raise

    async def start(
        self,
        initial_prompt: str,
        *,
        agent_type: str | None = None,
        model: str | None = None,
        permission_mode: str | None = None,
        session: str | None = None,
        workspace: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "agentType": agent_type,
            "initialPrompt": initial_prompt,
            "model": model,
            "permissionMode": permission_mode,
        }
        path = f"{self._session_path(session, workspace)}/start"
        return await self._t.request("POST", path, body={k: v for k, v in body.items() if v is not None})

    async def session_action(self, action: str, *, session: str | None = None, workspace: str | None = None) -> Any:
        """`action`: cancel, stop, suspend or resume (HTTP routes that answer with the session)."""
        return await self._t.request("POST", f"{self._session_path(session, workspace)}/{action}")

    async def rpc(
        self, command: str, message: str | None = None, *, session: str | None = None, workspace: str | None = None
    ) -> dict[str, Any]:
        """Send one FIFO-protocol command; an answer with `success: false` raises `AgentError`."""
        body: dict[str, Any] = {"type": command}
        if message is not None:
            body["message"] = message
        try:
            answer = await self._t.request("POST", f"{self._session_path(session, workspace)}/rpc", body=body)
        except ApiError as exc:
            if exc.body.get("type") != "response":
                raise
            answer = exc.body  # the verb was understood and refused: an agent-level failure
        if isinstance(answer, dict) and answer.get("success") is False:
            reason = answer.get("error") or answer.get("message") or "no reason given"
            raise AgentError(f"{command} failed: {reason}", answer)
        return answer

    async def prompt(self, text: str, **where: Any) -> dict[str, Any]:
        return await self.rpc("prompt", text, **where)

    async def steer(self, text: str, **where: Any) -> dict[str, Any]:
        return await self.rpc("steer", text, **where)

    async def follow_up(self, text: str, **where: Any) -> dict[str, Any]:
        return await self.rpc("follow_up", text, **where)

    async def abort(self, **where: Any) -> dict[str, Any]:
        return await self.rpc("abort", **where)

    async def new_session(self, **where: Any) -> dict[str, Any]:
        return await self.rpc("new_session", **where)

    async def get_state(self, **where: Any) -> dict[str, Any]:
        """The session's state (status, agentType, queue, ...) without the RPC envelope."""
        answer = await self.rpc("get_state", **where)
        data = answer.get("data")
        if isinstance(data, dict):
            return data
        return {k: v for k, v in answer.items() if k not in ("type", "command", "success", "id")}

    async def cancel(self, **where: Any) -> Any:
        return await self.session_action("cancel", **where)

    async def stop(self, **where: Any) -> Any:
        return await self.session_action("stop", **where)

    def events(self, after: int = 0, *, session: str | None = None, workspace: str | None = None) -> EventStream:
        """History after `after` then live events; reconnects and resumes without duplicates."""
        path = f"{self._session_path(session, workspace)}/events"
        return EventStream(self._t, path, after, reconnect_attempts=self.reconnect_attempts)

    async def wait_idle(
        self, timeout_s: float | None = None, *, session: str | None = None, workspace: str | None = None
    ) -> dict[str, Any]:
        """Wait until the session runs no prompt and has none queued; returns its state."""
        where = {"session": session, "workspace": workspace}
        try:
            async with asyncio.timeout(timeout_s):
                state = await self.get_state(**where)
                if is_idle(state):
                    return state
                events = self.events(last_seq(state), **where)
                settled = Settling(lambda: self.get_state(**where))
                try:
                    async for event in events:
                        if await settled.check(event):
                            return settled.state
                finally:
                    await events.aclose()
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: session did not become idle within {timeout_s:g}s") from None
        raise RequestTimeout(f"{self.name}: event stream ended before the session became idle")

    async def send_prompt(self, text: str, *, session: str | None = None, workspace: str | None = None) -> int:
        """Make sure the session exists, prompt it, and return the seq to read its events from.

        The seq is taken before the prompt is sent, so nothing the prompt produces can be
        missed, however fast the agent is.
        """
        where = {"session": session, "workspace": workspace}
        await self.ensure_session(session, workspace=workspace)
        after = last_seq(await self.get_state(**where))
        await self.prompt(text, **where)
        return after

    async def wait_result(
        self, after: int, timeout_s: float | None = None, *, session: str | None = None, workspace: str | None = None
    ) -> RunResult:
        """Read events after `after` until the session settles; the reply is the last turn's text."""
        where = {"session": session, "workspace": workspace}
        turn: list[str] = []
        stop_reason: str | None = None
        error: str | None = None
        events = self.events(after, **where)
        settled = Settling(lambda: self.get_state(**where))
        try:
            async with asyncio.timeout(timeout_s):
                async for event in events:
                    kind = event.kind
                    if kind == "session_prompting":
                        turn, stop_reason, error = [], None, None
                    elif kind == "prompt_result":
                        stop_reason = (event.data.get("result") or {}).get("stopReason")
                    elif kind == "prompt_error":
                        error = str((event.data.get("error") or {}).get("message") or "prompt failed")
                    elif kind == "session_prompt_done" and event.data.get("error"):
                        error = str(event.data["error"])
                    elif kind == "agent_status" and event.data.get("status") == "error":
                        error = str(event.data.get("error") or "agent error")
                    elif kind == "agent_crash_report" and not event.data.get("recovered"):
                        error = str(event.data.get("message") or "agent crashed")
                    turn.append(event.text())
                    if self.on_event is not None:
                        self.on_event(event)
                    if await settled.check(event):
                        return RunResult("".join(turn), stop_reason, settled.state, error)
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: prompt did not finish within {timeout_s:g}s") from None
        finally:
            await events.aclose()
        raise RequestTimeout(f"{self.name}: event stream ended before the prompt finished")

    async def run(
        self, text: str, timeout_s: float | None = None, *, session: str | None = None, workspace: str | None = None
    ) -> RunResult:
        """Prompt and wait until the session settles: `send_prompt` then `wait_result`."""
        after = await self.send_prompt(text, session=session, workspace=workspace)
        return await self.wait_result(after, timeout_s, session=session, workspace=workspace)

    # --- terminals --------------------------------------------------------------------------

    async def open_terminal(
        self,
        session_id: str | None = None,
        *,
        rows: int = 24,
        cols: int = 80,
        name: str | None = None,
        work_dir: str | None = None,
        workspace: str | None = None,
    ) -> RemoteTerminal:
        """Create a new terminal session (id chosen here when not given) and connect to it."""
        term = RemoteTerminal(
            self._t, session_id or f"vmagent-{secrets.token_hex(4)}", rows=rows, cols=cols, workspace=workspace
        )
        await term.create(name=name, work_dir=work_dir)
        return term

    async def attach_terminal(
        self,
        session_id: str,
        *,
        offset: int | None = None,
        rows: int = 24,
        cols: int = 80,
        workspace: str | None = None,
    ) -> RemoteTerminal:
        """Attach to a running session; `offset` replays from that byte on (None: all retained)."""
        term = RemoteTerminal(self._t, session_id, rows=rows, cols=cols, workspace=workspace)
        await term.attach(offset)
        return term

    async def list_terminals(self, *, workspace: str | None = None) -> list[dict[str, Any]]:
        """The caller's terminal sessions (over a short-lived socket, as the contract offers)."""
        term = RemoteTerminal(self._t, "", rows=24, cols=80, workspace=workspace)
        await term._connect()
        try:
            await term._send({"type": "list_sessions"})
            answer = await term._await_answer("session_list")
        finally:
            await term.detach()
        return (answer.get("data") or {}).get("sessions", [])
