"""Prompts a client may send that the gateway must refuse or repair before they reach its queue,
its history, its store or the agent: one bad request must never break the session for others."""

from __future__ import annotations

from functools import partial
from typing import Any

from tests.agents.conftest import chunk_texts, is_result, until
from tests.agents.test_agent_ws import create_session
from tests.agents.test_http import BASE, call
from vm_agent import appkeys


async def test_a_text_block_whose_text_is_not_a_string_is_refused_and_the_session_keeps_working(
        agent_daemon, viewers):
    await create_session(agent_daemon, "badtext")
    for bad in ([{"type": "text", "text": None}], [{"type": "text", "text": 5}], {"type": "text"}):
        status, body = await call(agent_daemon, "POST", f"{BASE}/badtext/prompt", {"prompt": bad})
        assert status == 400 and body["error"] == "invalid_prompt"
    status, body = await call(agent_daemon, "POST", f"{BASE}/badtext/rpc",
                              {"type": "follow_up", "message": [{"type": "text", "text": ["x"]}]})
    assert status == 400 and body["success"] is False

    v = await viewers(agent_daemon, "badtext")
    await v.until(lambda m: m.get("type") == "session_replay_complete")
    await v.send({"jsonrpc": "2.0", "id": "bad", "method": "session/prompt",
                  "params": {"prompt": [{"type": "text", "text": 5}]}})
    assert (await v.until(lambda m: m.get("id") == "bad"))["error"]["code"] == -32602
    await v.prompt("echo still fine", request_id="ok")
    await v.until(is_result("ok"))
    assert chunk_texts(v.messages) == ["still fine"]
    status, listing = await call(agent_daemon, "GET", BASE, kind="user")
    assert status == 200 and listing["sessions"][0]["queueLength"] == 0


async def test_a_prompt_with_a_lone_surrogate_runs_and_is_remembered_across_a_restart(
        make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env)
    await create_session(daemon, "surrogate")
    v = await viewers(daemon, "surrogate")
    await v.until(lambda m: m.get("type") == "session_replay_complete")
    # "\ud800" is valid JSON, but not text that can be encoded (stored, relayed) as UTF-8
    async with daemon.client() as client:
        resp = await client.post(f"{daemon.url}{BASE}/surrogate/prompt",
                                 data=b'{"prompt": "echo hi \\ud800", "messageId": "m"}',
                                 headers={**daemon.auth_headers("management", "host"),
                                          "Content-Type": "application/json"})
        assert resp.status == 202
    await v.until(is_result("m"))
    assert chunk_texts(v.messages) == ["hi \ufffd"]
    acp_id = next(m for m in v.messages if m.get("method") == "session/update")["params"]["sessionId"]
    await v.close()

    await daemon.restart()  # the final flush must not fail either
    _, listing = await call(daemon, "GET", BASE, kind="user")
    (session,) = listing["sessions"]
    assert session["lastPrompt"] == "echo hi \ufffd" and session["acpSessionId"] == acp_id


async def stored_last_prompt(daemon: Any, session_id: str) -> str | None:
    """What the store holds as the session's last prompt (its chat tab)."""
    _, tabs = await call(daemon, "GET", "/workspaces/host/tabs", kind="user")
    return next(t["lastPrompt"] for t in tabs["tabs"] if t["id"] == session_id)


async def test_a_session_the_store_cannot_take_does_not_stop_the_others_being_saved(agent_daemon, viewers):
    await create_session(agent_daemon, "unstorable")
    await create_session(agent_daemon, "fine")
    bad = await viewers(agent_daemon, "unstorable")
    await bad.until(lambda m: m.get("type") == "session_replay_complete")
    # content that skipped the input checks (an in-process caller): its last prompt cannot be
    # stored, and its session_prompting cannot be serialized as it is
    agent_daemon.app[appkeys.AGENTS].get("host", "unstorable").prompt([{"type": "text", "text": "echo \ud800"}])
    shown = await bad.until(lambda m: m.get("type") == "session_prompting")
    assert shown["prompt"] == [{"type": "text", "text": "echo \ufffd"}]

    for text in ("echo first", "echo second"):  # the second is saved only if the writer lives on
        status, _ = await call(agent_daemon, "POST", f"{BASE}/fine/prompt", {"prompt": text})
        assert status == 202
        await until(partial(stored_is, agent_daemon, "fine", text))


async def stored_is(daemon: Any, session_id: str, text: str) -> bool:
    return await stored_last_prompt(daemon, session_id) == text
