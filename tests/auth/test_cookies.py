"""`?token=` logins set HttpOnly session cookies that later requests and sockets can use."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import pytest

from vm_agent.auth.principal import Principal
from vm_agent.auth.sessions import SessionStore


async def test_token_query_login_on_websocket_sets_session_cookies(daemon):
    token = daemon.token("management", workspace="host")
    jar = aiohttp.CookieJar(unsafe=True)
    async with daemon.client(cookie_jar=jar) as http:
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream?token={token}") as ws:
            await ws.receive_json(timeout=5)
        cookies = {c.key: c for c in jar}
        assert {"vm_session", "vm_session_host"} <= set(cookies)
        morsel = cookies["vm_session"]
        assert morsel["httponly"] and morsel["secure"]
        assert morsel["samesite"] == "Strict"
        # Later calls need no token at all.
        async with http.get(f"{daemon.url}/logs?limit=1") as response:
            assert response.status == 200
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream") as ws:
            assert (await ws.receive_json(timeout=5))["message"]


async def test_unknown_session_cookie_is_rejected(daemon):
    async with daemon.client(cookies={"vm_session": "forged"}) as http:
        async with http.get(f"{daemon.url}/logs") as response:
            assert response.status == 401


async def test_bearer_header_does_not_set_cookies(daemon):
    jar = aiohttp.CookieJar(unsafe=True)
    async with daemon.client(cookie_jar=jar) as http:
        async with http.get(f"{daemon.url}/logs", headers=daemon.auth_headers()) as response:
            assert response.status == 200
    assert len(jar) == 0


async def test_a_login_cookie_dies_with_its_token(make_daemon):
    """A short-lived token used once as `?token=` was a 24 h cookie: the same token sent as a
    Bearer header was refused as expired while the cookie kept full access."""
    daemon = await make_daemon(JWT_LEEWAY="0")
    token = daemon.token("management", workspace=None, ttl=2)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with daemon.client(cookie_jar=jar) as http:
        async with http.ws_connect(f"{daemon.ws_url}/logs/stream?token={token}") as ws:
            await ws.receive_json(timeout=5)
        cookie = {c.key: c for c in jar}["vm_session"]
        assert 0 < int(cookie["max-age"]) <= 2  # the browser is told the session's real life
        async with http.get(f"{daemon.url}/logs?limit=1") as response:
            assert response.status == 200  # still inside the token's life
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.2)  # let the token expire
        # The jar would drop the cookie itself now; send it by hand, as a client ignoring max-age would.
        async with daemon.client(cookies={"vm_session": cookie.value}) as stale:
            async with stale.get(f"{daemon.url}/logs?limit=1") as response:
                assert response.status == 401
            async with stale.get(f"{daemon.url}/auth/whoami") as response:
                assert response.status == 401


def test_a_session_ends_at_its_token_expiry_plus_leeway():
    now = [1_000_000.0]
    store = SessionStore(ttl=24 * 3600, max_count=10, clock=lambda: now[0], leeway=5)
    principal = Principal(user_id="u", workspace_id="host", node_id=None, kind="user", expires_at=now[0] + 60)
    session_id = store.create(principal)
    assert store.remaining(session_id) == 65
    now[0] += 64.9
    assert store.get(session_id) == principal
    now[0] += 0.2
    assert store.get(session_id) is None
    # A long-lived token keeps the SESSION_TTL bound.
    forever = Principal(user_id="u", workspace_id="host", node_id=None, kind="user", expires_at=now[0] + 10**9)
    assert store.remaining(store.create(forever)) == pytest.approx(24 * 3600)
