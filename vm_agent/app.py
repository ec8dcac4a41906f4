"""build_app(settings) → the aiohttp Application: middleware, shared objects, subsystems.

Startup and cleanup only: every resource is opened and closed in exactly one cleanup_ctx, in
the order listed, and torn down in reverse (subsystems stop before the store closes).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from vm_agent import appkeys, wsutil
from vm_agent.agents.http import setup as setup_agents
from vm_agent.auth.authenticator import Authenticator
from vm_agent.config import Settings
from vm_agent.console.http import setup as setup_console
from vm_agent.errors import error_middleware
from vm_agent.identity import Identity
from vm_agent.logs import LogRing, get_ring
from vm_agent.node.http import setup as setup_node
from vm_agent.node.metrics_http import latency_middleware
from vm_agent.node.metrics_http import setup as setup_metrics
from vm_agent.node.openapi_http import setup as setup_openapi
from vm_agent.store import Store
from vm_agent.tabs import TabStore
from vm_agent.terminal.ws import setup as setup_terminals
from vm_agent.workspaces.http import setup as setup_workspaces

log = structlog.get_logger("vm_agent.app")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind a request id to every log line of this request and echo it to the client."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


def build_app(settings: Settings, *, log_ring: LogRing | None = None) -> web.Application:
    app = web.Application(
        middlewares=[latency_middleware, request_id_middleware, error_middleware],
        client_max_size=settings.http_max_body_bytes,
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.LOG_RING] = log_ring or get_ring()
    app[appkeys.HEALTH_CHECKS] = {}
    store = Store(settings.state_path / "vm-agent.db")
    app[appkeys.STORE] = store
    app[appkeys.TABS] = TabStore(store)
    identity = Identity(settings.node_id, settings.identity_file)
    identity.reload()
    app[appkeys.IDENTITY] = identity
    app[appkeys.AUTH] = Authenticator(settings, identity)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        app[appkeys.HEALTH_CHECKS]["store"] = store.ping
        yield
        await store.close()

    async def auth_ctx(app: web.Application) -> AsyncIterator[None]:
        auth = app[appkeys.AUTH]
        await auth.start()
        app[appkeys.HEALTH_CHECKS]["jwks"] = auth.health
        yield
        await auth.stop()

    wsutil.setup(app)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(auth_ctx)
    setup_node(app)
    setup_workspaces(app)
    setup_terminals(app)
    setup_agents(app)
    setup_openapi(app)
    setup_metrics(app)
    setup_console(app)
    return app
