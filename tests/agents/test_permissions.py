"""Permission requests from the agent, answered by policy: auto, deny, or a viewer (ask)."""

from __future__ import annotations

import os
import signal

from tests.agents.conftest import agent_pids, chunk_texts, is_result
from tests.agents.test_agent_ws import create_session


async def test_auto_policy_approves_with_the_first_allow_option(agent_daemon, viewers):
    await create_session(agent_daemon, "auto", permissionPolicy="auto")
    v = await viewers(agent_daemon, "auto")
    await v.prompt("permission", request_id="p")
    await v.until(is_result("p"))
    assert chunk_texts(v.messages) == ["permission: allow"]
    assert not any(m.get("method") == "permission/request" for m in v.messages)


async def test_deny_policy_rejects(agent_daemon, viewers):
    await create_session(agent_daemon, "deny", permissionPolicy="deny")
    v = await viewers(agent_daemon, "deny")
    await v.prompt("permission", request_id="p")
    await v.until(is_result("p"))
    assert chunk_texts(v.messages) == ["permission: reject"]


async def test_ask_policy_relays_to_viewers_and_the_first_answer_wins(agent_daemon, viewers):
    await create_session(agent_daemon, "ask", permissionPolicy="ask")
    a = await viewers(agent_daemon, "ask")
    b = await viewers(agent_daemon, "ask")
    await a.prompt("permission", request_id="p")
    request_a = await a.until(lambda m: m.get("method") == "permission/request")
    request_b = await b.until(lambda m: m.get("method") == "permission/request")
    assert request_a == request_b
    assert [o["optionId"] for o in request_a["params"]["options"]] == ["allow", "reject"]

    await b.send({"jsonrpc": "2.0", "id": request_b["id"], "result": {"optionId": "nonsense"}})
    assert (await b.until(lambda m: "error" in m and m.get("id") == request_b["id"]))["error"]["code"] == -32602
    await b.send({"jsonrpc": "2.0", "id": request_b["id"],
                  "result": {"outcome": {"outcome": "selected", "optionId": "reject"}}})
    await a.until(is_result("p"))
    resolved = next(m for m in a.messages if m.get("type") == "permission_resolved")
    assert resolved["reason"] == "answered" and resolved["outcome"]["optionId"] == "reject"
    assert chunk_texts(a.messages) == ["permission: reject"]
    # a late answer from the other viewer is refused, not applied twice
    await a.send({"jsonrpc": "2.0", "id": request_a["id"], "result": {"optionId": "allow"}})
    assert (await a.until(lambda m: "error" in m and m.get("id") == request_a["id"]))["error"]["code"] == -32602


async def test_unanswered_ask_is_denied_after_the_timeout(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_PERMISSION_POLICY="ask", ACP_PERMISSION_TIMEOUT="0.3s")
    await create_session(daemon, "timeout")
    v = await viewers(daemon, "timeout")
    await v.prompt("permission", request_id="p")
    await v.until(lambda m: m.get("method") == "permission/request")
    await v.until(is_result("p"))
    resolved = next(m for m in v.messages if m.get("type") == "permission_resolved")
    assert resolved["reason"] == "timeout"
    assert chunk_texts(v.messages) == ["permission: reject"]


async def test_cancel_answers_a_pending_permission_request_as_cancelled(agent_daemon, viewers):
    await create_session(agent_daemon, "askcancel", permissionPolicy="ask")
    v = await viewers(agent_daemon, "askcancel")
    await v.prompt("permission", request_id="p")
    await v.until(lambda m: m.get("method") == "permission/request")
    await v.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    done = await v.until(is_result("p"))
    assert done["result"]["stopReason"] == "cancelled"
    assert chunk_texts(v.messages) == ["permission: cancelled"]


async def test_a_pending_permission_request_is_resolved_for_viewers_when_the_agent_dies(
        agent_daemon, viewers, tmp_path):
    await create_session(agent_daemon, "askcrash", permissionPolicy="ask")
    v = await viewers(agent_daemon, "askcrash")
    await v.prompt("permission", request_id="p")
    request = await v.until(lambda m: m.get("method") == "permission/request")
    os.kill(agent_pids(tmp_path)[-1], signal.SIGKILL)
    resolved = await v.until(lambda m: m.get("type") == "permission_resolved")
    assert resolved["id"] == request["id"] and resolved["reason"] == "agent_exited"
    assert resolved["outcome"] == {"outcome": "cancelled"}
    assert (await v.until(is_result("p")))["result"]["stopReason"] == "recovered"
    # a viewer arriving later replays the request and, after it, that it is closed
    late = await viewers(agent_daemon, "askcrash")
    await late.until(lambda m: m.get("type") == "session_replay_complete")
    kinds = [m.get("method") or m.get("type") for m in late.messages]
    assert kinds.index("permission/request") < kinds.index("permission_resolved")


async def test_a_pending_permission_request_is_resolved_for_viewers_when_the_prompt_times_out(
        make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_PROMPT_TIMEOUT="0.5s")
    await create_session(daemon, "asktimeout", permissionPolicy="ask")
    v = await viewers(daemon, "asktimeout")
    await v.prompt("permission", request_id="p")
    request = await v.until(lambda m: m.get("method") == "permission/request")
    done = await v.until(is_result("p"))
    assert "timed out" in done["error"]["message"]
    resolved = [m for m in v.messages if m.get("type") == "permission_resolved"]
    assert [(m["id"], m["reason"]) for m in resolved] == [(request["id"], "cancelled")]
