"""Faults from outside: an agent SIGKILLed at random points of a prompt, and a JWKS server that
flaps, answers garbage and rotates keys while clients keep calling.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agents.conftest import FAKE_AGENT
from tests.conftest import TEST_NODE_ID
from tests.fakes.control_plane import FakeControlPlane, SigningKey
from tests.stress.conftest import PROFILE, descendants, record

pytestmark = pytest.mark.stress

PROMPT_DEADLINE = 30.0


def fake_agents(tmp_path: Path) -> set[int]:
    return {pid for pid in descendants() if str(FAKE_AGENT) in _cmdline(pid)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def completion(ws: aiohttp.ClientWebSocketResponse, request_id: str) -> dict[str, Any]:
    """The one prompt result (or error) for `request_id`; raises TimeoutError if it never comes."""
    async with asyncio.timeout(PROMPT_DEADLINE):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"viewer socket ended: {msg.type}"
            message = json.loads(msg.data)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message


async def test_agent_sigkilled_at_random_points_always_completes_the_prompt(make_daemon, tmp_path):
    state = tmp_path / "fake-state"
    state.mkdir()
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps({"agents": {"fake": {"command": [sys.executable, str(FAKE_AGENT)],
                                                      "env": {"FAKE_ACP_STATE": str(state)}}}}))
    daemon = await make_daemon(AGENTS_CONFIG=str(agents), HOST_WORKSPACE_DIR=str(tmp_path),
                               ACP_STOP_GRACE_PERIOD="0.5s")
    mgmt = {"Authorization": f"Bearer {daemon.token('management', workspace='host')}"}
    base = f"{daemon.url}/workspaces/host/agent-sessions"
    rng = random.Random(int(os.environ.get("VM_AGENT_STRESS_SEED", "7")))
    outcomes: Counter[str] = Counter()
    waits: list[float] = []
    async with daemon.client() as http:
        for round_ in range(PROFILE.kill_rounds):
            sid = f"kill-{round_}"
            async with http.post(base, json={"sessionId": sid, "agentType": "fake"}, headers=mgmt) as response:
                assert response.status == 201
            ws = await http.ws_connect(f"{daemon.ws_url}/agent/ws", params={"token": daemon.token(), "sessionId": sid})
            before = fake_agents(tmp_path)
            text = rng.choice(["chunks 20000", "sleep 3", "chunks 2000"])
            await ws.send_json({"jsonrpc": "2.0", "id": "p1", "method": "session/prompt",
                                "params": {"prompt": [{"type": "text", "text": text}]}})
            # where to strike: while the agent starts, mid-stream, or at a random moment after it appeared
            point = ("starting", "streaming", "random")[round_ % 3]
            victim = None
            async with asyncio.timeout(15):
                while victim is None:
                    fresh = fake_agents(tmp_path) - before
                    victim = min(fresh) if fresh else None
                    await asyncio.sleep(0.002)
            early: list[dict[str, Any]] = []
            if point == "streaming":  # the first update of the prompt has reached the viewer
                async with asyncio.timeout(15):
                    while not any(m.get("method") == "session/update" for m in early):
                        early.append(json.loads((await ws.receive()).data))
                await asyncio.sleep(rng.uniform(0, 0.2))
            elif point == "random":
                await asyncio.sleep(rng.uniform(0, 0.8))
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            outcome_prefix = f"{point}: "
            if any(m.get("id") == "p1" and ("result" in m or "error" in m) for m in early):
                raise AssertionError("the prompt ended before the kill; pick a longer prompt")
            done = await completion(ws, "p1")
            waits.append(time.monotonic() - killed_at)
            outcome = outcome_prefix + (done["result"]["stopReason"] if "result" in done
                                        else f"error: {done['error']['message'][:50]}")
            outcomes[outcome] += 1
            # the session is usable afterwards: prompts complete, and the agent runs them again.
            # A prompt that races the death of an idle agent may itself end `recovered`.
            for attempt in (2, 3):
                await ws.send_json({"jsonrpc": "2.0", "id": f"p{attempt}", "method": "session/prompt",
                                    "params": {"prompt": [{"type": "text", "text": "echo alive"}]}})
                after = await completion(ws, f"p{attempt}")
                if after.get("result", {}).get("stopReason") == "end_turn":
                    break
                outcomes[f"next prompt {after.get('result', after.get('error'))}"] += 1
            assert after.get("result", {}).get("stopReason") == "end_turn", after
            await ws.close()
        async with http.get(base, headers=mgmt) as response:
            sessions = (await response.json())["sessions"]
    record(f"agent SIGKILL: {PROFILE.kill_rounds} rounds, outcomes", dict(outcomes).__repr__(), "",
           "each recovered/ended/failed cleanly")
    record("agent SIGKILL: slowest completion after the kill", round(max(waits), 2), "s", f"< {PROMPT_DEADLINE:g}")
    assert all(s["status"] in ("ready", "idle") for s in sessions), [s["status"] for s in sessions]
    assert sum(v for k, v in outcomes.items() if not k.startswith("next")) == PROFILE.kill_rounds
    ends = ("error: ", "end_turn", "recovered", "cancelled")
    assert all(k.startswith("next") or k.split(": ", 1)[1].startswith(ends) for k in outcomes), outcomes


def management_claims(issuer: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "sub": "ops", "aud": "node-management", "node": TEST_NODE_ID,
            "iat": now, "exp": now + 600, **extra}


async def test_flapping_jwks_server_never_fails_a_valid_token(make_daemon):
    plane = await FakeControlPlane(keys=[SigningKey.rsa("k1")]).start()
    try:
        daemon = await make_daemon(JWKS_ENDPOINT=f"{plane.url}/.well-known/jwks.json", JWT_ISSUER=plane.url,
                                   JWKS_REFRESH_INTERVAL="0.1s", JWKS_REFETCH_COOLDOWN="0.2s",
                                   JWKS_FETCH_TIMEOUT="1s")
        old_token = plane.keys[0].sign(management_claims(plane.url))
        statuses: Counter[int] = Counter()
        rotated_ok = 0
        new_key = SigningKey.ec("k2")
        stop = asyncio.Event()

        async def flap() -> None:
            rng = random.Random(3)
            while not stop.is_set():
                plane.jwks_status = rng.choice([200, 500, 503, 404, 200])
                await asyncio.sleep(rng.uniform(0.02, 0.2))
            plane.jwks_status = 200

        flapper = asyncio.create_task(flap())
        deadline = time.monotonic() + PROFILE.jwks_flap_seconds
        async with daemon.client() as http:
            half = False
            while time.monotonic() < deadline:
                async with http.get(f"{daemon.url}/system-info",
                                    headers={"Authorization": f"Bearer {old_token}"}) as response:
                    statuses[response.status] += 1
                if not half and time.monotonic() > deadline - PROFILE.jwks_flap_seconds / 2:
                    half = True
                    plane.keys.append(new_key)  # rotation while the server flaps
                if half:
                    token = new_key.sign(management_claims(plane.url))
                    async with http.get(f"{daemon.url}/auth/whoami",
                                        headers={"Authorization": f"Bearer {token}"}) as response:
                        rotated_ok += response.status == 200
                        assert response.status in (200, 401), await response.text()
            stop.set()
            await flapper
            token = new_key.sign(management_claims(plane.url))
            async with asyncio.timeout(10):  # once the server is steady the new key is learnt
                while True:
                    async with http.get(f"{daemon.url}/auth/whoami",
                                        headers={"Authorization": f"Bearer {token}"}) as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.25)
            async with http.get(f"{daemon.url}/health") as response:
                health = await response.json()
    finally:
        await plane.stop()
    record("JWKS flapping: requests with the old key", sum(statuses.values()), "", "all 200")
    record("JWKS flapping: JWKS fetches during the run", plane.jwks_fetches, "", "")
    record("JWKS flapping: new-key requests accepted mid-flap", rotated_ok, "", "")
    assert dict(statuses) == {200: sum(statuses.values())}, statuses
    assert health["checks"]["jwks"]["status"] == "ok"
