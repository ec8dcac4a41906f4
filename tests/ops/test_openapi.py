"""openapi.yaml against the running daemon: every route documented, every documented route real,
auth where it says auth, and real answers in the documented shapes.

A client generated from /openapi.json is only as good as this document; these tests are what
keeps it from drifting when a route is added or a field renamed.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.ops.openapi_doc import (
    DOCUMENT,
    concrete,
    errors,
    is_websocket,
    operations,
    requires_auth,
    resolve,
    response_schema,
)
from vm_agent import __version__


def router_routes(app: Any) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app registers (HEAD comes free with GET)."""
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        routes.add((route.method, route.resource.canonical))
    return routes


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, str]:
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return response.status, body, response.headers.get("Content-Type", "")


def assert_conforms(method: str, path: str, status: int, body: Any) -> None:
    problems = errors(body, response_schema(method, path, status))
    assert not problems, f"{method} {path} {status}: {problems[:5]}"


async def test_openapi_json_is_served_without_auth_and_is_the_packaged_document(daemon):
    async with daemon.client() as http:
        status, body, content_type = await call(http, "GET", f"{daemon.url}/openapi.json")
    assert status == 200
    assert content_type.startswith("application/json")
    assert body == DOCUMENT
    assert body["openapi"].startswith("3.1")
    assert body["info"]["version"] == __version__


async def test_every_route_is_documented_and_every_documented_route_exists(daemon):
    documented = {(method, path) for method, path, _ in operations()}
    registered = router_routes(daemon.app)
    assert registered - documented == set(), "routes the app serves but openapi.yaml does not describe"
    assert documented - registered == set(), "routes openapi.yaml describes but the app does not serve"


def test_every_operation_documents_its_answers_and_refs_resolve():
    for method, path, operation in operations():
        responses = operation["responses"]
        assert responses, f"{method} {path} documents no response"
        for status, response in responses.items():
            resolved = resolve(response)
            assert "description" in resolved, f"{method} {path} {status}"
            for media in resolved.get("content", {}).values():
                errors(None, media["schema"])  # walks every $ref reachable from the schema
        if requires_auth(operation):
            assert "401" in responses, f"{method} {path} needs auth but documents no 401"
        if is_websocket(operation):
            assert method == "GET" and "x-websocket" in operation, f"{method} {path}: describe the socket protocol"


async def test_each_auth_route_answers_401_with_the_error_schema_without_or_with_a_bad_token(daemon):
    guarded = [(m, p, op) for m, p, op in operations() if requires_auth(op)]
    assert len(guarded) >= 20
    async with daemon.client() as http:
        for method, path, _ in guarded:
            url = f"{daemon.url}{concrete(path)}"
            body_kwargs = {"json": {}} if method == "POST" else {}
            for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic dXNlcjpwdw=="}):
                status, body, _ = await call(http, method, url, headers=headers, **body_kwargs)
                assert status == 401, f"{method} {path} with {headers or 'no token'} answered {status}: {body}"
                assert_conforms(method, path, 401, body)
                assert body["error"] == "invalid_token"
            status, body, _ = await call(http, method, url, params={"token": "garbage"}, **body_kwargs)
            assert status == 401, f"{method} {path}?token=garbage answered {status}"


async def test_open_routes_answer_without_a_token(daemon):
    async with daemon.client() as http:
        for method, path, operation in operations():
            if requires_auth(operation):
                continue
            status, body, _ = await call(http, method, f"{daemon.url}{concrete(path)}", allow_redirects=False)
            assert str(status) in operation["responses"], f"{method} {path} answered undocumented {status}"
            if body is not None and status >= 400:
                assert_conforms(method, path, status, body)


async def test_real_answers_have_the_documented_shapes(daemon):
    mgmt = daemon.auth_headers("management")
    host_mgmt = daemon.auth_headers("management", workspace="host")
    user = daemon.auth_headers("user", workspace="host")
    async with daemon.client() as http:
        checks: list[tuple[str, str, dict[str, str], Any]] = [
            ("GET", "/health", {}, None),
            ("GET", "/auth/whoami", user, None),
            ("GET", "/system-info", mgmt, None),
            ("GET", "/logs", mgmt, None),
            ("GET", "/workspaces", mgmt, None),
            ("POST", "/workspaces/{ws}/agent-sessions", host_mgmt, {"sessionId": "ops-session", "label": "ops"}),
            ("GET", "/workspaces/{ws}/agent-sessions", user, None),
            ("POST", "/workspaces/{ws}/agent-sessions/{sid}/rpc", host_mgmt, {"type": "get_state"}),
            ("POST", "/workspaces/{ws}/agent-sessions/{sid}/rpc", host_mgmt, {"type": "nonsense"}),
            ("POST", "/workspaces/{ws}/agent-sessions/{sid}/cancel", host_mgmt, None),
            ("GET", "/workspaces/{ws}/tabs", user, None),
            ("GET", "/workspaces/{ws}", host_mgmt, None),
        ]
        seen: dict[str, Any] = {}
        for method, path, headers, payload in checks:
            kwargs = {"json": payload} if payload is not None else {}
            status, body, _ = await call(http, method, f"{daemon.url}{concrete(path)}", headers=headers, **kwargs)
            assert status < 500, f"{method} {path} answered {status}: {body}"
            assert_conforms(method, path, status, body)
            seen[f"{method} {path}"] = body
    assert seen["GET /health"]["status"] in ("healthy", "degraded")
    assert seen["GET /logs"]["entries"], "the daemon has logged its start"
    assert [s["id"] for s in seen["GET /workspaces/{ws}/agent-sessions"]["sessions"]] == ["ops-session"]
    assert any(t["id"] == "ops-session" and t["type"] == "chat" for t in seen["GET /workspaces/{ws}/tabs"]["tabs"])


async def test_documented_client_errors_are_json_with_the_error_schema(daemon):
    mgmt = daemon.auth_headers("management")
    host_mgmt = daemon.auth_headers("management", workspace="host")
    cases = [
        ("GET", "/logs", mgmt, {"params": {"limit": "0"}}, 400),
        ("GET", "/logs", mgmt, {"params": {"level": "loud"}}, 400),
        ("POST", "/workspaces", mgmt, {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/workspaces", mgmt, {"json": {"workspaceId": "bad id!"}}, 400),
        ("GET", "/workspaces/{ws}/tabs", daemon.auth_headers("user", workspace="other"), {}, 403),
        ("POST", "/workspaces/{ws}/agent-sessions/{sid}/prompt", host_mgmt, {"json": {"prompt": "x"}}, 404),
        ("POST", "/workspaces/{ws}/agent-sessions/{sid}/prompt", host_mgmt, {"json": {"prompt": 7}}, 404),
        ("GET", "/system-info", daemon.auth_headers("user"), {}, 403),
    ]
    async with daemon.client() as http:
        for method, path, headers, kwargs, expected in cases:
            extra_headers = {**headers, **kwargs.pop("headers", {})}
            status, body, _ = await call(http, method, f"{daemon.url}{concrete(path)}", headers=extra_headers,
                                         **kwargs)
            assert status == expected, f"{method} {path} {kwargs}: {status} {body}"
            assert_conforms(method, path, status, body)
