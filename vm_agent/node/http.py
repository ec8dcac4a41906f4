"""Node routes: /health, /system-info, /logs, /logs/stream, and the node's background duties
(control-plane callbacks, systemd watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from vm_agent import __version__, appkeys
from vm_agent.auth import MANAGEMENT, authenticate
from vm_agent.errors import BadRequest, ServiceUnavailable
from vm_agent.node import sysinfo, systemd
from vm_agent.node.callbacks import ControlPlaneClient
from vm_agent.node.health import health_report
from vm_agent.node.logsource import LEVEL_ORDER, LogQueryError, LogSourceUnavailable, choose_source, parse_since
from vm_agent.node.logstream import LOG_SOURCE, stream_logs

log = structlog.get_logger("vm_agent.node")


def _count(app: web.Application, key: web.AppKey[Any]) -> int:
    manager = app.get(key)
    return manager.session_count() if manager is not None and hasattr(manager, "session_count") else 0


async def health(request: web.Request) -> web.Response:
    app = request.app
    identity = app[appkeys.IDENTITY]
    report = await health_report(identity.node_id, app[appkeys.HEALTH_CHECKS], {"identity": identity.to_json()})
    return web.json_response(report)


async def whoami(request: web.Request) -> web.Response:
    """[ext] Who the presented token says the caller is; `?workspace=W` also checks access to W."""
    workspace = request.query.get("workspace") or None
    principal = await authenticate(request, workspace=workspace)
    return web.json_response(
        {
            "userId": principal.user_id,
            "workspaceId": principal.workspace_id,
            "nodeId": principal.node_id,
            "kind": principal.kind,
            "expiresAt": principal.expires_at,
        }
    )


async def system_info(request: web.Request) -> web.Response:
    await authenticate(request, kinds={MANAGEMENT})
    app = request.app
    memory, disk = await asyncio.gather(asyncio.to_thread(sysinfo.memory), asyncio.to_thread(sysinfo.disk, "/"))
    docker: dict[str, Any] = {"error": "workspaces are not backed by Docker on this node"}
    workspaces = app.get(appkeys.WORKSPACES)
    if workspaces is not None and hasattr(workspaces, "docker_info"):
        try:
            docker = await workspaces.docker_info()
        except Exception as exc:
            docker = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return web.json_response(
        {
            "cpu": sysinfo.load_average(),
            "memory": memory,
            "disk": disk,
            "uptime": {"seconds": round(sysinfo.system_uptime(), 3)},
            "docker": docker,
            "agent": {
                "version": __version__,
                "python": sysinfo.python_version(),
                "pid": os.getpid(),
                "rssBytes": sysinfo.process_rss_bytes(),
                "terminalSessions": _count(app, appkeys.TERMINALS),
                "agentSessions": _count(app, appkeys.AGENTS),
            },
        }
    )


async def get_logs(request: web.Request) -> web.Response:
    await authenticate(request, kinds={MANAGEMENT})
    settings = request.app[appkeys.SETTINGS]
    query = request.query
    try:
        limit = int(query.get("limit", settings.log_retrieval_default_limit))
    except ValueError:
        raise BadRequest("limit must be an integer", code="invalid_parameter") from None
    if not 1 <= limit <= settings.log_retrieval_max_limit:
        raise BadRequest(f"limit must be between 1 and {settings.log_retrieval_max_limit}", code="invalid_parameter")
    level = query.get("level")
    if level is not None:
        level = {"warning": "warn"}.get(level.lower(), level.lower())
        if level not in LEVEL_ORDER:
            raise BadRequest("level must be one of debug, info, warn, error", code="invalid_parameter")
    try:
        since = parse_since(query["since"]) if "since" in query else None
        entries, next_cursor = await request.app[LOG_SOURCE].query(limit, query.get("cursor"), level, since)
    except LogQueryError as exc:
        raise BadRequest(str(exc), code="invalid_parameter") from None
    except LogSourceUnavailable as exc:
        raise ServiceUnavailable(f"logs cannot be read right now: {exc}", code="log_source_unavailable") from None
    return web.json_response({"entries": entries, "nextCursor": next_cursor, "source": request.app[LOG_SOURCE].name})


async def _active_workspaces(app: web.Application) -> int:
    workspaces = app.get(appkeys.WORKSPACES)
    if workspaces is not None and hasattr(workspaces, "active_count"):
        return await workspaces.active_count()
    return 0


async def node_duties(app: web.Application) -> AsyncIterator[None]:
    """Owns the node's background tasks: control-plane callbacks and the systemd watchdog."""
    settings = app[appkeys.SETTINGS]
    app[LOG_SOURCE] = choose_source(
        settings.log_source, app[appkeys.LOG_RING], settings.log_journal_unit, settings.log_reader_timeout
    )
    tasks: list[asyncio.Task[None]] = []
    if settings.control_plane_url and settings.read_callback_token():
        client = ControlPlaneClient(settings, app[appkeys.IDENTITY], lambda: _active_workspaces(app))
        tasks.append(asyncio.create_task(client.run(), name="control-plane"))
    identity = app[appkeys.IDENTITY]
    tasks.append(asyncio.create_task(identity.watch(settings.identity_poll_interval), name="identity-watch"))
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, identity.request_reload)
    interval = systemd.watchdog_interval()
    if interval:
        tasks.append(asyncio.create_task(systemd.watchdog_loop(interval), name="watchdog"))
    for task in tasks:
        task.add_done_callback(_log_unexpected_end)
    yield
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _log_unexpected_end(task: asyncio.Task[Any]) -> None:
    """These tasks end only when cancelled at shutdown. Any other end is a node that silently
    stopped heartbeating (or watching its identity, or feeding the watchdog): say so at once,
    instead of leaving the exception to surface at shutdown, or never."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error("node_task_ended", task=task.get_name(), error=repr(exc) if exc is not None else "returned")


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/system-info", system_info)
    app.router.add_get("/auth/whoami", whoami)
    app.router.add_get("/logs", get_logs)
    app.router.add_get("/logs/stream", stream_logs)
    app.cleanup_ctx.append(node_duties)
