"""Routes of the browser console: `GET /` (the page, and the `?token=` login) and `/ui/{path}`.

The console is a client like any other: it talks to the daemon only through the public API
(`/auth/whoami`, `/workspaces/{ws}/tabs`, `/terminal/ws/multi`, `/agent/ws`), so nothing here
knows about terminals or agents. The built assets (scripts/build-console.sh writes them into
`static/`) ship inside the Python package, so `pip install` users need no Node.

Security: every console response carries a strict Content-Security-Policy (only this origin, no
inline script or style, WebSockets only back to the same host), `nosniff` and no framing. A
`?token=` login is traded for the HttpOnly session cookie and answered with a redirect to the
same URL without the token, so the token leaves the address bar and the history at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import structlog
from aiohttp import web

from vm_agent.auth import login, set_login_cookies
from vm_agent.errors import NotFound, ServiceUnavailable

log = structlog.get_logger("vm_agent.console")

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")  # used with fullmatch
_ASSET = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # used with fullmatch
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".map": "application/json",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}


def content_security_policy(host: str | None) -> str:
    """The page's policy. `connect-src` names wss:// of the request's own host explicitly: CSP3
    browsers already let 'self' cover same-host WebSockets, older ones do not."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" wss://{host}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def _is_console_path(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Applied on prepare so error answers (rendered by the error middleware) get them too."""
    if not _is_console_path(request.path):
        return
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(request.host)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers.setdefault("Cache-Control", "no-cache")


def assets_built(static_dir: Path | None = None) -> bool:
    static_dir = static_dir or STATIC_DIR
    return (static_dir / INDEX).is_file() and (static_dir / "console.js").is_file()


def _not_built() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the web console is not built: run `make run` or scripts/build-console.sh "
        "(needs Node.js and npm), then reload",
        code="console_not_built",
    )


async def index(request: web.Request) -> web.StreamResponse:
    if "token" in request.query:
        return await _login(request)
    if not assets_built():
        raise _not_built()
    return web.FileResponse(STATIC_DIR / INDEX, headers={"Content-Type": "text/html; charset=utf-8"})


async def _login(request: web.Request) -> web.StreamResponse:
    """`/?token=…`: validate, set the session cookie, and send the browser to the same URL without
    the token (303, so a reload never re-posts it and the token does not stay in the history).
    The query token is the login, whatever cookies the browser already has (`auth.login`)."""
    principal = await login(request)
    rest = [(k, v) for k, v in request.query.items() if k != "token"]
    location = "/" + ("?" + urlencode(rest) if rest else "")
    response = web.Response(status=303, headers={"Location": location})
    set_login_cookies(request, response)
    log.info("console_login", user=principal.user_id, workspace=principal.workspace_id, kind=principal.kind)
    return response


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["path"]
    if not _ASSET.fullmatch(name) or name.startswith("."):
        raise NotFound("no such console asset", code="not_found")
    if not assets_built():
        raise _not_built()
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFound("no such console asset", code="not_found")
    content_type = _TYPES.get(path.suffix, "application/octet-stream")
    if content_type.startswith("text/") or content_type == "application/json":
        content_type += "; charset=utf-8"
    return web.FileResponse(path, headers={"Content-Type": content_type})


def setup(app: web.Application) -> None:
    """Register the console's routes on `app` (the page and its assets)."""
    app.router.add_get("/", index)
    app.router.add_get("/ui/{path}", asset)
    app.on_response_prepare.append(_security_headers)
