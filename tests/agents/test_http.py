"""`/workspaces/{ws}/agent-sessions`: control over HTTPS, the FIFO verbs (`rpc`) and SSE `events`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.agents.conftest import chunk_texts, is_result, until
from tests.stalled import open_stalled_websocket, stops_cleanly, until_send_queue_full
from vm_agent import wsutil
from vm_agent.logs import get_ring

BASE = "/workspaces/host/agent-sessions"


async def call(daemon: Any, method: str, path: str, body: Any = None, kind: str = "management",
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with daemon.client() as client:
        resp = await client.request(method, f"{daemon.url}{path}", json=body,
                                    headers={**daemon.auth_headers(kind, "host"), **(headers or {})})
        return resp.status, await resp.json()


async def read_sse(resp: aiohttp.ClientResponse, until: Any, timeout: float = 15) -> list[dict[str, Any]]:
    """Parse Server-Sent Events until `until(event)`; each event is {"id": ..., "data": {...}}."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                    if until(current):
                        return events
                current = {}
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return events


async def test_create_list_and_idempotency(agent_daemon):
    status, body = await call(agent_daemon, "POST", BASE, {"sessionId": "s1", "label": "Chat", "agentType": "fake"},
                              headers={"Idempotency-Key": "k1"})
    assert status == 201 and body["id"] == "s1" and body["status"] == "idle" and body["agentType"] == "fake"
    status, again = await call(agent_daemon, "POST", BASE, {"label": "Chat", "agentType": "fake"},
                               headers={"Idempotency-Key": "k1"})
    assert status == 200 and again["id"] == "s1"
    status, listing = await call(agent_daemon, "GET", BASE, kind="user")
    assert status == 200 and [s["id"] for s in listing["sessions"]] == ["s1"]
    status, tabs = await call(agent_daemon, "GET", "/workspaces/host/tabs", kind="user")
    assert [(t["id"], t["type"], t["label"]) for t in tabs["tabs"]] == [("s1", "chat", "Chat")]


async def test_bad_requests_get_clear_errors(agent_daemon):
    status, body = await call(agent_daemon, "POST", BASE, {"agentType": "nope"})
    assert status == 400 and body["error"] == "unknown_agent_type"
    for bad_id in ("bad id!", "ends-in-newline\n"):
        status, body = await call(agent_daemon, "POST", BASE, {"sessionId": bad_id})
        assert status == 400 and body["error"] == "invalid_session_id"
    status, body = await call(agent_daemon, "GET", "/workspaces/host%0A/agent-sessions")
    assert status == 400
    status, body = await call(agent_daemon, "POST", f"{BASE}/nosuch/prompt", {"prompt": "hi"})
    assert status == 404 and body["error"] == "session_not_found"
    await call(agent_daemon, "POST", BASE, {"sessionId": "e", "agentType": "fake"})
    status, body = await call(agent_daemon, "POST", f"{BASE}/e/prompt", {"prompt": ""})
    assert status == 400 and body["error"] == "missing_prompt"
    status, body = await call(agent_daemon, "POST", f"{BASE}/e/cancel")
    assert status == 409 and body["status"] == "idle"
    status, body = await call(agent_daemon, "POST", f"{BASE}/e/rpc", {"type": "dance"})
    assert status == 400 and body["success"] is False
    # control needs a management token; a user token may only read
    status, body = await call(agent_daemon, "POST", f"{BASE}/e/prompt", {"prompt": "hi"}, kind="user")
    assert status == 403


