"""ready at start (retried), heartbeats on schedule, token refresh from the heartbeat answer."""

from __future__ import annotations

import pytest

from tests.fakes.control_plane import FakeControlPlane


@pytest.fixture
async def plane():
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


async def test_ready_is_retried_until_accepted_then_heartbeats_flow(make_daemon, plane):
    plane.ready_failures_left = 2
    plane.heartbeat_answer = {"refreshedToken": "token-2"}
    await make_daemon(
        CONTROL_PLANE_URL=plane.url,
        CALLBACK_TOKEN="token-1",
        READY_INITIAL_BACKOFF="20ms",
        HEARTBEAT_INTERVAL="50ms",
        JWKS_ENDPOINT=f"{plane.url}/.well-known/jwks.json",
    )
    await plane.wait_for(lambda cp: len(cp.calls_to("/heartbeat")) >= 2)
    ready = plane.calls_to("/ready")
    assert len(ready) == 3
    assert all(c.path == "/api/nodes/test-node/ready" for c in ready)
    assert ready[-1].body == {"agentVersion": ready[-1].body["agentVersion"]}
    assert ready[0].authorization == "Bearer token-1"
    first, second = plane.calls_to("/heartbeat")[:2]
    assert first.authorization == "Bearer token-1"
    assert second.authorization == "Bearer token-2"  # refreshed token replaced the old one
    assert set(first.body) == {"nodeId", "agentVersion", "activeWorkspaces", "metrics"}
    assert set(first.body["metrics"]) == {"cpuLoadAvg1", "memoryPercent", "diskPercent"}


async def test_callback_token_can_come_from_a_file(make_daemon, plane, tmp_path):
    token_file = tmp_path / "callback-token"
    token_file.write_text("from-file\n")
    await make_daemon(
        CONTROL_PLANE_URL=plane.url,
        CALLBACK_TOKEN_FILE=str(token_file),
        JWKS_ENDPOINT=f"{plane.url}/.well-known/jwks.json",
    )
    await plane.wait_for(lambda cp: len(cp.calls_to("/ready")) >= 1)
    assert plane.calls_to("/ready")[0].authorization == "Bearer from-file"


async def test_no_callbacks_without_control_plane(make_daemon, plane):
    daemon = await make_daemon(HEARTBEAT_INTERVAL="10ms")
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as r:
        assert r.status == 200
    assert plane.calls == []
