"""An HTTP proxy in front of a daemon that ends every event stream as soon as its preamble is through.

That is what a long quiet stretch looks like to a client when something between it and the agent
ends idle streams: the daemon itself (it used to, after every keepalive), a load balancer, a NAT
that forgets idle flows. Each stream opens fine, replays what is new, says
`session_replay_complete` and ends; the client has to reconnect again and again while no event
arrives. Plain HTTP on the client side (the client accepts http:// URLs), so the proxy can see
the stream; TLS to the daemon behind it.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

PREAMBLE_END = b"session_replay_complete"
FORWARDED_HEADERS = ("authorization", "accept", "content-type", "last-event-id", "idempotency-key")


class StreamEndingProxy:
    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.ended_streams = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._upstream: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> StreamEndingProxy:
        self._upstream = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._upstream is not None:
            await self._upstream.close()

    async def wait_ended(self, count: int) -> None:
        """Until `count` event streams have been ended after their preamble."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.ended_streams >= count)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._upstream is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        body = await request.read()
        url = self.target_url + str(request.rel_url)
        async with self._upstream.request(request.method, url, headers=headers, data=body or None) as upstream:
            if not request.path.endswith("/events") or upstream.status != 200:
                content_type = upstream.headers.get("Content-Type", "application/json")
                return web.Response(
                    status=upstream.status, body=await upstream.read(), headers={"Content-Type": content_type}
                )
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await response.prepare(request)
            tail = b""
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                window = tail + chunk
                if PREAMBLE_END in window:
                    break
                tail = window[-len(PREAMBLE_END) :]
            else:
                return response  # the daemon ended it first
            await response.write_eof()
        async with self._changed:
            self.ended_streams += 1
            self._changed.notify_all()
        return response