async def test_create_then_prompt_starts_the_agent_and_events_stream_it(agent_daemon):
    await call(agent_daemon, "POST", BASE, {"sessionId": "sse", "agentType": "fake"})
    status, body = await call(agent_daemon, "POST", f"{BASE}/sse/prompt", {"prompt": "chunks 50", "messageId": "m1"})
    assert status == 202 and body["status"] == "prompting"
    async with agent_daemon.client() as client:
        resp = await client.get(f"{agent_daemon.url}{BASE}/sse/events",
                                headers=agent_daemon.auth_headers("user", "host"))
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = await read_sse(resp, lambda e: is_result("m1")(e["data"]))
    messages = [e["data"] for e in events]
    assert chunk_texts(messages) == [f"c{i} " for i in range(50)]
    assert all(e["id"] == e["data"]["seq"] for e in events if "id" in e)

    # Last-Event-ID resumes right after the last event seen
    middle = events[len(events) // 2]["id"]
    async with agent_daemon.client() as client:
        resp = await client.get(f"{agent_daemon.url}{BASE}/sse/events",
                                headers={**agent_daemon.auth_headers("user", "host"), "Last-Event-ID": str(middle)})
        resumed = await read_sse(resp, lambda e: is_result("m1")(e["data"]))
    with_ids = [e["id"] for e in resumed if "id" in e]
    assert with_ids[0] == middle + 1 and with_ids == [e["id"] for e in events if "id" in e and e["id"] > middle]


async def test_a_quiet_event_stream_stays_open_through_its_keepalives(make_daemon, agent_env):
    """A coordinator waits on this stream while the agent works silently (a long test run):
    keepalives must keep it open, not end it."""
    daemon = await make_daemon(**agent_env, ACP_PING_INTERVAL="0.1s")
    await call(daemon, "POST", BASE, {"sessionId": "quiet", "agentType": "fake"})
    async with daemon.client() as client:
        resp = await client.get(f"{daemon.url}{BASE}/quiet/events", headers=daemon.auth_headers("user", "host"))
        keepalives = 0
        async with asyncio.timeout(15):
            while keepalives < 3:
                keepalives += (await resp.content.readline()) == b": keepalive\n"
        await call(daemon, "POST", f"{BASE}/quiet/prompt", {"prompt": "echo still here", "messageId": "late"})
        events = await read_sse(resp, lambda e: is_result("late")(e["data"]))
    assert "still here" in "".join(chunk_texts([e["data"] for e in events if "data" in e]))


async def test_rpc_verbs_over_https(agent_daemon):
    await call(agent_daemon, "POST", BASE, {"sessionId": "rpc", "agentType": "fake"})
    status, first = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "prompt", "message": "sleep 30"})
    assert status == 200 and first == {"type": "response", "command": "prompt", "success": True,
                                       "status": "prompting", "promptId": first["promptId"]}
    _, queued = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "prompt", "message": "echo next"})
    assert queued["status"] == "queued" and queued["position"] == 1
    _, follow = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "follow_up", "message": "echo last"})
    assert follow["position"] == 2
    _, state = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "get_state"})
    assert [q["text"] for q in state["data"]["queue"]] == ["echo next", "echo last"]
    assert state["data"]["agentType"] == "fake"
    _, aborted = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "abort"})
    assert aborted["success"] and aborted["dropped"] == 2
    _, fresh = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "new_session"})
    assert fresh["success"] and fresh["acpSessionId"].startswith("fake-")
    _, state = await call(agent_daemon, "POST", f"{BASE}/rpc/rpc", {"type": "get_state"})
    assert state["data"]["acpSessionId"] == fresh["acpSessionId"] and state["data"]["queue"] == []


async def test_headless_start_then_stop_suspend_resume(agent_daemon, viewers):
    await call(agent_daemon, "POST", BASE, {"sessionId": "hl", "agentType": "fake"})
    status, body = await call(agent_daemon, "POST", f"{BASE}/hl/start",
                              {"agentType": "fake", "initialPrompt": "echo headless"})
    assert status == 202 and body == {"status": "starting", "sessionId": "hl"}
    v = await viewers(agent_daemon, "hl")
    await v.until(lambda m: m.get("type") == "session_prompt_done")
    assert chunk_texts(v.messages) == ["headless"]
    status, suspended = await call(agent_daemon, "POST", f"{BASE}/hl/suspend")
    assert status == 200 and suspended["status"] == "suspended" and suspended["hostStatus"] == "stopped"
    status, resumed = await call(agent_daemon, "POST", f"{BASE}/hl/resume")
    assert resumed["status"] == "ready" and resumed["acpSessionId"] == suspended["acpSessionId"]
    status, stopped = await call(agent_daemon, "POST", f"{BASE}/hl/stop")
    assert stopped["status"] == "stopped"


