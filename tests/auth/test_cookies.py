"""`?token=` logins set HttpOnly session cookies that later requests and sockets can use."""

from __future__ import annotations

import aiohttp


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
