"""The token attack matrix and the accepted shapes, through real HTTP requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.fakes.control_plane import SigningKey


async def whoami(daemon, token: str | None, workspace: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    params = {"workspace": workspace} if workspace else {}
    async with daemon.client() as http, http.get(f"{daemon.url}/auth/whoami", headers=headers, params=params) as r:
        return r.status, await r.json()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_valid_user_token_names_the_user_and_workspace(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    status, body = await whoami(daemon, control_plane.keys[0].sign(claims("user")))
    assert status == 200
    assert body["userId"] == "user-1"
    assert body["workspaceId"] == "host"
    assert body["kind"] == "user"


async def test_valid_management_token_reaches_management_routes(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    token = control_plane.keys[0].sign(claims("management"))
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/system-info", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            assert (await r.json())["agent"]["pid"] > 0
        user_token = control_plane.keys[0].sign(claims("user"))
        async with http.get(f"{daemon.url}/system-info", headers={"Authorization": f"Bearer {user_token}"}) as r:
            assert r.status == 403
            assert (await r.json())["error"] == "forbidden"


async def test_ec_keys_are_accepted(cp_daemon, control_plane, claims):
    control_plane.keys.append(SigningKey.ec("key-ec"))
    daemon = await cp_daemon()
    status, _ = await whoami(daemon, control_plane.keys[1].sign(claims("user")))
    assert status == 200


def _alg_none(claims: dict) -> str:
    return (
        f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': 'key-1'}).encode())}.{b64(json.dumps(claims).encode())}."
    )


def _hs256_with_public_key(key: SigningKey, claims: dict) -> str:
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _tampered(key: SigningKey, claims: dict) -> str:
    head, body, signature = key.sign(claims).split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["sub"] = "admin"
    return f"{head}.{b64(json.dumps(forged).encode())}.{signature}"


ATTACKS = {
    "alg_none": lambda key, c: _alg_none(c("user")),
    "hs256_signed_with_public_key": lambda key, c: _hs256_with_public_key(key, c("user")),
    "wrong_issuer": lambda key, c: key.sign(c("user", iss="https://evil.example")),
    "wrong_audience": lambda key, c: key.sign(c("user", aud="somebody-else")),
    "expired": lambda key, c: key.sign(c("user", exp=int(time.time()) - 3600)),
    "missing_exp": lambda key, c: key.sign(c("user", exp=None)),
    "nbf_beyond_leeway": lambda key, c: key.sign(c("user", nbf=int(time.time()) + 600)),
    "unknown_kid": lambda key, c: SigningKey.rsa("stranger").sign(c("user")),
    "known_kid_other_key": lambda key, c: SigningKey(key.kid, SigningKey.rsa("x").private, "RS256").sign(c("user")),
    "tampered_payload": lambda key, c: _tampered(key, c("user")),
    "garbage": lambda key, c: "not-a-token",
    "three_garbage_parts": lambda key, c: "a.b.c",
    "user_token_without_workspace": lambda key, c: key.sign(c("user", workspace=None)),
    "management_token_without_node": lambda key, c: key.sign(c("management", node=None)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_attack_is_rejected_with_401(cp_daemon, control_plane, claims, attack):
    daemon = await cp_daemon()
    status, body = await whoami(daemon, ATTACKS[attack](control_plane.keys[0], claims))
    assert status == 401, body
    assert body == {"error": "invalid_token", "message": "missing, invalid or expired token"}


async def test_rejection_reason_is_logged_not_echoed(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    await whoami(daemon, control_plane.keys[0].sign(claims("user", iss="https://evil.example")))
    from vm_agent import appkeys

    ring = daemon.app[appkeys.LOG_RING]
    _, entries = ring.read(0, len(ring))
    rejected = [e.item for e in entries if e.item["message"] == "auth_rejected"]
    assert rejected and "issuer" in rejected[-1]["fields"]["reason"].lower()


async def test_nbf_within_leeway_is_accepted(cp_daemon, control_plane, claims):
    """A VM restored from a snapshot may run a little behind; JWT_LEEWAY absorbs it."""
    daemon = await cp_daemon(JWT_LEEWAY="60s")
    token = control_plane.keys[0].sign(claims("user", nbf=int(time.time()) + 30, iat=int(time.time()) + 30))
    status, _ = await whoami(daemon, token)
    assert status == 200


async def test_token_for_another_node_is_forbidden(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    status, body = await whoami(daemon, control_plane.keys[0].sign(claims("management", node="other-node")))
    assert status == 403
    assert body["error"] == "forbidden"


async def test_workspace_binding(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    key = control_plane.keys[0]
    user = key.sign(claims("user", workspace="ws-a"))
    assert (await whoami(daemon, user, workspace="ws-a"))[0] == 200
    assert (await whoami(daemon, user, workspace="ws-b"))[0] == 403
    bound_management = key.sign(claims("management", workspace="ws-a"))
    assert (await whoami(daemon, bound_management, workspace="ws-b"))[0] == 403
    node_wide = key.sign(claims("management"))
    assert (await whoami(daemon, node_wide, workspace="ws-b"))[0] == 200


async def test_huge_token_is_refused_and_daemon_stays_healthy(cp_daemon, control_plane, claims):
    daemon = await cp_daemon()
    huge = control_plane.keys[0].sign(claims("user", padding="x" * 100_000))
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/auth/whoami", headers={"Authorization": f"Bearer {huge}"}) as r:
            assert 400 <= r.status < 500
        async with http.post(f"{daemon.url}/auth/whoami", data=huge) as r:
            assert r.status in (401, 405)
        async with http.get(f"{daemon.url}/health") as r:
            assert (await r.json())["status"] == "healthy"
    # Under the header size limit but over JWT_MAX_TOKEN_BYTES: our own check answers.
    daemon2 = await cp_daemon(JWT_MAX_TOKEN_BYTES="1KiB")
    status, _ = await whoami(daemon2, control_plane.keys[0].sign(claims("user", padding="x" * 2000)))
    assert status == 401


async def test_missing_and_malformed_authorization(cp_daemon):
    daemon = await cp_daemon()
    assert (await whoami(daemon, None))[0] == 401
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/auth/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"}) as r:
            assert r.status == 401


def test_pyjwt_refuses_none_even_if_asked():
    """Guard for the library behaviour our pinning relies on."""
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(_alg_none({"sub": "x"}), key="", algorithms=["RS256"])
