"""An async cache of the control plane's signing keys (JWKS).

Why it is shaped like this:
- A failed fetch at start must not stop the daemon (terminals on a VM whose control plane is
  briefly unreachable should come up); requests get 503 until keys exist.
- A failed refresh keeps the last good key set: one flaky response must not log everybody out.
- A token signed with a key we do not know yet (rotation) triggers one refetch, rate-limited so
  a flood of garbage `kid`s cannot turn the daemon into a JWKS hammer.
One task owns refreshing; lookups never wait on the network except for that one unknown-kid
refetch, which concurrent callers share.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import structlog

log = structlog.get_logger("vm_agent.auth.jwks")

MAX_JWKS_BYTES = 1024 * 1024


class JwksUnavailable(RuntimeError):
    """No key set has ever been fetched."""


class JwksCache:
    def __init__(
        self,
        url: str | None,
        *,
        refresh_interval: float,
        refetch_cooldown: float,
        fetch_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.refetch_cooldown = refetch_cooldown
        self.fetch_timeout = fetch_timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._anonymous: list[jwt.PyJWK] = []  # keys without a kid
        self._loaded = False
        self._last_error: str | None = None
        self._last_fetch_attempt = -1e18
        self._inflight: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def start(self) -> None:
        """Fetch once (failure is logged, not raised) and start the periodic refresh."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.fetch_timeout))
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def stop(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None:
                task.cancel()
        for task in (self._refresher, self._inflight):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self._session is not None:
            await self._session.close()

    async def _refresh_loop(self) -> None:
        while True:
            # Retry sooner while we have never succeeded: every request is failing meanwhile.
            await asyncio.sleep(self.refresh_interval if self._loaded else min(self.refresh_interval, 5.0))
            await self.refresh()

    async def refresh(self) -> None:
        """Fetch the key set now; concurrent callers share one request."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        self._last_fetch_attempt = self._clock()
        if not self.url or self._session is None:
            self._last_error = "no JWKS endpoint configured"
            return
        try:
            async with self._session.get(self.url) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await _read_capped(response, MAX_JWKS_BYTES)
            self._install(json.loads(body))
        except Exception as exc:  # network, HTTP, JSON, key parsing: all mean "keep the old keys"
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning("jwks_fetch_failed", url=self.url, error=self._last_error, keeping=len(self._keys))
            return
        self._last_error = None

    def _install(self, document: Any) -> None:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        keys: dict[str, jwt.PyJWK] = {}
        anonymous: list[jwt.PyJWK] = []
        for raw in document["keys"]:
            if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric ("oct") or malformed keys are never acceptable
            if raw.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(raw)
            except Exception as exc:
                log.warning("jwks_key_skipped", kid=raw.get("kid"), error=str(exc))
                continue
            if raw.get("kid"):
                keys[str(raw["kid"])] = key
            else:
                anonymous.append(key)
        if not keys and not anonymous:
            raise ValueError("key set holds no usable signing key")
        added = set(keys) - set(self._keys)
        self._keys, self._anonymous, self._loaded = keys, anonymous, True
        log.info("jwks_loaded", keys=len(keys) + len(anonymous), new=sorted(added))

    async def keys_for(self, kid: str | None) -> list[jwt.PyJWK]:
        """Candidate keys for a token's `kid` (refetching once, rate-limited, when unknown)."""
        if (
            kid is not None
            and kid not in self._keys
            and self._clock() - self._last_fetch_attempt >= self.refetch_cooldown
        ):
            log.info("jwks_unknown_kid_refetch", kid=kid[:64])
            await self.refresh()
        if not self._loaded:
            raise JwksUnavailable(self._last_error or "signing keys not loaded yet")
        if kid is None:
            return list(self._keys.values()) + self._anonymous
        key = self._keys.get(kid)
        return [key] if key is not None else []


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, refused once it passes `cap` bytes.

    Read to EOF in pieces: `StreamReader.read(n)` returns whatever is buffered, so one call
    parsed a key set cut wherever a proxy, TLS record or slow link happened to split it.
    """
    if response.content_length is not None and response.content_length > cap:
        raise ValueError(f"key set is larger than {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise ValueError(f"key set is larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
