"""Routes of the agent gateway: `/agent/ws` and `/workspaces/{ws}/agent-sessions/*` (PROTOCOL.md §5.5).

Handlers are thin: authenticate, validate, call the gateway or the session, shape the answer.
Control needs a management token for the node and workspace; listing and `events` also accept
a user token for the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from vm_agent import appkeys
from vm_agent.agents.gateway import AgentGateway, session_json
from vm_agent.agents.prompts import text_blocks
from vm_agent.agents.redact import scrub_surrogates
from vm_agent.agents.registry import UnknownAgentType
from vm_agent.agents.session import AgentSession
from vm_agent.agents.verbs import run_verb
from vm_agent.agents.viewers import Batch, follow
from vm_agent.agents.ws import WORKSPACE_ID, agent_ws, int_param
from vm_agent.auth import MANAGEMENT, USER, authenticate
from vm_agent.errors import ApiError, BadRequest, Conflict, read_json
from vm_agent.workspaces.placement import Placement

BASE = "/workspaces/{ws}/agent-sessions"


class _AppResolver:
    """Looks the workspace registry up at call time (it is replaced when the workspaces start)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def placement(self, workspace_id: str) -> Placement:
        return await self._app[appkeys.WORKSPACES].placement(workspace_id)


def _gateway(request: web.Request) -> AgentGateway:
    return request.app[appkeys.AGENTS]


async def _workspace(request: web.Request, *, read_only: bool = False) -> str:
    ws = request.match_info["ws"]
    if not WORKSPACE_ID.fullmatch(ws):
        raise BadRequest("workspace id must be 1-64 chars of [A-Za-z0-9_-]", code="invalid_workspace_id")
    await authenticate(request, kinds={MANAGEMENT, USER} if read_only else {MANAGEMENT}, workspace=ws)
    return ws


async def _session(request: web.Request, *, read_only: bool = False) -> AgentSession:
    ws = await _workspace(request, read_only=read_only)
    return _gateway(request).get(ws, request.match_info["sid"])


def _optional_str(body: dict[str, Any], key: str, limit: int = 256) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key} must be a string of at most {limit} characters", code=f"invalid_{key}")
    return scrub_surrogates(value)  # stored, shown or passed to the agent: it must encode as UTF-8


def _content(raw: Any, key: str = "prompt") -> list[dict[str, Any]]:
    if raw is None or raw == "" or raw == []:
        raise BadRequest(f"{key} is required", code=f"missing_{key}")
    try:
        return text_blocks(raw)
    except ValueError as exc:
        raise BadRequest(str(exc), code=f"invalid_{key}") from None


async def list_sessions(request: web.Request) -> web.Response:
    ws = await _workspace(request, read_only=True)
    return web.json_response({"sessions": [session_json(s) for s in _gateway(request).list(ws)]})


async def create_session(request: web.Request) -> web.Response:
    ws = await _workspace(request)
    body = await read_json(request)
    mcp = body.get("mcpServers")
    if mcp is not None and (not isinstance(mcp, list) or not all(isinstance(m, dict) for m in mcp)):
        raise BadRequest("mcpServers must be a list of objects", code="invalid_mcp_servers")
    try:
        mcp = scrub_surrogates(mcp)  # it is written to the agent as UTF-8
    except RecursionError:
        raise BadRequest("mcpServers is nested too deeply", code="invalid_mcp_servers") from None
    gateway = _gateway(request)
    with contextlib.suppress(Conflict):  # a stopped workspace may still get sessions
        await gateway.placement_exists(ws)
    session, created = await gateway.create(
        ws, _optional_str(body, "sessionId", 128), label=_optional_str(body, "label") or "",
        agent_type=_optional_str(body, "agentType", 64), mcp_servers=mcp,
        idempotency_key=request.headers.get("Idempotency-Key", "")[:256] or None,
        permission_policy=_optional_str(body, "permissionPolicy", 16),
    )
    return web.json_response(session_json(session), status=201 if created else 200)


async def delete_session(request: web.Request) -> web.Response:
    """Stop the agent and remove the session with its chat tab and stored state [ext]."""
    ws = await _workspace(request)
    await _gateway(request).delete(ws, request.match_info["sid"])
    return web.json_response({"success": True})


async def start_session(request: web.Request) -> web.Response:
    session = await _session(request)
    body = await read_json(request)
    agent_type = _optional_str(body, "agentType", 64)
    initial = body.get("initialPrompt")
    content = _content(initial, "initialPrompt") if initial not in (None, "") else None
    if agent_type:
        try:
            session.check_agent_type(agent_type)
        except UnknownAgentType as exc:
            raise BadRequest(str(exc), code="unknown_agent_type") from None
    session.model = _optional_str(body, "model") or session.model
    session.permission_mode = _optional_str(body, "permissionMode", 64) or session.permission_mode

    async def headless() -> None:
        if agent_type:
            await session.select_agent(agent_type)
        if content is not None:
            session.prompt(content)
        else:
            await session.ensure_started()

    _gateway(request).spawn(headless(), name=f"agent-start-{session.id}")
    return web.json_response({"status": "starting", "sessionId": session.id}, status=202)


