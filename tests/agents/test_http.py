"""`/workspaces/{ws}/agent-sessions`: control over HTTPS, the FIFO verbs (`rpc`) and SSE `events`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.agents.conftest import chunk_texts, is_result

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
    status, body = await call(agent_daemon, "POST", BASE, {"sessionId": "bad id!"})
    assert status == 400 and body["error"] == "invalid_session_id"
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
