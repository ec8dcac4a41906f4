"""`AgentClient`: the typed async library a coordinator uses to drive one VM's daemon.

It speaks only the wire contract (HTTPS JSON routes, Server-Sent Events, the terminal
WebSocket), needs nothing but aiohttp, and raises only `vm_agent.client.errors` exceptions.
Agent verbs go through `…/agent-sessions/{sid}/rpc`, the FIFO scaffold's own message format
carried over HTTPS, so a coordinator that used to write JSON lines into /tmp/pi-rpc/in sends the
same objects here and gets each answer back on the same request instead of polling a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from vm_agent.client._transport import Transport
from vm_agent.client.errors import AgentError, ApiError, ClientError, ConflictError, RequestTimeout
from vm_agent.client.events import DEFAULT_KEEPALIVE_INTERVAL, MISSED_KEEPALIVES, Event, EventStream
from vm_agent.client.prompts import PromptReply, RunResult, SentPrompt
from vm_agent.client.settling import Settling, is_idle, last_seq
from vm_agent.client.terminals import DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_RATE, RemoteTerminal
from vm_agent.client.tls import TlsConfig


def _seg(value: str) -> str:
    return quote(value, safe="")


class AgentClient:
    """A connection to one daemon. Use as `async with AgentClient(url, token) as client:`.

    `workspace` and `session` are the defaults for every call that takes them: most
    coordinators drive one agent session ("main") in the VM's host workspace.

    `keepalive_interval` is the daemon's ACP_PING_INTERVAL: an event stream that stays silent
    for `MISSED_KEEPALIVES` of them is taken for a dead connection and reconnected (then, after
    `reconnect_attempts` failures in a row, given up). Set too short for a daemon, it costs only
    a reconnect now and then, since a connection that works never counts as a failure.
    `terminal_message_rate`/`_burst` pace what a terminal socket sends, under the daemon's
    TERMINAL_WS_MESSAGE_RATE/_BURST (it closes a socket that sends faster).
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
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        terminal_message_rate: float = DEFAULT_MESSAGE_RATE,
        terminal_message_burst: int = DEFAULT_MESSAGE_BURST,
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
        self.keepalive_interval = keepalive_interval
        self.terminal_message_rate = terminal_message_rate
        self.terminal_message_burst = terminal_message_burst
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
        return EventStream(
            self._t,
            path,
            after,
            reconnect_attempts=self.reconnect_attempts,
            read_timeout=MISSED_KEEPALIVES * self.keepalive_interval,
        )

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

    async def send_prompt(self, text: str, *, session: str | None = None, workspace: str | None = None) -> SentPrompt:
        """Make sure the session exists, prompt it, and say where its events start and its id.

        The seq is taken before the prompt is sent, so nothing the prompt produces can be
        missed, however fast the agent is; the id picks its events out of everyone else's.
        """
        where = {"session": session, "workspace": workspace}
        await self.ensure_session(session, workspace=workspace)
        after = last_seq(await self.get_state(**where))
        answer = await self.prompt(text, **where)
        return SentPrompt.from_answer(after, answer)

    async def wait_result(
        self,
        sent: SentPrompt | int,
        timeout_s: float | None = None,
        *,
        session: str | None = None,
        workspace: str | None = None,
    ) -> RunResult:
        """Read events until the prompt `sent` has finished; the reply is its own turn's text.

        It ends at that prompt's `session_prompt_done` (or that of the steer that replaced it),
        whatever runs or is queued before or after it. Given a bare seq (or a daemon that sends
        no prompt ids) there is no prompt to follow: it waits until the session settles.
        """
        if isinstance(sent, int):
            sent = SentPrompt(sent)
        where = {"session": session, "workspace": workspace}
        reply = PromptReply(sent.prompt_id)
        events = self.events(sent.after, **where)
        settled = Settling(lambda: self.get_state(**where)) if sent.prompt_id is None else None
        try:
            async with asyncio.timeout(timeout_s):
                async for event in events:
                    if reply.wants_state(event):  # a gap: was the prompt's end among the lost events?
                        with contextlib.suppress(ClientError):
                            reply.seen_state(await self.get_state(**where))
                    finished = reply.feed(event)
                    if self.on_event is not None:
                        self.on_event(event)
                    if settled is not None and await settled.check(event):
                        return reply.result(settled.state)
                    if finished:
                        return reply.result(await self._state_after(where))
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: prompt did not finish within {timeout_s:g}s") from None
        finally:
            await events.aclose()
        raise RequestTimeout(f"{self.name}: event stream ended before the prompt finished")

    async def _state_after(self, where: dict[str, Any]) -> dict[str, Any]:
        """The session's state once the prompt is over, for `RunResult.state`; the prompt's
        outcome is already known, so failing to read it must not turn into a failed prompt."""
        with contextlib.suppress(ClientError):
            return await self.get_state(**where)
        return {}

    async def run(
        self, text: str, timeout_s: float | None = None, *, session: str | None = None, workspace: str | None = None
    ) -> RunResult:
        """Prompt and wait until that prompt has finished: `send_prompt` then `wait_result`."""
        sent = await self.send_prompt(text, session=session, workspace=workspace)
        return await self.wait_result(sent, timeout_s, session=session, workspace=workspace)

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
        term = self._terminal(session_id or f"vmagent-{secrets.token_hex(4)}", rows, cols, workspace)
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
        term = self._terminal(session_id, rows, cols, workspace)
        await term.attach(offset)
        return term

    def _terminal(self, session_id: str, rows: int, cols: int, workspace: str | None) -> RemoteTerminal:
        return RemoteTerminal(
            self._t,
            session_id,
            rows=rows,
            cols=cols,
            workspace=workspace,
            message_rate=self.terminal_message_rate,
            message_burst=self.terminal_message_burst,
        )

    async def list_terminals(self, *, workspace: str | None = None) -> list[dict[str, Any]]:
        """The caller's terminal sessions (over a short-lived socket, as the contract offers)."""
        term = self._terminal("", 24, 80, workspace)
        await term._connect()
        try:
            await term._send({"type": "list_sessions"})
            answer = await term._await_answer("session_list")
        finally:
            await term.detach()
        return (answer.get("data") or {}).get("sessions", [])
