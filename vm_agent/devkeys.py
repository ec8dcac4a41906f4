"""The development signing key: what `vm-agent dev` trusts and `vm-agent token` signs with.

Stands in for the control plane in development only. The key lives in the dev state
directory (0600) so tokens keep working across restarts; the daemon still validates them
through the real JWKS path (fetched over HTTP from a loopback listener), exactly as in production.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

DEV_ISSUER = "vm-agent-dev"
USER_AUDIENCE = "workspace-terminal"
MANAGEMENT_AUDIENCE = "node-management"


class DevKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        self.private_key = private_key
        self.kid = kid

    @classmethod
    def load_or_create(cls, directory: Path) -> DevKey:
        path = directory / "dev-signing-key.pem"
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    )
                )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(key, "dev-" + uuid.uuid5(uuid.NAMESPACE_OID, public.hex()).hex[:12])

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [jwk]}

    def mint(
        self,
        *,
        kind: str = "user",
        workspace: str | None = "host",
        node: str | None = None,
        user: str = "dev-user",
        ttl: float = 24 * 3600,
        issuer: str = DEV_ISSUER,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer,
            "sub": user,
            "aud": MANAGEMENT_AUDIENCE if kind == "management" else USER_AUDIENCE,
            "iat": now,
            "exp": now + int(ttl),
        }
        if workspace:
            payload["workspace"] = workspace
        if node:
            payload["node"] = node
        payload.update(claims)
        return jwt.encode(payload, self.private_key, algorithm="ES256", headers={"kid": self.kid})


async def serve_jwks(key: DevKey, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """Serve the key's JWKS on a free loopback port; returns the runner and the JWKS URL."""
    app = web.Application()

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(key.jwks())

    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}/.well-known/jwks.json"


def dev_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "vm-agent"
