"""ready at start (retried), heartbeats on schedule, token refresh from the heartbeat answer."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.control_plane import FakeControlPlane
from vm_agent.logs import get_ring


@pytest.fixture
async def plane():
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


async def test_ready_is_retried_until_accepted_then_heartbeats_flow(make_daemon, plane):
    plane.ready_failures_left = 2
    plane.heartbeat_answer = {"refreshedToken": "token-2"}
    await daemon_for(make_daemon, plane, READY_INITIAL_BACKOFF="20ms", HEARTBEAT_INTERVAL="50ms")
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


async def daemon_for(make_daemon, plane, **settings: str):
    """A daemon that calls back to `plane` with a fixed callback token."""
    return await make_daemon(
        CONTROL_PLANE_URL=plane.url,
        CALLBACK_TOKEN="token-1",
        JWKS_ENDPOINT=f"{plane.url}/.well-known/jwks.json",
        **settings,
    )


def _logged(start: int, event: str) -> list[dict]:
    _, entries = get_ring().read(start, limit=100_000)
    return [e.item for e in entries if e.item["message"] == event]


async def test_a_garbled_ready_answer_is_retried_not_fatal(make_daemon, plane):
    """One 200 with a truncated JSON body ended the callbacks task for good, silently: the node
    was never marked ready and sent no heartbeat."""
    plane.malformed_ready_left = 1
    start = get_ring().last_seq
    await daemon_for(make_daemon, plane, READY_INITIAL_BACKOFF="20ms", HEARTBEAT_INTERVAL="50ms")
    await plane.wait_for(lambda cp: len(cp.calls_to("/heartbeat")) >= 2)
    assert len(plane.calls_to("/ready")) == 2  # the garbled answer, then the retry
    assert [e["level"] for e in _logged(start, "control_plane_ready_failed")] == ["warn"]
    assert _logged(start, "node_task_ended") == []


async def test_a_garbled_heartbeat_answer_does_not_stop_heartbeats(make_daemon, plane):
    plane.malformed_heartbeats_left = 1
    start = get_ring().last_seq
    await daemon_for(make_daemon, plane, HEARTBEAT_INTERVAL="50ms")
    await plane.wait_for(lambda cp: len(cp.calls_to("/heartbeat")) >= 3)
    assert len(_logged(start, "heartbeat_failed")) == 1


async def test_a_rejected_ready_is_an_error_for_an_operator_and_still_retried(make_daemon, plane):
    """A 401 will not cure itself (wrong callback token): say so at error level, but keep
    retrying with backoff, since the control plane may be fixed."""
    plane.ready_failures_left, plane.ready_failure_status = 2, 401
    start = get_ring().last_seq
    await daemon_for(make_daemon, plane, READY_INITIAL_BACKOFF="20ms")
    await plane.wait_for(lambda cp: len(cp.calls_to("/ready")) >= 3)
    failures = _logged(start, "control_plane_ready_failed")
    assert [(e["level"], e["fields"]["status"]) for e in failures] == [("error", 401), ("error", 401)]


async def test_a_node_task_that_ends_says_so():
    """Node duties end only when cancelled at shutdown; one that dies any other way is logged at
    once (a callbacks task that died used to leave no trace until shutdown, or none)."""
    from vm_agent.node.http import _log_unexpected_end

    async def dies() -> None:
        raise RuntimeError("boom")

    start = get_ring().last_seq
    task = asyncio.create_task(dies(), name="control-plane")
    task.add_done_callback(_log_unexpected_end)
    with pytest.raises(RuntimeError):
        await task  # the callback was added first, so it has run before we resume
    [ended] = _logged(start, "node_task_ended")
    assert (ended["level"], ended["fields"]["task"]) == ("error", "control-plane")
    assert "boom" in ended["fields"]["error"]
