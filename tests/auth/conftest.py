from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import TEST_NODE_ID
from tests.fakes.control_plane import FakeControlPlane, SigningKey

ISSUER = "https://control.example.test"


@pytest.fixture
async def control_plane() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane(keys=[SigningKey.rsa("key-1")]).start()
    yield plane
    await plane.stop()


@pytest.fixture
def claims() -> Any:
    """Claims of a valid token; pass overrides (None removes a claim)."""

    def build(kind: str = "user", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-1",
            "aud": "node-management" if kind == "management" else "workspace-terminal",
            "iat": now,
            "exp": now + 300,
        }
        if kind == "management":
            base["node"] = TEST_NODE_ID
        else:
            base["workspace"] = "host"
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    return build


@pytest.fixture
async def cp_daemon(make_daemon, control_plane):
    """A daemon whose keys come from the fake control plane's JWKS."""

    async def make(**env: str):
        return await make_daemon(JWKS_ENDPOINT=f"{control_plane.url}/.well-known/jwks.json", JWT_ISSUER=ISSUER, **env)

    return make
