"""Many workspaces at once, and operations that overlap creation."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.workspaces.conftest import GitServer, exec_in, wait_status
from tests.workspaces.test_lifecycle import _post, _resources
from vm_agent.logs import get_ring

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


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    """Take SQLite's write lock from another connection, as a slow fsync or a backup would hold
    it: the daemon's next write waits (up to its 5 s busy timeout) until it is released."""
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=10, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _release_write_lock(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")
    conn.close()


async def test_delete_while_create_is_still_saving_leaves_nothing(ws_daemon, docker_client, ws_id):
    """POST published the workspace, then saved its record and only after that started its
    task. A DELETE in between found no task to wait for and finished; the late task then made a
    volume (and container) for the deleted workspace, and could save its record again, so it
    came back after a restart."""
    ws = ws_id("saving")
    start = get_ring().last_seq
    lock = await asyncio.to_thread(_hold_write_lock, ws_daemon.settings.state_path / "vm-agent.db")
    try:
        create = asyncio.create_task(_post(ws_daemon, "/workspaces", {"workspaceId": ws}))
        async with asyncio.timeout(4):  # well inside the daemon's 5 s wait for the lock
            # Published: the create now waits on the lock to save its record.
            while (await _post(ws_daemon, f"/workspaces/{ws}", method="GET", ws=ws))[0] == 404:
                pass
            delete = asyncio.create_task(_post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws))
            # Claimed by the delete: the same create again is now told the id is being deleted.
            while (await _post(ws_daemon, "/workspaces", {"workspaceId": ws}))[0] != 409:
                pass
    finally:
        await asyncio.to_thread(_release_write_lock, lock)
    assert (await create)[0] == 202
    assert await delete == (200, {"success": True})
    # By the time the delete answered, the create's build had ended, aborted. It used to start
    # only now, unseen by the delete, and make a volume (and perhaps a container and a record).
    _, entries = get_ring().read(start, limit=100_000)
    said = [e.item["message"] for e in entries if e.item["fields"].get("workspace_id") == ws]
    assert said == ["workspace_creating", "workspace_build_aborted", "workspace_deleted"]

    await ws_daemon.restart()
    assert _resources(docker_client, ws) == ([], [])
    assert not (ws_daemon.settings.state_path / "workspaces" / ws).exists()  # no credentials left
    async with ws_daemon.client() as http:
        async with http.get(f"{ws_daemon.url}/workspaces", headers=ws_daemon.auth_headers()) as r:
            assert ws not in {w["id"] for w in (await r.json())["workspaces"]}
