"""The git token and secret env never show up where other people or programs can read them."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest

from tests.workspaces.conftest import GitServer, exec_in, wait_status
from tests.workspaces.test_lifecycle import _post
from vm_agent import appkeys
from vm_agent.workspaces.container import ContainerPlacement

pytestmark = pytest.mark.docker


async def test_git_token_is_never_visible(ws_daemon, git_server: GitServer, docker_client, ws_id, daemon_logs):
    ws = ws_id("secret")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                           "gitToken": git_server.token})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    assert git_server.authorized, "the clone never presented the token"
    token = git_server.token

    # While git is talking to the server (request held open), look at every process.
    git_server.hold = asyncio.Event()
    fetch = asyncio.create_task(exec_in(ws_daemon, ws, "git", "fetch", "origin"))
    await asyncio.wait_for(git_server.held.wait(), 30)
    _, inside = await exec_in(ws_daemon, ws, "sh", "-c", "ps -o pid,args; cat /proc/[0-9]*/environ | tr '\\0' '\\n'")
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    host_ps = (await ps.communicate())[0].decode()
    git_server.hold.set()
    code, out = await fetch
    assert code == 0, out
    assert "git" in inside and "fetch" in inside  # the processes were there to be seen
    assert token not in inside
    assert token not in host_ps

    (container,) = docker_client.containers.list(filters={"label": f"vm-agent.workspace={ws}"})
    assert token not in json.dumps(container.attrs)
    assert token not in json.dumps(docker_client.images.get(container.image.id).attrs)
    _, config = await exec_in(ws_daemon, ws, "sh", "-c", "git config --list --show-origin; cat .git/config")
    assert token not in config and git_server.url in config
    assert token not in container.logs().decode()
    db = (ws_daemon.settings.state_path / "vm-agent.db").read_bytes()
    assert token.encode() not in db

    creds = ws_daemon.settings.state_path / "workspaces" / ws / "git" / "credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    logs = daemon_logs()
    assert any(e["message"] == "workspace_creating" for e in logs)  # the check sees the daemon's log
    assert token not in json.dumps(logs)


async def test_a_new_token_replaces_the_old_one(ws_daemon, git_server: GitServer, ws_id):
    ws = ws_id("rotate")
    body = {"workspaceId": ws, "repository": git_server.url, "gitToken": git_server.token}
    await _post(ws_daemon, "/workspaces", body)
    assert (await wait_status(ws_daemon, ws)).status == "running"
    status, _ = await _post(ws_daemon, "/workspaces", {**body, "gitToken": "revoked-token"})
    assert status == 200  # a different token is a rotation, not a conflict
    code, out = await exec_in(ws_daemon, ws, "git", "fetch", "origin")
    assert code != 0 and "revoked-token" not in out  # the server refuses the new (wrong) token
    await _post(ws_daemon, "/workspaces", body)
    code, out = await exec_in(ws_daemon, ws, "git", "fetch", "origin")
    assert code == 0, out


async def test_secret_env_reaches_the_process_through_a_private_file(ws_daemon, ws_id):
    ws = ws_id("env")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    placement = await ws_daemon.app[appkeys.WORKSPACES].placement(ws)
    assert isinstance(placement, ContainerPlacement)
    command = placement.wrap(["sh", "-c", "echo $PLAIN $API_KEY; pwd"], tty=False,
                             env={"PLAIN": "visible"}, secret_env={"API_KEY": "sk-very-secret"})
    assert not any("sk-very-secret" in arg for arg in command.argv)
    assert "PLAIN=visible" in command.argv
    (env_file,) = command.cleanup_paths
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
    assert os.statvfs(env_file).f_bfree >= 0 and _on_tmpfs(env_file)
    proc = await asyncio.create_subprocess_exec(*command.argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    for path in command.cleanup_paths:
        os.unlink(path)
    assert out.decode().split() == ["visible", "sk-very-secret", "/workspaces"]


def _on_tmpfs(path: str) -> bool:
    best = ("", "")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, fstype, *_ = line.split()
            if path.startswith(point.rstrip("/") + "/") and len(point) > len(best[0]):
                best = (point, fstype)
    return best[1] == "tmpfs"
