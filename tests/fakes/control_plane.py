"""A fake control plane on 127.0.0.1: serves a JWKS it can rotate or break, records callbacks.

Speaks the real wire shapes (RFC 7517 JWKS; the node ready/heartbeat calls of PROTOCOL.md §2),
so the daemon under test runs its production code paths against it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass
class SigningKey:
    kid: str
    private: Any
    alg: str

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        data = json.loads(algo.to_jwk(self.private.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return data

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class FakeControlPlane:
    keys: list[SigningKey] = field(default_factory=list)
    jwks_status: int = 200
    jwks_fetches: int = 0
    # Misbehaviours. jwks_split_pause > 0: the key set goes out in two writes that far apart, as
    # from a proxy or over a slow link; jwks_padding: bytes of filler added to the document.
    jwks_split_pause: float = 0.0
    jwks_padding: int = 0
    ready_failures_left: int = 0
    ready_failure_status: int = 503
    # Answer the next N ready / heartbeat calls 200 application/json with a truncated body.
    malformed_ready_left: int = 0
    malformed_heartbeats_left: int = 0
    heartbeat_answer: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeControlPlane:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        app.router.add_post("/api/nodes/{node}/ready", self._ready)
        app.router.add_post("/api/nodes/{node}/heartbeat", self._heartbeat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds (checked on every request the fake receives)."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        self.jwks_fetches += 1
        await self._notify()
        if self.jwks_status != 200:
            return web.Response(status=self.jwks_status, text="unavailable")
        document: dict[str, Any] = {"keys": [k.jwk() for k in self.keys]}
        if self.jwks_padding:
            document["padding"] = "x" * self.jwks_padding
        body = json.dumps(document).encode()
        if not self.jwks_split_pause:
            return web.Response(body=body, content_type="application/json")
        # Chunked, in two writes: the client sees the first half well before the rest.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await asyncio.sleep(self.jwks_split_pause)
        await response.write(body[len(body) // 2 :])
        await response.write_eof()
        return response

    async def _record(self, request: web.Request) -> None:
        self.calls.append(Call(request.path, await request.json(), request.headers.get("Authorization")))
        await self._notify()

    async def _ready(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.ready_failures_left > 0:
            self.ready_failures_left -= 1
            return web.Response(status=self.ready_failure_status, text="deploying")
        if self.malformed_ready_left > 0:
            self.malformed_ready_left -= 1
            return web.Response(text='{"ok": tr', content_type="application/json")
        return web.json_response({"ok": True})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.malformed_heartbeats_left > 0:
            self.malformed_heartbeats_left -= 1
            return web.Response(text="{", content_type="application/json")
        return web.json_response(self.heartbeat_answer)

    def calls_to(self, suffix: str) -> list[Call]:
        return [c for c in self.calls if c.path.endswith(suffix)]
