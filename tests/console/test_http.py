"""The console's HTTP side, without a browser: the page and its assets, the security headers,
the `?token=` login redirect, and a clear answer when the assets were never built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from vm_agent.console import http as console_http


@pytest.fixture
def built_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in build output, so these tests need neither Node nor a real build."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text('<!doctype html><script type="module" src="/ui/console.js"></script>')
    (static / "console.js").write_text("export {};\n")
    (static / "console.css").write_text("body{}\n")
    (static / ".build-hash").write_text("abc\n")
    monkeypatch.setattr(console_http, "STATIC_DIR", static)
    return static


async def test_page_is_served_with_a_strict_content_security_policy(daemon: Any, built_assets: Path) -> None:
    async with daemon.client() as client:
        response = await client.get(f"{daemon.url}/")
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "/ui/console.js" in await response.text()
        csp = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["connect-src"] == f"'self' wss://127.0.0.1:{daemon.port}"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"

        script = await client.get(f"{daemon.url}/ui/console.js")
        assert script.status == 200
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert script.headers["X-Content-Type-Options"] == "nosniff"
        assert (await client.get(f"{daemon.url}/ui/console.css")).headers["Content-Type"].startswith("text/css")


async def test_only_built_files_are_served(daemon: Any, built_assets: Path) -> None:
    async with daemon.client() as client:
        for path in ("/ui/missing.js", "/ui/.build-hash", "/ui/..%2Fhttp.py", "/ui/%2e%2e%2f%2e%2e%2fconfig.py"):
            response = await client.get(f"{daemon.url}{path}")
            assert response.status == 404, path
            assert (await response.json())["error"] == "not_found"
            assert "Content-Security-Policy" in response.headers


async def test_token_login_sets_the_cookie_and_drops_the_token_from_the_url(daemon: Any, built_assets: Path) -> None:
    token = daemon.token("user", "host")
    # The cookie is for 127.0.0.1: aiohttp keeps cookies of IP hosts only in an "unsafe" jar.
    async with daemon.client(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        response = await client.get(f"{daemon.url}/", params={"token": token, "workspace": "host"},
                                    allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"] == "/?workspace=host"
        assert token not in response.headers["Location"]
        cookie = response.cookies["vm_session"]
        assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Strict"

        # The cookie alone now authenticates the page's API calls.
        whoami = await client.get(f"{daemon.url}/auth/whoami")
        assert whoami.status == 200
        assert (await whoami.json())["workspaceId"] == "host"


async def test_a_bad_token_link_is_refused_without_a_cookie(daemon: Any, built_assets: Path) -> None:
    async with daemon.client() as client:
        response = await client.get(f"{daemon.url}/", params={"token": "not-a-jwt"}, allow_redirects=False)
        assert response.status == 401
        assert (await response.json())["error"] == "invalid_token"
        assert "vm_session" not in response.cookies


async def test_a_token_link_logs_in_as_its_owner_even_with_a_cookie(daemon: Any, built_assets: Path) -> None:
    """A browser logged in as alice that opens bob's console link becomes bob. Before, the cookie
    won: 303, no new cookie, and the console went on as alice. Then, alice's per-workspace cookie
    survived and still spoke for her workspace (`whoami?workspace=host` said alice)."""
    alice = daemon.token("user", "host", user="alice")
    bob = daemon.token("user", "other", user="bob")
    async with daemon.client(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        response = await client.get(f"{daemon.url}/", params={"token": alice}, allow_redirects=False)
        assert response.status == 303
        alice_session = response.cookies["vm_session_host"].value
        response = await client.get(f"{daemon.url}/", params={"token": bob}, allow_redirects=False)
        assert response.status == 303
        assert {"vm_session", "vm_session_other"} <= set(response.cookies)
        whoami = await (await client.get(f"{daemon.url}/auth/whoami")).json()
        assert (whoami["userId"], whoami["workspaceId"]) == ("bob", "other")
        # alice's vm_session_host is expired and dead too, not checked first for `host` routes
        # (terminals and agents there ran as alice): no credential for host is left (bob's is
        # not for host).
        expired = response.cookies.get("vm_session_host")
        response = await client.get(f"{daemon.url}/auth/whoami", params={"workspace": "host"})
        assert response.status == 401, await response.text()
        assert expired is not None and expired.value == "" and expired["max-age"] == "0"
        async with daemon.client() as replay:  # and revoked: a copy of alice's cookie is refused
            for name in ("vm_session_host", "vm_session"):
                response = await replay.get(
                    f"{daemon.url}/auth/whoami", params={"workspace": "host"}, cookies={name: alice_session}
                )
                assert response.status == 401, name
        # A management login (no workspace cookie of its own) clears bob's vm_session_other.
        admin = daemon.token("management", None, user="admin")
        response = await client.get(f"{daemon.url}/", params={"token": admin}, allow_redirects=False)
        assert response.status == 303
        for workspace in ("host", "other"):
            response = await client.get(f"{daemon.url}/auth/whoami", params={"workspace": workspace})
            assert response.status == 200, workspace
            whoami = await response.json()
            assert (whoami["userId"], whoami["kind"]) == ("admin", "management"), workspace


async def test_a_bad_token_link_is_refused_even_with_a_cookie(daemon: Any, built_assets: Path) -> None:
    """`/?token=garbage` beside a valid cookie was a 303 to `/`: it looked like a successful login."""
    async with daemon.client(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        token = daemon.token("user", "host")
        assert (await client.get(f"{daemon.url}/", params={"token": token}, allow_redirects=False)).status == 303
        for bad in ("not-a-jwt", "", daemon.token("user", "host", ttl=-3600)):
            response = await client.get(f"{daemon.url}/", params={"token": bad}, allow_redirects=False)
            assert response.status == 401, bad
            assert (await response.json())["error"] == "invalid_token"
            assert "vm_session" not in response.cookies


async def test_unbuilt_console_says_how_to_build_it(
    daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_http, "STATIC_DIR", tmp_path / "never-built")
    async with daemon.client() as client:
        for path in ("/", "/ui/console.js"):
            response = await client.get(f"{daemon.url}{path}")
            assert response.status == 503
            body = await response.json()
            assert body["error"] == "console_not_built"
            assert "scripts/build-console.sh" in body["message"] and "make run" in body["message"]
