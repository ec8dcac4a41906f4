"""`vmagent workspaces ...` against a real Docker daemon: what an operator types and sees."""

from __future__ import annotations

import json

import pytest

from tests.client.conftest import cli_env, run_cli
from tests.workspaces.conftest import wait_status

pytestmark = pytest.mark.docker


async def test_workspace_lifecycle_from_the_command_line(ws_daemon, ws_id, docker_client):
    ws = ws_id("cli")
    env = {**cli_env(ws_daemon), "VMAGENT_TOKEN": ws_daemon.token("management", workspace=None)}

    created = await run_cli("workspaces", "create", ws, "--json", env=env)
    assert created.code == 0, created.err
    assert json.loads(created.out)["status"] == "creating"
    assert (await wait_status(ws_daemon, ws)).status == "running"

    listed = await run_cli("workspaces", "list", env=env)
    assert listed.code == 0
    assert any(line.split()[:2] == [ws, "running"] for line in listed.out.splitlines()), listed.out

    stopped = await run_cli("workspaces", "stop", ws, env=env)
    assert (stopped.code, stopped.out.strip()) == (0, f"{ws}: stopped")
    restarted = await run_cli("workspaces", "restart", ws, "--json", env=env)
    assert restarted.code == 0 and json.loads(restarted.out)["status"] == "running"

    tabs = await run_cli("workspaces", "tabs", ws, "--json", env=env)
    assert tabs.code == 0 and json.loads(tabs.out) == {"tabs": []}

    deleted = await run_cli("workspaces", "delete", ws, env=env)
    assert deleted.code == 0, deleted.err
    assert docker_client.containers.list(all=True, filters={"label": f"vm-agent.workspace={ws}"}) == []
    again = await run_cli("workspaces", "stop", ws, env=env)
    assert again.code == 1
    assert again.err.startswith("vmagent: ") and len(again.err.strip().splitlines()) == 1
