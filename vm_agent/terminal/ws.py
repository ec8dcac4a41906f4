"""Routes of the terminal subsystem: `/terminal/ws/multi`, `/terminal/ws`, and its wiring.

Authentication happens before the upgrade, so a bad token is a plain HTTP 401/403 the browser
can see. The workspace comes from the token's `workspace` claim, else `?workspace=`, else
WORKSPACE_ID, else `host`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from vm_agent import appkeys
from vm_agent.auth import Principal, authenticate, set_login_cookies
from vm_agent.errors import Forbidden
from vm_agent.terminal.connection import CLOSE_GOING_AWAY, TerminalConnection
from vm_agent.terminal.fastinput import InputFastPath
from vm_agent.terminal.manager import TerminalManager
from vm_agent.terminal.multi import MultiConnection, SingleConnection
from vm_agent.terminal.protocol import DEFAULT_COLS, DEFAULT_ROWS
from vm_agent.terminal.pty import clamp_dimension
from vm_agent.workspaces.placement import HOST_WORKSPACE, Placement

TERMINAL_SOCKETS: web.AppKey[set[TerminalConnection]] = web.AppKey("terminal_sockets", set)
KINDS = frozenset({"user", "management"})


async def _open(request: web.Request) -> tuple[web.WebSocketResponse, Principal, str, InputFastPath | None]:
    # The keystroke fast path goes in front of aiohttp first thing, so that it sees every byte
    # the client sends after its upgrade request (the handshake awaits the token check).
    upgrading = request.headers.get("Upgrade", "").lower() == "websocket"
    fast_input = InputFastPath.install(request.transport) if upgrading else None
    try:
        settings = request.app[appkeys.SETTINGS]
        requested = request.query.get("workspace") or None
        principal = await authenticate(request, kinds=KINDS, workspace=requested)
        workspace_id = principal.workspace_id or requested or settings.workspace_id or HOST_WORKSPACE
        if not principal.may_access_workspace(workspace_id):
            raise Forbidden("the token does not grant access to this workspace")
        await request.app[appkeys.WORKSPACES].placement(workspace_id)  # 404/409 before the upgrade
        ws = web.WebSocketResponse(
            max_msg_size=settings.terminal_ws_max_message_bytes,
            compress=False,  # terminal output is sent as fast as it comes; deflate would cap that
            autoping=False,  # the connection answers pings and notes pongs itself (its liveness clock)
        )
        set_login_cookies(request, ws)
        await ws.prepare(request)
    except BaseException:
        if fast_input is not None:
            fast_input.uninstall()
        raise
    return ws, principal, workspace_id, fast_input


async def _serve(request: web.Request, connection: TerminalConnection) -> web.WebSocketResponse:
    sockets = request.app[TERMINAL_SOCKETS]
    sockets.add(connection)
    try:
        await connection.run()
    finally:
        sockets.discard(connection)
    return connection.ws


async def multi_handler(request: web.Request) -> web.WebSocketResponse:
    ws, principal, workspace_id, fast_input = await _open(request)
    manager = request.app[appkeys.TERMINALS]
    connection = MultiConnection(ws, request, manager, principal, workspace_id, fast_input=fast_input)
    return await _serve(request, connection)


async def single_handler(request: web.Request) -> web.WebSocketResponse:
    rows = clamp_dimension(_int(request.query.get("rows")), DEFAULT_ROWS)
    cols = clamp_dimension(_int(request.query.get("cols")), DEFAULT_COLS)
    ws, principal, workspace_id, fast_input = await _open(request)
    manager = request.app[appkeys.TERMINALS]
    connection = SingleConnection(
        ws, request, manager, principal, workspace_id, fast_input=fast_input, rows=rows, cols=cols
    )
    return await _serve(request, connection)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


async def _close_sockets(app: web.Application) -> None:
    """On shutdown, tell every viewer we are going away (1001) so clients reconnect later."""
    manager = app.get(appkeys.TERMINALS)
    if manager is not None:
        manager.pause_output()
    connections = list(app[TERMINAL_SOCKETS])

    await asyncio.gather(*(c.end(CLOSE_GOING_AWAY, "server shutting down") for c in connections))


class _Workspaces:
    """The app's workspace resolver, looked up on use (the workspaces subsystem may replace it)."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def placement(self, workspace_id: str) -> Placement:
        return await self._app[appkeys.WORKSPACES].placement(workspace_id)


async def _terminals_ctx(app: web.Application) -> AsyncIterator[None]:
    manager = TerminalManager(app[appkeys.SETTINGS], _Workspaces(app), app[appkeys.TABS])
    app[appkeys.TERMINALS] = manager
    await manager.start()
    yield
    await _close_sockets(app)
    await manager.shutdown()


def setup(app: web.Application) -> None:
    """Register the terminal routes and the manager's lifecycle on `app`."""
    app[TERMINAL_SOCKETS] = set()
    app.router.add_get("/terminal/ws/multi", multi_handler)
    app.router.add_get("/terminal/ws", single_handler)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_terminals_ctx)
