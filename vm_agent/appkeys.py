"""Typed keys under which app-wide objects live in the aiohttp Application.

Kept apart from `app.py` so subsystems can import the keys without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from vm_agent.config import Settings
from vm_agent.identity import Identity
from vm_agent.store import Store
from vm_agent.tabs import TabStore

if TYPE_CHECKING:
    from vm_agent.auth.authenticator import Authenticator
    from vm_agent.logs import LogRing

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
IDENTITY = web.AppKey("identity", Identity)
TABS = web.AppKey("tabs", TabStore)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Any)  # type: ignore[arg-type]
LOG_RING: web.AppKey[LogRing] = web.AppKey("log_ring", Any)  # type: ignore[arg-type]
# Set by the subsystems' setup functions:
TERMINALS: web.AppKey[Any] = web.AppKey("terminals", Any)  # type: ignore[arg-type]
AGENTS: web.AppKey[Any] = web.AppKey("agents", Any)  # type: ignore[arg-type]
WORKSPACES: web.AppKey[Any] = web.AppKey("workspaces", Any)  # type: ignore[arg-type]
# health checks: name -> async callable returning None (ok) or raising / returning an error string
HEALTH_CHECKS: web.AppKey[dict] = web.AppKey("health_checks", dict)