async def test_daemon_restart_reloads_the_chat(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env)
    await call(daemon, "POST", BASE, {"sessionId": "keep", "agentType": "fake", "label": "Keep"})
    v = await viewers(daemon, "keep")
    await v.prompt("echo remember me", request_id="a")
    await v.until(is_result("a"))
    acp_id = next(m for m in v.messages if m.get("method") == "session/update")["params"]["sessionId"]
    await v.close()

    await daemon.restart()
    _, tabs = await call(daemon, "GET", "/workspaces/host/tabs", kind="user")
    assert tabs["tabs"][0]["acpSessionId"] == acp_id and tabs["tabs"][0]["lastPrompt"] == "echo remember me"
    _, listing = await call(daemon, "GET", BASE, kind="user")
    assert listing["sessions"][0]["acpSessionId"] == acp_id

    w = await viewers(daemon, "keep")
    await w.prompt("echo again", request_id="b")
    await w.until(is_result("b"))
    updates = [m for m in w.messages if m.get("method") == "session/update"]
    # same agent conversation (session/load), and its replayed history is not shown again
    assert {m["params"]["sessionId"] for m in updates} == {acp_id}
    assert chunk_texts(w.messages) == ["again"]


async def test_tokens_for_another_workspace_or_none_are_refused(agent_daemon):
    await call(agent_daemon, "POST", BASE, {"sessionId": "auth", "agentType": "fake"})
    async with agent_daemon.client() as client:
        other = {"Authorization": f"Bearer {agent_daemon.token('user', 'other-ws')}"}
        resp = await client.get(f"{agent_daemon.url}{BASE}/auth/events", headers=other)
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
        resp = await client.get(f"{agent_daemon.url}/agent/ws", params={"sessionId": "auth"})
        assert resp.status == 401
        resp = await client.get(f"{agent_daemon.url}/agent/ws",
                                params={"sessionId": "auth", "workspace": "../etc", "token": agent_daemon.token()})
        assert resp.status == 400


async def _stall_a_viewer(daemon: Any, session_id: str) -> Any:
    """A viewer of `session_id` that stops reading while the agent floods it with updates;
    returns its socket once the daemon's sends to it are stuck."""
    await call(daemon, "POST", BASE, {"sessionId": session_id, "agentType": "fake"})
    path = f"/agent/ws?sessionId={session_id}&workspace=host"
    sock = await asyncio.to_thread(open_stalled_websocket, daemon.port, path, daemon.token("user"))
    (ws,) = [ws for ws in daemon.app[wsutil.OPEN_SOCKETS] if not ws.closed]
    await call(daemon, "POST", f"{BASE}/{session_id}/prompt", {"prompt": "chunks 300000"})
    await until_send_queue_full(ws.get_extra_info("socket").fileno())
    return sock


async def test_a_viewer_that_stops_reading_is_dropped(make_daemon, agent_env):
    """Its close used to wait for it to read (a close drains first), so the handler never ended."""
    daemon = await make_daemon(**agent_env, ACP_PONG_TIMEOUT="1s")
    start = get_ring().last_seq
    sock = await _stall_a_viewer(daemon, "stalled")
    try:
        await until(lambda: not [ws for ws in daemon.app[wsutil.OPEN_SOCKETS] if not ws.closed])
        await until(lambda: "agent_viewer_detached" in {e.item["message"] for e in get_ring().read(start)[1]})
    finally:
        sock.close()


async def test_a_stalled_viewer_does_not_hold_up_shutdown(make_daemon, agent_env):
    daemon = await make_daemon(**agent_env, GRACEFUL_SHUTDOWN_TIMEOUT="5s")
    sock = await _stall_a_viewer(daemon, "stalled")
    try:
        await stops_cleanly(daemon)
    finally:
        sock.close()
