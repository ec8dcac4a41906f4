"""The one function that turns a request into a Principal, and the login cookies.

Token sources, in order: HTTP — Authorization: Bearer, the session cookie, `?token=`;
WebSockets — the same (the header is for non-browser clients such as the coordinator; browsers
use the cookie or the query). A `?token=` login is remembered in a session cookie so the token
can be dropped from the address bar and later sockets need no token. The console's
`/?token=` is different: an explicit login, where the query token alone counts (`login`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import NoReturn

import structlog
from aiohttp import web

from vm_agent import appkeys, metrics
from vm_agent.auth.jwks import JwksCache
from vm_agent.auth.principal import Principal
from vm_agent.auth.sessions import SessionStore
from vm_agent.auth.tokens import AuthUnavailable, TokenRejected, TokenValidator
from vm_agent.config import Settings
from vm_agent.errors import Forbidden, ServiceUnavailable, Unauthorized
from vm_agent.identity import Identity

log = structlog.get_logger("vm_agent.auth")

COOKIE = "vm_session"
_LOGIN_KEY = web.RequestKey("vm_agent_login", Principal)
_EXPLICIT_KEY = web.RequestKey("vm_agent_explicit_login", bool)
ALL_KINDS = frozenset({"user", "management"})


class Authenticator:
    def __init__(self, settings: Settings, identity: Identity) -> None:
        self.settings = settings
        self.jwks = JwksCache(
            settings.jwks_url,
            refresh_interval=settings.jwks_refresh_interval,
            refetch_cooldown=settings.jwks_refetch_cooldown,
            fetch_timeout=settings.jwks_fetch_timeout,
        )
        self.tokens = TokenValidator(settings, self.jwks, identity)
        self.sessions = SessionStore(settings.session_ttl, settings.session_max_count, leeway=settings.jwt_leeway)

    async def start(self) -> None:
        await self.jwks.start()

    async def stop(self) -> None:
        await self.jwks.stop()

    async def health(self) -> str | None:
        if not self.jwks.loaded:
            return self.jwks.last_error or "signing keys not loaded"
        return None

    async def authenticate(
        self,
        request: web.Request,
        *,
        kinds: Iterable[str] = ALL_KINDS,
        workspace: str | None = None,
    ) -> Principal:
        kinds = frozenset(kinds)
        principal = await _answer(request, self._identify(request, workspace))
        if principal.kind not in kinds:
            _reject(request, f"{principal.kind} token not accepted here", 403, "wrong_kind")
        if workspace is not None and not principal.may_access_workspace(workspace):
            _reject(request, f"token is not for workspace {workspace[:64]!r}", 403, "wrong_workspace")
        return principal

    async def _identify(self, request: web.Request, workspace: str | None) -> Principal:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenRejected("Authorization header is not a Bearer token", code="malformed")
            return await self.tokens.validate(token.strip())
        for name in ((f"{COOKIE}_{workspace}",) if workspace else ()) + (COOKIE,):
            session_id = request.cookies.get(name)
            if session_id:
                principal = self.sessions.get(session_id)
                if principal is not None and (workspace is None or principal.may_access_workspace(workspace)):
                    return principal
        token = request.query.get("token")
        if token:
            principal = await self.tokens.validate(token)
            request[_LOGIN_KEY] = principal
            return principal
        raise TokenRejected("no credentials (Authorization header, session cookie or ?token=)", code="no_credentials")

    async def login(self, request: web.Request) -> Principal:
        """`?token=` as an explicit login (the console's `/?token=`): the query token alone
        decides. Cookies already held do not stand in for it: a browser logged in as one user
        that opens another's link becomes that user (`set_login_cookies` then issues cookies for
        them, ending every session cookie the browser held), and a bad token is a 401 even
        beside a good cookie, never a silent "logged in"."""
        principal = await _answer(request, self.tokens.validate(request.query.get("token", "")))
        request[_LOGIN_KEY] = principal
        request[_EXPLICIT_KEY] = True
        return principal

    def set_login_cookies(self, request: web.Request, response: web.StreamResponse) -> None:
        principal: Principal | None = request.get(_LOGIN_KEY)
        if principal is None:
            return
        session_id = self.sessions.create(principal)
        options = {
            "httponly": True,
            "secure": self.settings.cookie_secure,
            "samesite": "Strict",
            "path": "/",
            "max_age": int(self.sessions.remaining(session_id)),  # the browser forgets it when we do
        }
        issued = {COOKIE} | ({f"{COOKIE}_{principal.workspace_id}"} if principal.workspace_id else set())
        if request.get(_EXPLICIT_KEY):
            self._end_held_sessions(request, response, keep=issued)
        for name in issued:
            response.set_cookie(name, session_id, **options)

    def _end_held_sessions(self, request: web.Request, response: web.StreamResponse, keep: set[str]) -> None:
        """After an explicit login, no session the browser held may still speak for it: the
        per-workspace cookies are checked before `vm_session`, so a previous user's
        `vm_session_<ws>` left in place would go on running that workspace as them. Every held
        session is revoked, and every such cookie that the login does not re-issue is expired."""
        for name, value in request.cookies.items():
            if name != COOKIE and not name.startswith(f"{COOKIE}_"):
                continue
            self.sessions.revoke(value)
            if name not in keep:
                response.del_cookie(
                    name, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="Strict"
                )


async def _answer(request: web.Request, identify: Awaitable[Principal]) -> Principal:
    """Await `identify`; a rejected token becomes 401/403, keys not loaded yet 503."""
    try:
        return await identify
    except TokenRejected as exc:
        _reject(request, exc.reason, exc.status, exc.code)
    except AuthUnavailable as exc:
        metrics.AUTH_FAILURES.labels("unavailable").inc()
        log.warning("auth_unavailable", path=request.path, reason=str(exc))
        raise ServiceUnavailable(
            "authentication keys are not available yet; retry shortly", code="auth_unavailable"
        ) from None


def _reject(request: web.Request, reason: str, status: int, code: str) -> NoReturn:
    metrics.AUTH_FAILURES.labels(code).inc()
    log.warning("auth_rejected", path=request.path, status=status, reason=reason, code=code, remote=request.remote)
    if status == 403:
        raise Forbidden("the token does not grant access to this resource")
    raise Unauthorized("missing, invalid or expired token")


async def authenticate(
    request: web.Request, *, kinds: Iterable[str] = ALL_KINDS, workspace: str | None = None
) -> Principal:
    """Authenticate `request` with the app's Authenticator (see `Authenticator.authenticate`)."""
    return await request.app[appkeys.AUTH].authenticate(request, kinds=kinds, workspace=workspace)


async def login(request: web.Request) -> Principal:
    """Validate `?token=` as an explicit login (see `Authenticator.login`)."""
    return await request.app[appkeys.AUTH].login(request)


def set_login_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """After a `?token=` login, set the session cookies on `response` (call before prepare)."""
    request.app[appkeys.AUTH].set_login_cookies(request, response)
