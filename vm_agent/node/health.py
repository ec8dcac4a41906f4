"""GET /health: liveness plus a named check per dependency (store, jwks, docker).

Always 200 while the process serves HTTP; `status` is `degraded` when any check fails, so a
load balancer keeps routing terminals to a VM whose Docker is down while an operator sees why.
Checks run concurrently, each bounded, and never include secrets in their messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vm_agent import __version__

CHECK_TIMEOUT = 2.0
_STARTED = time.monotonic()

Check = Callable[[], Awaitable[Any]]


async def _run_check(check: Check) -> dict[str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            problem = await check()
    except TimeoutError:
        return {"status": "error", "error": f"no answer within {CHECK_TIMEOUT:g}s"}
    except Exception as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    if isinstance(problem, str) and problem:
        return {"status": "error", "error": problem[:200]}
    return {"status": "ok"}


async def health_report(node_id: str, checks: dict[str, Check], extra: dict[str, Any]) -> dict[str, Any]:
    names = sorted(checks)
    results = await asyncio.gather(*(_run_check(checks[name]) for name in names))
    report = dict(zip(names, results, strict=True))
    healthy = all(r["status"] == "ok" for r in results)
    return {
        "status": "healthy" if healthy else "degraded",
        "version": __version__,
        "uptimeSeconds": round(time.monotonic() - _STARTED, 3),
        "nodeId": node_id,
        "checks": report,
        **extra,
    }
