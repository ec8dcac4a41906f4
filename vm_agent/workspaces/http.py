"""HTTP routes of workspaces (PROTOCOL.md §4): thin handlers over `WorkspaceManager`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from vm_agent import appkeys
from vm_agent.auth import MANAGEMENT, USER, authenticate
from vm_agent.errors import Forbidden, read_json
from vm_agent.workspaces.manager import WorkspaceManager
from vm_agent.workspaces.model import Workspace, WorkspaceSpec, validate_workspace_id

log = structlog.get_logger("vm_agent.workspaces")


def _manager(request: web.Request) -> WorkspaceManager:
    return request.app[appkeys.WORKSPACES]


def _sessions(app: web.Application, workspace_id: str) -> int:
    """Terminal + agent sessions of a workspace, from subsystems that can count them."""
    total = 0
    for key in (appkeys.TERMINALS, appkeys.AGENTS):
        owner = app.get(key)
        count = getattr(owner, "workspace_session_count", None)
        if count is not None:
            total += int(count(workspace_id))
    return total


def _status(ws: Workspace) -> dict[str, Any]:
    body: dict[str, Any] = {"workspaceId": ws.id, "status": ws.status}
    if ws.error and ws.status == "error":
        body["errorMessage"] = ws.error
    return body


async def list_workspaces(request: web.Request) -> web.Response:
    principal = await authenticate(request, kinds={MANAGEMENT})
    workspaces = await _manager(request).list()
    visible = [ws for ws in workspaces if principal.may_access_workspace(ws.id)]
    return web.json_response({"workspaces": [ws.to_json(_sessions(request.app, ws.id)) for ws in visible]})


async def create_workspace(request: web.Request) -> web.Response:
    principal = await authenticate(request, kinds={MANAGEMENT})
    body = await read_json(request)
    spec, token = WorkspaceSpec.from_request(body, default_image=request.app[appkeys.SETTINGS].workspace_image)
    if not principal.may_access_workspace(spec.workspace_id):
        raise Forbidden(f"token is not for workspace {spec.workspace_id!r}")
    ws, created = await _manager(request).create(spec, token)
    return web.json_response(_status(ws), status=202 if created else 200)


def _path_workspace(request: web.Request) -> str:
    return validate_workspace_id(request.match_info["ws"])


async def get_workspace(request: web.Request) -> web.Response:
    """[ext] One workspace, as in the list."""
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={MANAGEMENT}, workspace=ws_id)
    ws = await _manager(request).get(ws_id)
    return web.json_response(ws.to_json(_sessions(request.app, ws_id)))


async def stop_workspace(request: web.Request) -> web.Response:
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={MANAGEMENT}, workspace=ws_id)
    return web.json_response(_status(await _manager(request).stop_workspace(ws_id)))


async def restart_workspace(request: web.Request) -> web.Response:
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={MANAGEMENT}, workspace=ws_id)
    return web.json_response(_status(await _manager(request).restart_workspace(ws_id)))


async def rebuild_workspace(request: web.Request) -> web.Response:
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={MANAGEMENT}, workspace=ws_id)
    return web.json_response(_status(await _manager(request).rebuild(ws_id)), status=202)


async def delete_workspace(request: web.Request) -> web.Response:
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={MANAGEMENT}, workspace=ws_id)
    app = request.app

    async def close_sessions(workspace_id: str) -> None:
        for key in (appkeys.AGENTS, appkeys.TERMINALS):
            owner = app.get(key)
            close = getattr(owner, "close_workspace", None)
            if close is not None:
                await close(workspace_id)

    await _manager(request).delete(ws_id, close_sessions)
    await app[appkeys.TABS].remove_workspace(ws_id)
    return web.json_response({"success": True})


async def list_tabs(request: web.Request) -> web.Response:
    """Tabs need no Docker: `host` tabs (and stored ones) stay readable while Docker is down."""
    ws_id = _path_workspace(request)
    await authenticate(request, kinds={USER, MANAGEMENT}, workspace=ws_id)
    tabs = await request.app[appkeys.TABS].list(ws_id)
    return web.json_response({"tabs": [tab.to_json() for tab in tabs]})


def setup(app: web.Application) -> None:
    """Register routes; the manager exists from here on (its schema must precede store.open) and
    is started/stopped by a cleanup_ctx. It resolves `host` even when Docker is unreachable."""
    settings = app[appkeys.SETTINGS]
    manager = WorkspaceManager(settings, app[appkeys.STORE])
    app[appkeys.WORKSPACES] = manager

    async def workspaces_ctx(app: web.Application) -> AsyncIterator[None]:
        await manager.start()
        app[appkeys.HEALTH_CHECKS]["docker"] = manager.health
        yield
        await manager.stop()

    app.cleanup_ctx.append(workspaces_ctx)
    app.router.add_get("/workspaces", list_workspaces)
    app.router.add_post("/workspaces", create_workspace)
    app.router.add_get("/workspaces/{ws}", get_workspace)
    app.router.add_delete("/workspaces/{ws}", delete_workspace)
    app.router.add_post("/workspaces/{ws}/stop", stop_workspace)
    app.router.add_post("/workspaces/{ws}/restart", restart_workspace)
    app.router.add_post("/workspaces/{ws}/rebuild", rebuild_workspace)
    app.router.add_get("/workspaces/{ws}/tabs", list_tabs)
