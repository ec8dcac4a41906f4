"""Many workspaces at once, and operations that overlap creation."""

from __future__ import annotations

import asyncio

import pytest

from tests.workspaces.conftest import GitServer, exec_in, wait_status
from tests.workspaces.test_lifecycle import _post, _resources

pytestmark = pytest.mark.docker


async def test_twenty_workspaces_created_concurrently(ws_daemon, docker_client, ws_id):
    ids = [ws_id(f"many{i}") for i in range(20)]
    created = await asyncio.gather(*(_post(ws_daemon, "/workspaces", {"workspaceId": ws}) for ws in ids))
    assert [status for status, _ in created] == [202] * 20
    settled = await asyncio.gather(*(wait_status(ws_daemon, ws, timeout=120) for ws in ids))
    assert [(ws.id, ws.status, ws.error) for ws in settled] == [(ws, "running", None) for ws in ids]
    outputs = await asyncio.gather(*(exec_in(ws_daemon, ws, "sh", "-c", "hostname") for ws in ids))
    assert len({out for _, out in outputs}) == 20  # twenty distinct containers
    deleted = await asyncio.gather(*(_post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws) for ws in ids))
    assert [status for status, _ in deleted] == [200] * 20
    for ws in ids:
        assert _resources(docker_client, ws) == ([], [])


async def test_delete_during_a_clone_leaves_nothing(ws_daemon, git_server: GitServer, docker_client, ws_id):
    ws = ws_id("midclone")
    git_server.hold = asyncio.Event()
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                           "gitToken": git_server.token})
    await asyncio.wait_for(git_server.held.wait(), 30)  # the clone is in flight
    status, body = await _post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws)
    assert (status, body) == (200, {"success": True})
    git_server.hold.set()
    assert _resources(docker_client, ws) == ([], [])
    status, _ = await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert status == 202  # the id is free again
    assert (await wait_status(ws_daemon, ws)).status == "running"


async def test_daemon_restart_mid_creation_resumes_it(make_daemon, test_image, git_server: GitServer, ws_id):
    daemon = await make_daemon(WORKSPACE_IMAGE=test_image)
    ws = ws_id("resume")
    git_server.hold = asyncio.Event()
    await _post(daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                        "gitToken": git_server.token})
    await asyncio.wait_for(git_server.held.wait(), 30)
    await daemon.stop()
    git_server.hold.set()
    git_server.hold = None
    await daemon.start()
    settled = await wait_status(daemon, ws)
    assert settled.status == "running", settled.error
    _code, out = await exec_in(daemon, ws, "cat", "hello.txt")
    assert out.strip() == "hello from the repository"


async def test_identical_creates_racing_make_one_workspace(ws_daemon, docker_client, ws_id):
    ws = ws_id("twin")
    results = await asyncio.gather(*(_post(ws_daemon, "/workspaces", {"workspaceId": ws}) for _ in range(3)))
    assert sorted(status for status, _ in results) == [200, 200, 202]
    assert (await wait_status(ws_daemon, ws)).status == "running"
    assert len(_resources(docker_client, ws)[0]) == 1