async def prompt_session(request: web.Request) -> web.Response:
    session = await _session(request)
    body = await read_json(request)
    content = _content(body.get("prompt"))
    result = session.prompt(content, request_id=_optional_str(body, "messageId"))
    return web.json_response(result, status=202)


async def cancel_session(request: web.Request) -> web.Response:
    session = await _session(request)
    if not await session.cancel():
        # the body carries `status` (the contract's 409 {status: "idle"}), which ApiError cannot
        return web.json_response({"error": "not_prompting", "message": "no prompt is running",
                                  "status": "idle" if session.status != "error" else "error"}, status=409)
    return web.json_response(session_json(session))


async def stop_session(request: web.Request) -> web.Response:
    session = await _session(request)
    await session.stop()
    return web.json_response(session_json(session))


async def suspend_session(request: web.Request) -> web.Response:
    session = await _session(request)
    await session.suspend()
    return web.json_response(session_json(session))


async def resume_session(request: web.Request) -> web.Response:
    session = await _session(request)
    try:
        await session.resume()
    except Exception as exc:
        raise ApiError(f"could not resume: {exc}", code="resume_failed", status=502) from None
    return web.json_response(session_json(session))


async def rpc_session(request: web.Request) -> web.Response:
    session = await _session(request)
    body = await read_json(request)
    answer = await run_verb(session, body)
    return web.json_response(answer, status=200 if answer.get("success") else 400)


async def session_events(request: web.Request) -> web.StreamResponse:
    session = await _session(request, read_only=True)
    settings = request.app[appkeys.SETTINGS]
    last_id = request.headers.get("Last-Event-ID")
    after = int_param(last_id if last_id else request.query.get("after"), "after")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    events = _sse(follow(session, after))
    # One pending read, waited on with a timeout but never cancelled by it: cancelling a read of
    # an async generator finishes the generator, which ended every quiet stream at its first
    # keepalive.
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=settings.acp_ping_interval)
            if done:
                try:
                    chunk = pending.result()
                except StopAsyncIteration:
                    break
                pending = None
            else:
                chunk = b": keepalive\n\n"
            async with asyncio.timeout(settings.acp_pong_timeout):
                await response.write(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await events.aclose()
    return response


async def _sse(batches: AsyncIterator[Batch]) -> AsyncIterator[bytes]:
    """One write per batch: `id:` is the seq (so Last-Event-ID resumes), data the message (JSON
    never contains a raw newline, so one `data:` line holds it)."""
    async for batch in batches:
        parts = [] if batch.note is None else [b"data: %b\n\n" % _one_line(batch.note)]
        for entry in batch.entries:
            parts.append(b"id: %d\ndata: %b\n\n" % (entry.seq, _one_line(entry.item)))
        yield b"".join(parts)


def _one_line(payload: bytes) -> bytes:
    # a CR between JSON tokens would end the SSE line early
    return payload.replace(b"\r", b"") if b"\r" in payload else payload


def setup(app: web.Application) -> None:
    """Register routes and the gateway's cleanup_ctx (the gateway's tables join the store now)."""
    gateway = AgentGateway(app[appkeys.SETTINGS], app[appkeys.STORE], app[appkeys.TABS], _AppResolver(app))

    app[appkeys.AGENTS] = gateway

    async def agents_ctx(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.shutdown()

    async def end_streams(app: web.Application) -> None:
        # on_shutdown runs before aiohttp waits for open handlers: ending the sessions here
        # closes viewers' sockets and SSE streams (1001) instead of letting them hold shutdown.
        await gateway.shutdown()

    app.cleanup_ctx.append(agents_ctx)
    app.on_shutdown.append(end_streams)
    app.router.add_get("/agent/ws", agent_ws)
    app.router.add_get(BASE, list_sessions)
    app.router.add_post(BASE, create_session)
    for verb, handler in (("start", start_session), ("prompt", prompt_session), ("cancel", cancel_session),
                          ("stop", stop_session), ("suspend", suspend_session), ("resume", resume_session),
                          ("rpc", rpc_session)):
        app.router.add_post(f"{BASE}/{{sid}}/{verb}", handler)
    app.router.add_get(f"{BASE}/{{sid}}/events", session_events)
    app.router.add_delete(f"{BASE}/{{sid}}", delete_session)

