"""Key set lifecycle: rotation, an unreachable JWKS at start and during refresh, refetch limits."""

from __future__ import annotations

from tests.auth.test_tokens import whoami
from tests.fakes.control_plane import SigningKey


async def test_rotated_key_is_picked_up_without_restart(cp_daemon, control_plane, claims):
    daemon = await cp_daemon(JWKS_REFETCH_COOLDOWN="0s")
    new_key = SigningKey.ec("key-2")
    token = new_key.sign(claims("user"))
    assert (await whoami(daemon, token))[0] == 401  # not published yet
    control_plane.keys = [new_key]  # the control plane rotates: old key retired, new one published
    assert (await whoami(daemon, token))[0] == 200
    old = SigningKey("key-1", None, "RS256")  # retired kid is no longer trusted after the refetch
    assert old.kid not in {k.kid for k in control_plane.keys}


async def test_unknown_kid_refetch_is_rate_limited(cp_daemon, control_plane, claims):
    daemon = await cp_daemon(JWKS_REFETCH_COOLDOWN="30s")
    fetches_at_start = control_plane.jwks_fetches
    for n in range(20):
        await whoami(daemon, SigningKey.ec(f"random-{n}").sign(claims("user")))
    assert control_plane.jwks_fetches == fetches_at_start  # start-up fetch is within the cooldown


async def test_jwks_down_at_start_gives_503_then_recovers(cp_daemon, control_plane, claims):
    control_plane.jwks_status = 500
    daemon = await cp_daemon(JWKS_REFETCH_COOLDOWN="0s")
    token = control_plane.keys[0].sign(claims("user"))
    status, body = await whoami(daemon, token)
    assert status == 503
    assert body["error"] == "auth_unavailable"
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as r:
        health = await r.json()
    assert health["status"] == "degraded"
    assert health["checks"]["jwks"]["status"] == "error"
    control_plane.jwks_status = 200
    assert (await whoami(daemon, token))[0] == 200
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as r:
        assert (await r.json())["status"] == "healthy"


async def test_failed_refresh_keeps_last_good_keys(cp_daemon, control_plane, claims):
    daemon = await cp_daemon(JWKS_REFRESH_INTERVAL="100ms")
    token = control_plane.keys[0].sign(claims("user"))
    control_plane.jwks_status = 502
    failed_fetch = control_plane.jwks_fetches + 2
    await control_plane.wait_for(lambda cp: cp.jwks_fetches >= failed_fetch)
    assert (await whoami(daemon, token))[0] == 200


async def test_symmetric_keys_in_the_jwks_are_ignored(cp_daemon, control_plane, claims):
    """An 'oct' key published by mistake must never let HS256 tokens in."""
    import base64

    import jwt

    secret = b"shared-secret-shared-secret-32by"

    class OctKey(SigningKey):
        def jwk(self):
            return {"kty": "oct", "kid": "oct-1", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}

    control_plane.keys.append(OctKey("oct-1", None, "HS256"))
    daemon = await cp_daemon()
    token = jwt.encode(claims("user"), secret, algorithm="HS256", headers={"kid": "oct-1"})
    assert (await whoami(daemon, token))[0] == 401


async def test_a_key_set_that_arrives_in_pieces_is_read_whole(cp_daemon, control_plane, claims):
    """A proxy, TLS records or a slow link deliver the JWKS in more than one read. One `read(n)`
    parsed the first half, so every request got 503 and each refresh could fail the same way."""
    control_plane.jwks_split_pause = 0.2  # the slow link: the second half comes 200 ms later
    daemon = await cp_daemon()
    status, body = await whoami(daemon, control_plane.keys[0].sign(claims("user")))
    assert (status, body.get("userId")) == (200, "user-1")
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as r:
        assert (await r.json())["checks"]["jwks"]["status"] == "ok"


async def test_an_oversized_key_set_is_refused_even_without_a_length(cp_daemon, control_plane, claims):
    """Read to the end, but not without bound: chunked (no Content-Length), over 1 MiB → refused."""
    control_plane.jwks_padding = 1024 * 1024
    control_plane.jwks_split_pause = 0.01
    daemon = await cp_daemon()
    status, body = await whoami(daemon, control_plane.keys[0].sign(claims("user")))
    assert (status, body["error"]) == (503, "auth_unavailable")
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as r:
        assert "larger than" in (await r.json())["checks"]["jwks"]["error"]
