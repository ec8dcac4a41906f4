"""GET /logs/stream: the daemon's log records over a WebSocket, the newest backlog then live.

A viewer can stop reading and keep its connection open (a suspended laptop, a stuck proxy, a
hostile client). Every write then waits for a TCP window that never opens, and so does the
close (it drains first): unbounded, they kept the handler alive long past the pong timeout,
and at shutdown `wsutil.close_all` waited on that close until the grace period ran out and the
cleanup (the store's close among it) was cut off. So here every send and the close are bounded:

- a send (and a ping) by LOG_STREAM_PONG_TIMEOUT: a viewer that takes nothing for as long as
  a silent one may stay is just as gone;
- the close by WS_CLOSE_TIMEOUT, as every socket's: a close is a courtesy that must never
  hold up shutdown, which closes these sockets through the same call.

On timeout the transport is aborted, not closed: a close would wait to flush what the peer is
never going to read, and the connection would linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import structlog
from aiohttp import web

from vm_agent import appkeys, wsutil
from vm_agent.auth import MANAGEMENT, authenticate
from vm_agent.node.logsource import LogSource

log = structlog.get_logger("vm_agent.node")
LOG_SOURCE = web.AppKey("log_source", LogSource)  # type: ignore[type-abstract]
T = TypeVar("T")


class BoundedWebSocket(web.WebSocketResponse):
    """A WebSocketResponse whose sends, pings and close give up after a bound and abort the
    connection. Overriding `close` (not wrapping it at our call sites) is what makes the
    shutdown's `close_all`, which knows nothing of log streams, bounded too."""

    def __init__(self, *, send_timeout: float, close_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._transport: asyncio.BaseTransport | None = None

    async def prepare(self, request: web.BaseRequest) -> Any:
        writer = await super().prepare(request)
        self._transport = request.transport
        return writer

    def abort(self) -> None:
        """Drop the connection now, discarding what the peer did not read."""
        if self._transport is not None:
            self._transport.abort()

    async def _bounded(self, operation: Awaitable[T], timeout: float, what: str) -> T:
        try:
            async with asyncio.timeout(timeout):
                return await operation
        except TimeoutError:
            log.warning("log_stream_stalled", operation=what, timeout=timeout)
            self.abort()
            raise ConnectionResetError(f"log stream viewer took nothing for {timeout:g}s") from None

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self._bounded(super().send_str(data, compress), self._send_timeout, "send")

    async def ping(self, message: bytes = b"") -> None:
        await self._bounded(super().ping(message), self._send_timeout, "ping")

    async def pong(self, message: bytes = b"") -> None:
        await self._bounded(super().pong(message), self._send_timeout, "pong")

    async def close(self, **kwargs: Any) -> bool:
        try:
            return await self._bounded(super().close(**kwargs), self._close_timeout, "close")
        except ConnectionResetError:
            return True  # aborted: closed all the same


async def stream_logs(request: web.Request) -> web.WebSocketResponse:
    principal = await authenticate(request, kinds={MANAGEMENT})
    settings = request.app[appkeys.SETTINGS]
    ws = BoundedWebSocket(
        send_timeout=settings.log_stream_pong_timeout,
        close_timeout=settings.ws_close_timeout,
        autoping=False,
        max_msg_size=64 * 1024,
    )
    request.app[appkeys.AUTH].set_login_cookies(request, ws)
    await ws.prepare(request)
    wsutil.track(request, ws)
    log.info("log_stream_opened", user=principal.user_id)
    last_heard = time.monotonic()

    async def pump() -> None:
        async for entry in request.app[LOG_SOURCE].follow(settings.log_stream_buffer_size):
            await ws.send_json(entry)

    async def keepalive() -> None:
        while True:
            await asyncio.sleep(settings.log_stream_ping_interval)
            if time.monotonic() - last_heard > settings.log_stream_pong_timeout:
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"pong timeout")
                return
            await ws.ping()

    tasks = [asyncio.create_task(pump()), asyncio.create_task(keepalive())]
    try:
        async for message in ws:
            last_heard = time.monotonic()
            if message.type == aiohttp.WSMsgType.PING:
                await ws.pong(message.data)
            elif message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                pass  # the stream is one-way; anything the client sends only proves it is alive
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        log.info("log_stream_closed", user=principal.user_id)
    return ws
