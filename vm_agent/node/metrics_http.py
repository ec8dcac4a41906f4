"""`GET /metrics` (management token) and, when METRICS_ADDRESS is set, the same page on a
loopback-only plain-HTTP listener for a local scraper that holds no token."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from vm_agent import appkeys, metrics
from vm_agent.auth import MANAGEMENT, authenticate

COLLECTOR = web.AppKey("session_collector", metrics.SessionCollector)


@web.middleware
async def latency_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Request latency by route template (never the raw path: ids would explode cardinality)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.observe_request(request.method, route, status, started)


def _page(app: web.Application) -> web.Response:
    body = metrics.render(app[COLLECTOR])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_metrics(request: web.Request) -> web.Response:
    await authenticate(request, kinds={MANAGEMENT})
    return _page(request.app)


async def metrics_duties(app: web.Application) -> AsyncIterator[None]:
    collector = app[COLLECTOR]
    for key, kind in ((appkeys.TERMINALS, "terminal"), (appkeys.AGENTS, "agent")):
        manager = app.get(key)
        if manager is not None:
            collector.sources.append(metrics.session_counts(manager, kind))
    probe = asyncio.create_task(metrics.loop_lag_probe(), name="loop-lag-probe")
    runner = None
    address = app[appkeys.SETTINGS].metrics_address
    if address:
        host, _, port = address.rpartition(":")
        side = web.Application()

        async def loopback_page(_request: web.Request) -> web.Response:
            return _page(app)

        side.router.add_get("/metrics", loopback_page)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    yield
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    if runner is not None:
        await runner.cleanup()


def setup(app: web.Application) -> None:
    app[COLLECTOR] = metrics.SessionCollector()
    app.router.add_get("/metrics", get_metrics)
    # Call setup last: this context starts after the subsystems have put their managers on the app.
    app.cleanup_ctx.append(metrics_duties)
