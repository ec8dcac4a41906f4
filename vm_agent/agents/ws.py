"""`/agent/ws`: a viewer of one agent session (PROTOCOL.md §5.4).

Two tasks per socket: the sender follows the session's event log from the viewer's position
(replay, then live) and the receiver parses what the viewer sends. The viewer never talks to
the agent directly: prompts go through the session's queue, permission answers through its
broker, and anything we do not understand is answered -32601 on this socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from vm_agent import appkeys, wsutil
from vm_agent.agents.driver import AgentError
from vm_agent.agents.gateway import AgentGateway
from vm_agent.agents.prompts import text_blocks
from vm_agent.agents.registry import UnknownAgentType
from vm_agent.agents.session import AgentSession
from vm_agent.agents.verbs import VERBS, run_verb
from vm_agent.agents.viewers import Batch, follow
from vm_agent.agents.wsframes import SharedFrames
from vm_agent.auth import MANAGEMENT, USER, authenticate, set_login_cookies
from vm_agent.errors import BadRequest, NotFound
from vm_agent.workspaces.placement import HOST_WORKSPACE
from vm_agent.wsframe import text_frames

log = structlog.get_logger("vm_agent.agents.ws")

WRITE_HIGH_WATER = 1024 * 1024
WORKSPACE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLOSE_SESSION_DELETED = 4404  # the session was deleted: a client should close its view, not reconnect
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


def int_param(raw: str | None, name: str) -> int:
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code=f"invalid_{name}") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative", code=f"invalid_{name}")
    return value


async def agent_ws(request: web.Request) -> web.StreamResponse:
    settings = request.app[appkeys.SETTINGS]
    gateway: AgentGateway = request.app[appkeys.AGENTS]
    query_ws = request.query.get("workspace") or None
    if query_ws is not None and not WORKSPACE_ID.fullmatch(query_ws):
        raise BadRequest("workspace id must be 1-64 chars of [A-Za-z0-9_-]", code="invalid_workspace_id")
    principal = await authenticate(request, kinds={USER, MANAGEMENT}, workspace=query_ws)
    workspace = query_ws or principal.workspace_id or settings.workspace_id or HOST_WORKSPACE
    after = int_param(request.query.get("after"), "after")
    session_id = request.query.get("sessionId") or None
    session = gateway.find(workspace, session_id) if session_id else None
    if session is None:
        if session_id and gateway.was_deleted(workspace, session_id):
            raise NotFound(f"agent session {session_id!r} was deleted", code="session_deleted")
        session, _ = await gateway.create(workspace, session_id, agent_type=request.query.get("agentType") or None)
    # Counted from here, not from the handshake: a session someone is attaching to is not one
    # the session cap may evict as unused.
    session.viewer_count += 1
    try:
        return await _serve(request, session, principal.user_id, after)
    finally:
        session.viewer_count -= 1
        if session.viewer_count < 2:
            _shared_frames.pop(session, None)


async def _serve(request: web.Request, session: AgentSession, user: str, after: int) -> web.StreamResponse:
    """The socket of one viewer of `session`, from the handshake until either side leaves."""
    settings = request.app[appkeys.SETTINGS]
    gateway: AgentGateway = request.app[appkeys.AGENTS]
    ws = web.WebSocketResponse(max_msg_size=settings.acp_ws_max_message_bytes, autoping=True)
    set_login_cookies(request, ws)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client left during the handshake
        return ws
    wsutil.track(request, ws)
    viewer = log.bind(session_id=session.id, workspace=session.workspace_id, user=user)
    viewer.info("agent_viewer_attached", after=after)
    close = functools.partial(wsutil.close_within, ws, transport, timeout=settings.ws_close_timeout)
    sender = asyncio.create_task(_send(transport, session, after, settings.acp_pong_timeout, close),
                                 name="agent-ws-send")
    pinger = asyncio.create_task(_ping(ws, settings.acp_ping_interval), name="agent-ws-ping")
    try:
        while not ws.closed:
            try:
                msg = await ws.receive(timeout=settings.acp_pong_timeout)
            except TimeoutError:
                await close(1001, b"keepalive timeout")
                break
            if msg.type == WSMsgType.TEXT:
                await _handle(ws, gateway, session, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await _reply_error(ws, None, INVALID_REQUEST, "binary frames are not accepted")
            elif msg.type == WSMsgType.ERROR:
                # aiohttp closes an oversized message with 1009 itself; log and leave.
                viewer.info("agent_viewer_error", error=str(ws.exception()))
                break
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
    finally:
        for task in (sender, pinger):
            task.cancel()
        for task in (sender, pinger):
            with contextlib.suppress(BaseException):
                await task
        if not ws.closed:
            await close(1000, b"")
        viewer.info("agent_viewer_detached")
    return ws


async def _send(transport: asyncio.Transport, session: AgentSession, after: int, stall: float,
                close: Callable[[int, bytes], Awaitable[None]]) -> None:
    """Replay then live; a viewer whose writes stall past `stall` seconds is closed (it can resume).

    Each batch goes out as ONE transport write of ready-made frames (wsframes.py). Writes are
    not awaited: only above WRITE_HIGH_WATER buffered bytes does the sender wait for the
    socket (at most `stall` seconds)."""
    try:
        async for batch in follow(session, after):
            if transport.is_closing():
                return
            transport.write(_frames(session, batch))
            if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                async with asyncio.timeout(stall):
                    await _drained(transport)
        if session.deleted:  # not "going away": there is nothing to reconnect to
            await close(CLOSE_SESSION_DELETED, b"session deleted")
        else:
            await close(1001, b"session closed")
    except TimeoutError:
        await close(1008, b"viewer too slow")  # bounded, then aborted: this viewer is not reading
    except (ConnectionResetError, RuntimeError):
        pass


async def _drained(transport: asyncio.Transport) -> None:
    while transport.get_write_buffer_size() > WRITE_HIGH_WATER:
        if transport.is_closing():
            raise ConnectionResetError("viewer went away")
        await asyncio.sleep(0.005)


_shared_frames: weakref.WeakKeyDictionary[AgentSession, SharedFrames] = weakref.WeakKeyDictionary()


def _frames(session: AgentSession, batch: Batch) -> bytes:
    """The batch as WebSocket text frames; framed once per message when several viewers watch."""
    entries = batch.entries
    if session.viewer_count < 2 or not entries:
        return text_frames(batch.payloads())
    shared = _shared_frames.get(session)
    if shared is None:
        shared = _shared_frames[session] = SharedFrames()
    framed = shared.frames(entries)
    return framed if batch.note is None else text_frames([batch.note]) + framed


async def _ping(ws: web.WebSocketResponse, interval: float) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        while not ws.closed:
            await asyncio.sleep(interval)
            await ws.ping()


async def _reply(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_str(json.dumps(message, separators=(",", ":")))


async def _reply_error(ws: web.WebSocketResponse, request_id: Any, code: int, message: str) -> None:
    await _reply(ws, {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


async def _handle(ws: web.WebSocketResponse, gateway: AgentGateway, session: AgentSession, data: str) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        await _reply_error(ws, None, PARSE_ERROR, "message is not valid JSON")
        return
    if not isinstance(message, dict):
        await _reply_error(ws, None, INVALID_REQUEST, "message must be a JSON object")
        return
    request_id = message.get("id")
    method = message.get("method")
    kind = message.get("type")
    try:
        if method == "session/prompt":
            params = message.get("params")
            raw = params.get("prompt") if isinstance(params, dict) else None
            try:
                content = text_blocks(raw)
            except ValueError as exc:
                await _reply_error(ws, request_id, INVALID_PARAMS, str(exc))
                return
            session.prompt(content, request_id=request_id)
        elif method == "session/cancel":
            cancelled = await session.cancel()
            if request_id is not None:
                await _reply(ws, {"jsonrpc": "2.0", "id": request_id, "result": {"cancelled": cancelled}})
        elif method is None and "id" in message and ("result" in message or "error" in message):
            answer = message.get("result") if "result" in message else {"outcome": {"outcome": "cancelled"}}
            if not session.permissions.answer(request_id, answer):
                await _reply_error(ws, request_id, INVALID_PARAMS,
                                   "no pending permission request with this id, or not one of its options")
        elif kind == "ping":
            await _reply(ws, {"type": "pong"})
        elif kind == "select_agent":
            agent_type = message.get("agentType")
            if not isinstance(agent_type, str):
                await _reply_error(ws, request_id, INVALID_PARAMS, "select_agent needs agentType")
                return
            session.check_agent_type(agent_type)
            # owned by the gateway: a start must not be cut short because this viewer left
            gateway.spawn(_select_and_start(session, agent_type), name=f"agent-select-{session.id}")
        elif kind in VERBS:
            await _reply(ws, await run_verb(session, message, request_id))
        else:
            await _reply_error(ws, request_id, METHOD_NOT_FOUND,
                               f"method not found: {str(method or kind or '')[:100]}")
    except UnknownAgentType as exc:
        await _reply(ws, {"type": "error", "error": "unknown_agent_type", "message": str(exc)})
    except AgentError as exc:
        await _reply_error(ws, request_id, -32000, str(exc))


async def _select_and_start(session: AgentSession, agent_type: str) -> None:
    """select_agent starts the agent at once (the outcome reaches viewers as agent_status)."""
    with contextlib.suppress(AgentError):
        await session.select_agent(agent_type)
        await session.ensure_started()
