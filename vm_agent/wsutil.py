"""Open WebSockets of the app, so shutdown can tell every viewer "going away" (1001) at once
instead of waiting for each handler to time out."""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from aiohttp import web

OPEN_SOCKETS = web.AppKey("open_websockets", weakref.WeakSet)


def track(app: web.Application, ws: web.WebSocketResponse) -> None:
    """Register a prepared socket; it is closed with 1001 when the daemon shuts down."""
    app[OPEN_SOCKETS].add(ws)


async def close_all(app: web.Application) -> None:
    sockets = [ws for ws in list(app[OPEN_SOCKETS]) if not ws.closed]
    await asyncio.gather(
        *(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sockets),
        return_exceptions=True,
    )


def setup(app: web.Application) -> None:
    app[OPEN_SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(close_all)
