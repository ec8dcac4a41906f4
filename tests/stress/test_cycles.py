"""Reconnect churn: terminal reattach and agent-viewer attach/detach, many times over, leave no
file descriptors, tasks, child processes or memory behind.

Bounds (after a warm-up, so caches and lazily created objects are already there):
fds +8, asyncio tasks +5, child processes +0, RSS +32 MiB. The daemon runs in this process, so
the figures include the test's own clients; a leak of one fd or task per cycle would exceed
the bounds by two orders of magnitude at 1,000 cycles.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from typing import Any

import aiohttp
import pytest

from tests.agents.conftest import FAKE_AGENT
from tests.stress.conftest import PROFILE, descendants, fd_count, plain_shell, record, rss_bytes

pytestmark = pytest.mark.stress

FD_BOUND, TASK_BOUND, RSS_BOUND = 8, 5, 32 * 1024 * 1024
WARMUP = 20


def snapshot() -> dict[str, int]:
    gc.collect()
    return {"fds": fd_count(), "tasks": len(asyncio.all_tasks()), "children": len(descendants()),
            "rss": rss_bytes()}


def check_growth(label: str, before: dict[str, int], after: dict[str, int], cycles: int) -> None:
    growth = {key: after[key] - before[key] for key in before}
    record(f"{label}: {cycles} cycles, fd growth", growth["fds"], "", f"<= {FD_BOUND}")
    record(f"{label}: task growth", growth["tasks"], "", f"<= {TASK_BOUND}")
    record(f"{label}: child process growth", growth["children"], "", "0")
    record(f"{label}: RSS growth", round(growth["rss"] / 2**20, 1), "MiB", f"<= {RSS_BOUND // 2**20}")
    assert growth["fds"] <= FD_BOUND, growth
    assert growth["tasks"] <= TASK_BOUND, growth
    assert growth["children"] <= 0, growth
    assert growth["rss"] <= RSS_BOUND, growth


async def recv_until(ws: aiohttp.ClientWebSocketResponse, predicate: Any, timeout: float = 15) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg.type} {msg.data!r}"
            message = json.loads(msg.data)
            if predicate(message):
                return message


async def test_terminal_reconnect_cycles_leak_nothing(make_daemon, tmp_path):
    daemon = await make_daemon(DEFAULT_SHELL=plain_shell(tmp_path), HOST_WORKSPACE_DIR=str(tmp_path))
    url, params = f"{daemon.ws_url}/terminal/ws/multi", {"token": daemon.token()}
    offset = 0
    async with daemon.client() as http:
        ws = await http.ws_connect(url, params=params)
        await ws.send_json({"type": "create_session", "data": {"sessionId": "churn", "rows": 24, "cols": 80}})
        await recv_until(ws, lambda m: m["type"] == "session_created")
        await ws.close()

        async def cycle(i: int) -> None:
            nonlocal offset
            ws = await http.ws_connect(url, params=params)
            await ws.send_json({"type": "reattach_session",
                                "data": {"sessionId": "churn", "rows": 24, "cols": 80, "offset": offset}})
            scrollback = await recv_until(ws, lambda m: m["type"] == "scrollback")
            offset = scrollback["data"]["next"]
            if i % 10 == 0:  # keep the program producing output between reconnects
                await ws.send_json({"type": "input", "sessionId": "churn", "data": {"data": f"echo c{i}x\r"}})
                done = await recv_until(ws, lambda m: m["type"] == "output" and f"c{i}x\r\n" in m["data"]["data"])
                offset = done["data"]["next"]
            await ws.close()

        for i in range(WARMUP):
            await cycle(i)
        before = snapshot()
        started = asyncio.get_running_loop().time()
        for i in range(PROFILE.terminal_cycles):
            await cycle(i)
        elapsed = asyncio.get_running_loop().time() - started
        after = snapshot()
    record("terminal reconnect: mean cycle", round(elapsed / PROFILE.terminal_cycles * 1000, 2), "ms", "")
    check_growth("terminal reconnect", before, after, PROFILE.terminal_cycles)
    assert daemon.app  # the daemon is still serving
    assert offset > 0


async def test_agent_viewer_attach_detach_cycles_leak_nothing(make_daemon, tmp_path):
    state = tmp_path / "fake-state"
    state.mkdir()
    agents = tmp_path / "agents.json"
    agents.write_text(json.dumps({"agents": {"fake": {"command": [sys.executable, str(FAKE_AGENT)],
                                                      "env": {"FAKE_ACP_STATE": str(state)}}}}))
    daemon = await make_daemon(AGENTS_CONFIG=str(agents), HOST_WORKSPACE_DIR=str(tmp_path))
    base = f"{daemon.url}/workspaces/host/agent-sessions"
    headers = {"Authorization": f"Bearer {daemon.token('management', workspace='host')}"}
    params = {"token": daemon.token(), "sessionId": "churn"}
    async with daemon.client() as http:
        async with http.post(base, json={"sessionId": "churn", "agentType": "fake"}, headers=headers) as response:
            assert response.status == 201
        ws = await http.ws_connect(f"{daemon.ws_url}/agent/ws", params=params)
        await recv_until(ws, lambda m: m.get("type") == "session_replay_complete")
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "session/prompt",
                            "params": {"prompt": [{"type": "text", "text": "chunks 200"}]}})
        await recv_until(ws, lambda m: m.get("id") == 1 and "result" in m)
        await ws.close()

        async def cycle() -> int:
            ws = await http.ws_connect(f"{daemon.ws_url}/agent/ws", params=params)
            state_msg = await recv_until(ws, lambda m: m.get("type") == "session_state")
            await recv_until(ws, lambda m: m.get("type") == "session_replay_complete")
            await ws.close()
            return int(state_msg.get("replayCount", 0))

        for _ in range(WARMUP):
            await cycle()
        before = snapshot()
        started = asyncio.get_running_loop().time()
        replayed = [await cycle() for _ in range(PROFILE.viewer_cycles)]
        elapsed = asyncio.get_running_loop().time() - started
        after = snapshot()
        async with http.get(base, headers=headers) as response:
            sessions = (await response.json())["sessions"]
    record("agent viewer attach/detach: mean cycle (200-chunk replay)",
           round(elapsed / PROFILE.viewer_cycles * 1000, 2), "ms", "")
    check_growth("agent viewer attach/detach", before, after, PROFILE.viewer_cycles)
    assert min(replayed) >= 200, "every attach replays the whole history"
    assert [s["viewerCount"] for s in sessions] == [0], "every detach was counted"
