"""When things go wrong: a bad image, a failed clone, a dead container, Docker gone."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.workspaces.conftest import GitServer, exec_in, wait_status
from tests.workspaces.test_lifecycle import _post, _resources
from vm_agent import appkeys
from vm_agent.errors import ServiceUnavailable

pytestmark = pytest.mark.docker


async def _listed(daemon, ws: str) -> dict:
    async with daemon.client() as client:
        async with client.get(daemon.url + "/workspaces", headers=daemon.auth_headers()) as resp:
            assert resp.status == 200
            return {w["id"]: w for w in (await resp.json())["workspaces"]}[ws]


async def test_missing_image_is_an_error_and_leaves_nothing(ws_daemon, docker_client, ws_id, daemon_logs):
    ws = ws_id("noimg")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "image": "vm-agent-test-missing:nope"})
    assert (await wait_status(ws_daemon, ws)).status == "error"
    listed = await _listed(ws_daemon, ws)
    assert listed["status"] == "error" and "vm-agent-test-missing:nope" in listed["errorMessage"]
    assert _resources(docker_client, ws) == ([], [])
    (failed,) = [e for e in daemon_logs() if e["message"] == "workspace_failed"]
    assert failed["level"] == "error"
    assert failed["fields"]["workspace_id"] == ws and failed["fields"]["operation"] == "create"
    assert "vm-agent-test-missing:nope" in failed["fields"]["error"]


async def test_failed_clone_is_an_error_and_leaves_nothing(ws_daemon, git_server: GitServer, docker_client, ws_id):
    ws = ws_id("noclone")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                           "gitToken": "wrong-token"})
    assert (await wait_status(ws_daemon, ws)).status == "error"
    listed = await _listed(ws_daemon, ws)
    assert "git clone" in listed["errorMessage"] and "wrong-token" not in listed["errorMessage"]
    assert _resources(docker_client, ws) == ([], [])
    # Same parameters again: idempotent, still the error (fix it with a rebuild or a delete).
    status, body = await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url})
    assert (status, body["status"]) == (200, "error")
    status, _ = await _post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws)
    assert status == 200


async def test_missing_branch_fails_the_clone(ws_daemon, git_server: GitServer, ws_id):
    ws = ws_id("nobranch")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                           "branch": "nope", "gitToken": git_server.token})
    settled = await wait_status(ws_daemon, ws)
    assert settled.status == "error" and "nope" in settled.error


async def test_a_container_that_exits_turns_the_workspace_to_error(ws_daemon, docker_client, ws_id):
    ws = ws_id("dies")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    (container,), _ = _resources(docker_client, ws)
    container.kill()
    listed = await _listed(ws_daemon, ws)
    assert listed["status"] == "error" and "exited with code 137" in listed["errorMessage"]
    status, _ = await _post(ws_daemon, f"/workspaces/{ws}/rebuild", ws=ws)
    assert status == 202
    assert (await wait_status(ws_daemon, ws)).status == "running"


async def test_docker_down_gives_503_and_degraded_health_while_host_works(make_daemon, ws_id):
    daemon = await make_daemon(DOCKER_HOST="tcp://127.0.0.1:1")
    status, body = await _post(daemon, "/workspaces", {"workspaceId": ws_id()})
    assert (status, body["error"]) == (503, "docker_unavailable")
    async with daemon.client() as client:
        async with client.get(daemon.url + "/workspaces", headers=daemon.auth_headers()) as resp:
            assert resp.status == 503 and (await resp.json())["error"] == "docker_unavailable"
        async with client.get(daemon.url + "/health") as resp:
            health = await resp.json()
        async with client.get(daemon.url + "/workspaces/host/tabs", headers=daemon.auth_headers("user")) as resp:
            assert resp.status == 200
    assert health["status"] == "degraded"
    assert health["checks"]["docker"]["status"] == "error"
    assert health["checks"]["store"]["status"] == "ok"
    host = await daemon.app[appkeys.WORKSPACES].placement("host")
    assert host.wrap(["true"], tty=False).argv == ["true"]


async def test_restarted_daemon_adopts_its_workspaces(make_daemon, test_image, docker_client, ws_id):
    daemon = await make_daemon(WORKSPACE_IMAGE=test_image)
    running, stopped = ws_id("up"), ws_id("down")
    for ws in (running, stopped):
        await _post(daemon, "/workspaces", {"workspaceId": ws})
        assert (await wait_status(daemon, ws)).status == "running"
    await _post(daemon, f"/workspaces/{stopped}/stop", ws=stopped)
    await exec_in(daemon, running, "sh", "-c", "echo still here > /workspaces/f")
    (before,), _ = _resources(docker_client, running)

    await daemon.restart()
    assert (await _listed(daemon, running))["status"] == "running"
    assert (await _listed(daemon, stopped))["status"] == "stopped"
    (after,), _ = _resources(docker_client, running)
    assert after.id == before.id  # adopted, not recreated or duplicated
    _code, out = await exec_in(daemon, running, "cat", "/workspaces/f")
    assert out.strip() == "still here"
    status, _ = await _post(daemon, f"/workspaces/{stopped}/restart", ws=stopped)
    assert status == 200


async def test_another_daemon_does_not_adopt_foreign_workspaces(make_daemon, test_image, ws_id):
    first = await make_daemon(WORKSPACE_IMAGE=test_image)
    ws = ws_id("mine")
    await _post(first, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(first, ws)).status == "running"
    second = await make_daemon(WORKSPACE_IMAGE=test_image)
    async with second.client() as client:
        async with client.get(second.url + "/workspaces", headers=second.auth_headers()) as resp:
            assert ws not in {w["id"] for w in (await resp.json())["workspaces"]}


async def test_system_info_reports_docker(ws_daemon, ws_id):
    ws = ws_id("info")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    async with ws_daemon.client() as client:
        async with client.get(ws_daemon.url + "/system-info", headers=ws_daemon.auth_headers()) as resp:
            docker_info = (await resp.json())["docker"]
    assert docker_info["containers"] == 1 and docker_info["version"]


class DockerSocketProxy:
    """A unix socket forwarding to the real Docker socket, which the test can cut and restore."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()
        os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        for w in (writer, up_writer):
            self.writers.discard(w)
            w.close()


@pytest.mark.skipif(not os.path.exists("/var/run/docker.sock"), reason="Docker is not on /var/run/docker.sock")
async def test_docker_coming_back_is_picked_up_and_workspaces_adopted(make_daemon, test_image, ws_id, tmp_path):
    proxy = DockerSocketProxy(str(tmp_path / "docker.sock"))
    await proxy.start()
    daemon = await make_daemon(WORKSPACE_IMAGE=test_image, DOCKER_HOST=f"unix://{proxy.path}")
    ws = ws_id("back")
    await _post(daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(daemon, ws)).status == "running"

    await daemon.stop()
    await proxy.stop()
    await daemon.start()  # Docker is "down" while the daemon starts
    status, body = await _post(daemon, "/workspaces", {"workspaceId": ws})
    assert (status, body["error"]) == (503, "docker_unavailable")
    with pytest.raises(ServiceUnavailable):
        await daemon.app[appkeys.WORKSPACES].placement(ws)

    await proxy.start()  # Docker is back: no daemon restart needed
    try:
        assert (await _listed(daemon, ws))["status"] == "running"
        code, out = await exec_in(daemon, ws, "echo", "reachable")
        assert (code, out.strip()) == (0, "reachable")
    finally:
        await proxy.stop()
