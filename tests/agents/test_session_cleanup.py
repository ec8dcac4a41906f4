"""Sessions go away: deleted over HTTP (and stay gone, though a viewer tries to reconnect), or,
never used and unwatched, to make room at ACP_MAX_SESSIONS. Otherwise page loads pile up
persisted sessions until the cap refuses every new one, even across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agents.conftest import agent_pids, is_result, pid_alive, until
from tests.agents.test_agent_ws import create_session
from tests.agents.test_http import BASE, call


async def listed(daemon: Any) -> dict[str, dict[str, Any]]:
    _, listing = await call(daemon, "GET", BASE, kind="user")
    return {s["id"]: s for s in listing["sessions"]}


async def test_delete_stops_the_agent_and_removes_the_session_its_tab_and_its_stored_state(
        make_daemon, agent_env, viewers, tmp_path: Path):
    daemon = await make_daemon(**agent_env)
    await create_session(daemon, "doomed", label="Doomed")
    await create_session(daemon, "kept")
    v = await viewers(daemon, "doomed")
    await v.prompt("echo bye", request_id="b")
    await v.until(is_result("b"))
    (pid,) = agent_pids(tmp_path)

    status, body = await call(daemon, "DELETE", f"{BASE}/doomed", kind="user")
    assert status == 403
    status, body = await call(daemon, "DELETE", f"{BASE}/doomed")
    assert status == 200 and body == {"success": True}
    assert not pid_alive(pid)
    closing = await v.ws.receive(timeout=10)
    while closing.type == aiohttp.WSMsgType.TEXT:  # what was on its way, then the close
        closing = await v.ws.receive(timeout=10)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4404  # not "going away"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a viewer reconnecting to it
        await viewers(daemon, "doomed")
    assert refused.value.status == 404
    assert list(await listed(daemon)) == ["kept"]
    _, tabs = await call(daemon, "GET", "/workspaces/host/tabs", kind="user")
    assert [t["id"] for t in tabs["tabs"]] == ["kept"]
    status, body = await call(daemon, "DELETE", f"{BASE}/doomed")
    assert status == 404 and body["error"] == "session_not_found"

    await daemon.restart()
    assert list(await listed(daemon)) == ["kept"]
    status, _ = await call(daemon, "POST", BASE, {"sessionId": "doomed", "agentType": "fake"})
    assert status == 201


async def test_unused_sessions_make_room_at_the_cap_and_used_ones_stay(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_MAX_SESSIONS="2")
    # one that was used is kept when its viewer leaves
    v = await viewers(daemon, agentType="fake")
    used = (await v.next())["sessionId"]
    await v.prompt("echo keep me", request_id="k")
    await v.until(is_result("k"))
    await v.close()
    await until(lambda: left_alone(daemon, used))

    # a new chat whose socket dropped before its first prompt is still there, with its type
    w = await viewers(daemon, agentType="fake-steer")
    fresh = (await w.next())["sessionId"]
    await w.close()
    await until(lambda: left_alone(daemon, fresh))
    again = await viewers(daemon, fresh)
    assert (await again.next())["agentType"] == "fake-steer"
    await again.close()
    await until(lambda: left_alone(daemon, fresh))

    for _ in range(5):  # page loads and made-up ids, more than the cap: each makes room
        page = await viewers(daemon, agentType="fake")
        assert (await page.next())["type"] == "session_state"
        await page.close()
    named = await viewers(daemon, "made-up-id")
    assert (await named.next())["sessionId"] == "made-up-id"
    assert used in await listed(daemon) and len(await listed(daemon)) == 2


async def no_sessions(daemon: Any) -> bool:
    return not await listed(daemon)


async def left_alone(daemon: Any, session_id: str) -> bool:
    session = (await listed(daemon)).get(session_id)
    assert session is not None, f"{session_id} was removed"
    return session["viewerCount"] == 0
