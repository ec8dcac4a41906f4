"""Terminals and agents of a workspace run inside its container, in the clone."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.agents.conftest import Viewer, chunk_texts, is_result
from tests.images.build import FAKE_AGENT_IN_IMAGE, ensure_python_image
from tests.workspaces.conftest import GitServer, wait_status
from tests.workspaces.test_lifecycle import _post

pytestmark = pytest.mark.docker
WAIT = 20.0


async def _until(ws: Any, predicate: Any, timeout: float = WAIT) -> list[dict[str, Any]]:
    """Read frames until `predicate(frame)`; returns everything read."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads((await ws.receive()).data)
            seen.append(frame)
            if predicate(frame):
                return seen


async def _until_output(sock: Any, needle: str, timeout: float = WAIT) -> str:
    """Read until the terminal's output so far (frames may split it anywhere) contains needle."""
    text = ""
    async with asyncio.timeout(timeout):
        while needle not in text:
            frame = json.loads((await sock.receive()).data)
            if frame["type"] == "output":
                text += frame["data"]["data"]
    return text


async def test_terminal_in_a_workspace_sees_the_clone_and_ends_with_delete(
    ws_daemon, git_server: GitServer, ws_id
):
    ws = ws_id("term")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                           "gitToken": git_server.token})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    async with ws_daemon.client() as client:
        url = f"{ws_daemon.ws_url}/terminal/ws/multi"
        async with client.ws_connect(url, params={"token": ws_daemon.token("user", ws)}) as sock:
            await sock.send_json({"type": "create_session", "data": {"sessionId": "s1", "rows": 24, "cols": 80}})
            created = (await _until(sock, lambda f: f["type"] in ("session_created", "error")))[-1]
            assert created["type"] == "session_created", created
            assert created["data"]["workingDirectory"] == "/workspaces/repo"
            # A web terminal fits itself to the page right away, while the docker CLI is still
            # starting: the size must reach the container all the same.
            await sock.send_json({"type": "resize", "sessionId": "s1", "data": {"rows": 33, "cols": 101}})
            await sock.send_json({"type": "input", "sessionId": "s1",
                                  "data": {"data": "cat hello.txt; echo marker-$((40+2))\n"}})
            output = await _until_output(sock, "marker-42")
            assert "hello from the repository" in output
            # And a resize just as the output starts flowing, before the CLI listens for them.
            await sock.send_json({"type": "resize", "sessionId": "s1", "data": {"rows": 40, "cols": 120}})
            # The new size reaches the container's TTY asynchronously (PTY -> SIGWINCH -> docker
            # CLI -> engine): ask again until it shows, as a user would.
            async with asyncio.timeout(WAIT):
                while True:
                    await sock.send_json({"type": "input", "sessionId": "s1", "data": {"data": "stty size\n"}})
                    try:
                        await _until_output(sock, "40 120", timeout=2)
                        break
                    except TimeoutError:
                        continue

            status, _ = await _post(ws_daemon, f"/workspaces/{ws}", method="DELETE", ws=ws)
            assert status == 200
            closed = await _until(sock, lambda f: f["type"] == "session_closed")
            assert closed[-1]["data"]["sessionId"] == "s1"


@pytest.fixture
async def agent_ws_daemon(make_daemon, docker_client, test_image, tmp_path, tmp_path_factory):
    """A daemon whose workspaces have Python and the fake ACP agent, registered as `fake`."""
    image = ensure_python_image(docker_client, tmp_path_factory.mktemp("pyimage"), test_image)
    config = tmp_path / "agents.json"
    config.write_text(json.dumps({"agents": {"fake": {"command": ["python3", FAKE_AGENT_IN_IMAGE]}}}))
    return await make_daemon(WORKSPACE_IMAGE=image, AGENTS_CONFIG=str(config), ACP_STOP_GRACE_PERIOD="0.5s")


async def test_agent_in_a_workspace_runs_in_the_container_in_the_clone(
    agent_ws_daemon, git_server: GitServer, docker_client, ws_id
):
    daemon = agent_ws_daemon
    ws = ws_id("agent")
    await _post(daemon, "/workspaces", {"workspaceId": ws, "repository": git_server.url,
                                        "gitToken": git_server.token})
    assert (await wait_status(daemon, ws)).status == "running"
    status, session = await _post(daemon, f"/workspaces/{ws}/agent-sessions",
                                  {"sessionId": "a1", "agentType": "fake"}, ws=ws)
    assert status == 201, session
    viewer = await Viewer.connect(daemon, "a1", workspace=ws)
    try:
        await viewer.until(lambda m: m.get("type") == "session_replay_complete")
        await viewer.prompt("echo hello from the container", request_id="p1")
        done = await viewer.until(is_result("p1"))
    finally:
        await viewer.close()
    assert done["result"]["stopReason"] == "end_turn"
    assert "".join(chunk_texts(viewer.messages)) == "hello from the container"

    find_agent = (
        "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline)\" in"
        f" 'python3 {FAKE_AGENT_IN_IMAGE}'*) readlink $p/cwd;; esac; done"
    )
    (container,) = docker_client.containers.list(filters={"label": f"vm-agent.workspace={ws}"})
    _code, out = container.exec_run(["sh", "-c", find_agent])
    assert out.decode().split() == ["/workspaces/repo"]

    status, _ = await _post(daemon, f"/workspaces/{ws}", method="DELETE", ws=ws)
    assert status == 200
    status, body = await _post(daemon, f"/workspaces/{ws}/agent-sessions", method="GET", ws=ws)
    assert status != 200 or body["sessions"] == []


async def _processes(container) -> list[str]:
    _, out = await asyncio.to_thread(container.exec_run, ["ps", "-o", "args"])
    return [line for line in out.decode().splitlines()[1:] if not line.startswith("ps ")]


async def _until_processes(container, predicate: Any, timeout: float = WAIT) -> list[str]:
    """Wait (looking every 100 ms: a container's process table has no change event) for
    `predicate(process lines)`."""
    async with asyncio.timeout(timeout):
        while True:
            procs = await _processes(container)
            if predicate(procs):
                return procs
            await asyncio.sleep(0.1)


async def _until_gone(container, needle: str) -> list[str]:
    return await _until_processes(container, lambda procs: not any(needle in p for p in procs))


async def test_closed_terminal_leaves_no_process_in_the_container(ws_daemon, docker_client, ws_id):
    ws = ws_id("reap")
    await _post(ws_daemon, "/workspaces", {"workspaceId": ws})
    assert (await wait_status(ws_daemon, ws)).status == "running"
    (container,) = docker_client.containers.list(filters={"label": f"vm-agent.workspace={ws}"})
    async with ws_daemon.client() as client:
        url = f"{ws_daemon.ws_url}/terminal/ws/multi"
        async with client.ws_connect(url, params={"token": ws_daemon.token("user", ws)}) as sock:
            await sock.send_json({"type": "create_session", "data": {"sessionId": "s1", "rows": 24, "cols": 80}})
            await _until(sock, lambda f: f["type"] == "session_created")
            await sock.send_json({"type": "input", "sessionId": "s1",
                                  "data": {"data": "sleep 1234 & sleep 4321; echo done\n"}})
            await _until_output(sock, "4321")
            await _until_processes(container, lambda procs: any("sleep 4321" in p for p in procs))
            await sock.send_json({"type": "close_session", "data": {"sessionId": "s1"}})
            await _until(sock, lambda f: f["type"] == "session_closed")
    # The shell, its foreground job and its background job all end (nothing left to reap later).
    for needle in ("sleep 4321", "sleep 1234", "/bin/sh -l"):
        await _until_gone(container, needle)
