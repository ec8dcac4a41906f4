"""A workspace's life as its owner sees it: create, use, stop, restart, rebuild, delete."""

from __future__ import annotations

import asyncio

import aiohttp
import docker
import pytest

from tests.workspaces.conftest import GitServer, exec_in, wait_status
from vm_agent import appkeys

pytestmark = pytest.mark.docker


async def _post(daemon, path: str, body: dict | None = None, method: str = "POST", ws: str | None = None):
    async with daemon.client() as client:
        async with client.request(method, daemon.url + path, json=body, headers=daemon.auth_headers(
            "management", workspace=ws)) as resp:
            return resp.status, await resp.json()


def _resources(client: docker.DockerClient, ws: str) -> tuple[list, list]:
    containers = client.containers.list(all=True, filters={"label": f"vm-agent.workspace={ws}"})
    volumes = client.volumes.list(filters={"label": f"vm-agent.workspace={ws}"})
    return containers, volumes


async def test_created_workspace_has_the_clone_and_delete_leaves_nothing(
    ws_daemon, git_server: GitServer, docker_client, ws_id
):
    ws = ws_id("life")
    status, body = await _post(ws_daemon, "/workspaces", {
        "workspaceId": ws, "repository": git_server.url, "branch": "feature",
        "gitToken": git_server.token, "gitUserName": "Ada Lovelace", "gitUserEmail": "ada@example.com",
    })
    assert (status, body) == (202, {"workspaceId": ws, "status": "creating"})
    settled = await wait_status(ws_daemon, ws)
    assert settled.status == "running", settled.error

    async with ws_daemon.client() as client:
        async with client.get(ws_daemon.url + "/workspaces", headers=ws_daemon.auth_headers()) as resp:
            listed = {w["id"]: w for w in (await resp.json())["workspaces"]}
    assert listed[ws]["status"] == "running"
    assert listed[ws]["repository"] == git_server.url and listed[ws]["branch"] == "feature"

    # What a terminal or agent in the workspace sees: the cloned branch, in its working directory.
    code, out = await exec_in(ws_daemon, ws, "sh", "-c", "pwd; cat feature.txt hello.txt; git config user.name")
    assert code == 0, out
    assert out.splitlines() == [
        "/workspaces/repo", "feature branch", "hello from the repository", "Ada Lovelace"
    ]

    await ws_daemon.app[appkeys.TABS].add(ws, "tab-1", "terminal", "shell")
    status, body = await _post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws)
    assert (status, body) == (200, {"success": True})
    assert _resources(docker_client, ws) == ([], [])
    assert await ws_daemon.app[appkeys.TABS].list(ws) == []
    status, body = await _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws)
    assert (status, body["error"]) == (404, "workspace_not_found")


async def test_same_create_is_idempotent_and_different_params_conflict(ws_daemon, docker_client, ws_id):
    ws = ws_id("idem")
    first = await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "env": {"A": "1"}})
    again = await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "env": {"A": "1"}})
    assert first[0] == 202
    assert again[0] == 200 and again[1]["workspaceId"] == ws
    status, body = await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "env": {"A": "2"}})
    assert (status, body["error"]) == (409, "workspace_conflict")
    assert (await wait_status(ws_daemon, ws)).status == "running"
    assert len(_resources(docker_client, ws)[0]) == 1
    assert (await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "env": {"A": "1"}}))[1]["status"] == "running"
    _code, out = await exec_in(ws_daemon, ws, "sh", "-c", "echo $A")
    assert out.strip() == "1"


@pytest.mark.parametrize("bad", ["", "a" * 65, "has space", "dot.dot", "../x", "host", 7, "trailing-newline\n"])
async def test_bad_workspace_ids_are_refused(ws_daemon, bad):
    status, body = await _post(ws_daemon, "/workspaces", {"workspaceId": bad})
    assert (status, body["error"]) == (400, "invalid_workspace_id")


