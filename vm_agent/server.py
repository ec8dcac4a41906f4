"""Run the app over HTTPS until SIGTERM/SIGINT, then shut down within the grace period.

Order on stop: tell systemd STOPPING=1, stop accepting, let subsystems close their sockets
(1001) and stop their processes (their cleanup_ctx), close the store. If that takes longer
than GRACEFUL_SHUTDOWN_TIMEOUT the process exits anyway; subsystems kill their process
groups on cancellation, so no child outlives the daemon.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from vm_agent.app import build_app
from vm_agent.config import Settings
from vm_agent.node import systemd
from vm_agent.tlscert import ensure_self_signed, server_context

log = structlog.get_logger("vm_agent.server")


class RunningServer:
    """A started daemon: its runner, bound port and URL (used by `serve`, `dev` and tests)."""

    def __init__(self, runner: web.AppRunner, port: int, cert_path: Path, settings: Settings) -> None:
        self.runner = runner
        self.port = port
        self.cert_path = cert_path
        self.settings = settings

    @property
    def app(self) -> web.Application:
        return self.runner.app  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"https://{shown}:{self.port}"

    async def stop(self) -> None:
        timeout = self.settings.graceful_shutdown_timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout + 1):
                await self.runner.cleanup()
        except TimeoutError:
            log.error("shutdown_timed_out", timeout=timeout)
        log.info("daemon_stopped", seconds=round(time.monotonic() - started, 3))


async def start_server(settings: Settings) -> RunningServer:
    if settings.tls_cert_path and settings.tls_key_path:
        cert_path, key_path = Path(settings.tls_cert_path), Path(settings.tls_key_path)
    else:
        cert_path, key_path = await asyncio.to_thread(ensure_self_signed, settings.state_path)
    app = build_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=max(settings.graceful_shutdown_timeout - 1, 0.5),
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.port, ssl_context=server_context(cert_path, key_path), reuse_address=True
    )
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    log.info("daemon_listening", host=settings.host, port=port, node_id=settings.node_id)
    return RunningServer(runner, port, cert_path, settings)


async def serve_until_signalled(
    settings: Settings, on_ready: Callable[[RunningServer], Awaitable[None] | None] | None = None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await start_server(settings)
    # Everything built so far (modules, app, routes: ~60,000 objects) lives as long as the
    # process; freezing it keeps the cyclic collector from rescanning it in every full
    # collection, which otherwise pauses the loop ~40 ms now and then (a keystroke's p99).
    gc.collect()
    gc.freeze()
    systemd.notify("READY=1")
    if on_ready is not None:
        result = on_ready(server)
        if asyncio.iscoroutine(result):
            await result
    await stop.wait()
    log.info("daemon_stopping")
    systemd.notify("STOPPING=1")
    await server.stop()
