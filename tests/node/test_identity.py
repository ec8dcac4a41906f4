"""After a snapshot restore or branch, a new identity file renames the node without dropping sessions."""

from __future__ import annotations

import asyncio
import json

from vm_agent import appkeys


async def health(daemon) -> dict:
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as response:
        return await response.json()


async def whoami_status(daemon, token: str) -> int:
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/auth/whoami", headers={"Authorization": f"Bearer {token}"}) as r:
            return r.status


async def test_identity_file_change_renames_the_node_live(make_daemon, tmp_path):
    state = tmp_path / "state"
    daemon = await make_daemon(VM_AGENT_STATE_DIR=str(state), IDENTITY_POLL_INTERVAL="50ms")
    assert (await health(daemon))["identity"]["source"] == "environment"
    old_token = daemon.token("management", workspace=None)
    new_token = daemon.token("management", workspace=None, node="branch-7")
    assert await whoami_status(daemon, old_token) == 200
    assert await whoami_status(daemon, new_token) == 403

    async with daemon.client() as http:
        stream = await http.ws_connect(f"{daemon.ws_url}/logs/stream", headers=daemon.auth_headers())
        identity = daemon.app[appkeys.IDENTITY]
        generation = identity.generation
        (state / "identity.json").write_text(json.dumps({"vmId": "branch-7", "labels": {"role": "worker"}}))
        async with asyncio.timeout(10):
            await identity.wait_for_generation(generation + 1)
        report = await health(daemon)
        assert report["nodeId"] == "branch-7"
        assert report["identity"]["labels"] == {"role": "worker"}
        assert await whoami_status(daemon, new_token) == 200
        assert await whoami_status(daemon, old_token) == 403
        assert not stream.closed  # existing sessions survive the rename
        await stream.close()


async def test_unreadable_identity_file_keeps_the_current_identity(make_daemon, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "identity.json").write_text("{not json")
    daemon = await make_daemon(VM_AGENT_STATE_DIR=str(state))
    report = await health(daemon)
    assert report["nodeId"] == "test-node"
    assert "identity.json" in report["identity"]["error"]
