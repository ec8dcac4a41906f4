"""Open WebSockets of the app, so shutdown can tell every viewer "going away" (1001) at once
instead of waiting for each handler to time out.

Every close is bounded (WS_CLOSE_TIMEOUT) and then the connection aborted: a close first
flushes what is queued, and a peer that stopped reading (a suspended laptop, a stuck proxy)
would otherwise keep its handler alive, or hold shutdown until its grace period ran out and cut
the rest of the cleanup short.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp
from aiohttp import web

from vm_agent import appkeys

OPEN_SOCKETS = web.AppKey("open_websockets", weakref.WeakKeyDictionary)


def track(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Register a prepared socket; it is closed with 1001 when the daemon shuts down."""
    request.app[OPEN_SOCKETS][ws] = request.transport


async def close_within(
    ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, code: int, reason: bytes, timeout: float
) -> None:
    """Close `ws`, or abort its connection if the close cannot finish within `timeout`."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), timeout)
    except Exception:
        if transport is not None:
            transport.abort()


async def close_all(app: web.Application) -> None:
    timeout = app[appkeys.SETTINGS].ws_close_timeout
    sockets = [(ws, transport) for ws, transport in list(app[OPEN_SOCKETS].items()) if not ws.closed]
    await asyncio.gather(
        *(close_within(ws, t, aiohttp.WSCloseCode.GOING_AWAY, b"server shutting down", timeout) for ws, t in sockets),
        return_exceptions=True,
    )


def setup(app: web.Application) -> None:
    app[OPEN_SOCKETS] = weakref.WeakKeyDictionary()
    app.on_shutdown.append(close_all)
