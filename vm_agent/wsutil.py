"""Open WebSockets of the app, so shutdown can tell every viewer "going away" (1001) at once
instead of waiting for each handler to time out.

The close is bounded and then the connection aborted: a close first flushes what is queued, and
a peer that stopped reading (a suspended laptop, a stuck proxy) would otherwise hold shutdown
until its grace period ran out and cut the rest of the cleanup short.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from aiohttp import web

OPEN_SOCKETS = web.AppKey("open_websockets", weakref.WeakKeyDictionary)
CLOSE_TIMEOUT = 2.0


def track(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Register a prepared socket; it is closed with 1001 when the daemon shuts down."""
    request.app[OPEN_SOCKETS][ws] = request.transport


async def close_within(
    ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, code: int, reason: bytes
) -> None:
    """Close `ws`, or abort its connection if the close cannot finish within CLOSE_TIMEOUT."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), CLOSE_TIMEOUT)
    except Exception:
        if transport is not None:
            transport.abort()


async def close_all(app: web.Application) -> None:
    sockets = [(ws, transport) for ws, transport in list(app[OPEN_SOCKETS].items()) if not ws.closed]
    await asyncio.gather(
        *(close_within(ws, t, aiohttp.WSCloseCode.GOING_AWAY, b"server shutting down") for ws, t in sockets),
        return_exceptions=True,
    )


def setup(app: web.Application) -> None:
    app[OPEN_SOCKETS] = weakref.WeakKeyDictionary()
    app.on_shutdown.append(close_all)