async def test_bad_parameters_are_refused(ws_daemon, ws_id):
    for extra in (
        {"repository": "https://user:secret@example.com/r.git"},
        {"repository": "--upload-pack=touch /x"},
        {"branch": "--orphan"},
        {"env": {"BAD KEY": "x"}},
        {"env": ["A=1"]},
    ):
        status, body = await _post(ws_daemon, "/workspaces", {"workspaceId": ws_id(), **extra})
        assert status == 400, (extra, body)
        assert "secret" not in body["message"]


async def test_stop_and_restart_keep_files_and_rebuild_keeps_only_the_volume(ws_daemon, ws_id):
    ws = ws_id("keep")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    code, out = await exec_in(ws_daemon, ws, "sh", "-c", "echo kept > /workspaces/note; echo layer > /root/note")
    assert code == 0, out

    assert await _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws) == (200, {"workspaceId": ws, "status": "stopped"})
    status, body = await _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws)
    assert (status, body["error"]) == (409, "invalid_transition")
    async with ws_daemon.client() as client:  # no terminal can open in a stopped workspace
        url = f"{ws_daemon.ws_url}/terminal/ws/multi"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(url, params={"token": ws_daemon.token("user", ws)})
    assert refused.value.status == 409
    assert await _post(ws_daemon, f"/workspaces/{ws}/restart", ws=ws) == (200, {"workspaceId": ws, "status": "running"})
    code, out = await exec_in(ws_daemon, ws, "cat", "/workspaces/note", "/root/note")
    assert out.split() == ["kept", "layer"]

    status, body = await _post(ws_daemon, f"/workspaces/{ws}/rebuild", ws=ws)
    assert (status, body) == (202, {"workspaceId": ws, "status": "rebuilding"})
    racing = await _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws)
    assert (racing[0], racing[1]["error"]) == (409, "invalid_transition")
    assert (await wait_status(ws_daemon, ws)).status == "running"
    code, out = await exec_in(ws_daemon, ws, "sh", "-c", "cat /workspaces/note; ls /root")
    assert out.split() == ["kept"]  # the volume survived, the container's own layer did not


async def test_racing_requests_get_409_not_interleaved(ws_daemon, ws_id):
    ws = ws_id("race")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    early = await _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws)
    assert (early[0], early[1]["error"]) == (409, "invalid_transition")
    await wait_status(ws_daemon, ws)
    results = await asyncio.gather(
        _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws), _post(ws_daemon, f"/workspaces/{ws}/stop", ws=ws)
    )
    assert sorted(status for status, _ in results) == [200, 409]
    assert (await wait_status(ws_daemon, ws, "stopped")).status == "stopped"


async def test_resource_limits_come_from_settings(make_daemon, test_image, docker_client, ws_id):
    daemon = await make_daemon(
        WORKSPACE_IMAGE=test_image, WORKSPACE_CPU_LIMIT="0.5", WORKSPACE_MEMORY_LIMIT="64MiB",
        WORKSPACE_PIDS_LIMIT="64",
    )
    ws = ws_id("limits")
    await _post(daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(daemon, ws)).status == "running"
    (container,), _ = _resources(docker_client, ws)
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["PidsLimit"] == 64
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/workspaces"]["Type"] == "volume"


async def test_user_tokens_cannot_manage_but_can_read_tabs(ws_daemon, ws_id):
    ws = ws_id("auth")
    async with ws_daemon.client() as client:
        user = ws_daemon.auth_headers("user", workspace=ws)
        async with client.post(ws_daemon.url + "/workspaces", json={"workspaceId": ws}, headers=user) as resp:
            assert resp.status == 403
        other = ws_daemon.auth_headers("management", workspace="someone-else")
        async with client.post(ws_daemon.url + "/workspaces", json={"workspaceId": ws}, headers=other) as resp:
            assert resp.status == 403
        await ws_daemon.app[appkeys.TABS].add(ws, "chat-1", "chat", "agent")
        async with client.get(ws_daemon.url + f"/workspaces/{ws}/tabs", headers=user) as resp:
            assert resp.status == 200
            tabs = (await resp.json())["tabs"]
        assert [(t["id"], t["type"], t["workspaceId"]) for t in tabs] == [("chat-1", "chat", ws)]
        async with client.get(ws_daemon.url + "/workspaces/host/tabs", headers=user) as resp:
            assert resp.status == 403
