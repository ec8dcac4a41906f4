"""Viewers on /agent/ws: order, replay, resume, queueing and the verbs, against the fake ACP agent."""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.agents.conftest import chunk_texts, is_result


async def create_session(daemon: Any, session_id: str, agent: str = "fake", **body: Any) -> dict[str, Any]:
    async with daemon.client() as client:
        resp = await client.post(f"{daemon.url}/workspaces/host/agent-sessions",
                                 json={"sessionId": session_id, "agentType": agent, **body},
                                 headers=daemon.auth_headers("management", "host"))
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


async def test_two_viewers_see_the_same_stream_in_the_agents_order(agent_daemon, viewers):
    await create_session(agent_daemon, "order")
    a = await viewers(agent_daemon, "order")
    b = await viewers(agent_daemon, "order")
    for v in (a, b):
        state = await v.next()
        assert state["type"] == "session_state" and state["agentType"] == "fake"
        await v.until(lambda m: m.get("type") == "session_replay_complete")

    await a.prompt("chunks 300", request_id="r1")
    done_a = await a.until(is_result("r1"))
    await b.until(is_result("r1"))

    assert done_a["result"]["stopReason"] == "end_turn"
    assert chunk_texts(a.messages) == [f"c{i} " for i in range(300)]
    seqs_a = [m["seq"] for m in a.messages if "seq" in m]
    assert seqs_a == list(range(seqs_a[0], seqs_a[0] + len(seqs_a)))
    assert [m for m in a.messages if "seq" in m] == [m for m in b.messages if "seq" in m]


async def test_late_viewer_replays_the_history_then_resumes_with_after(agent_daemon, viewers):
    await create_session(agent_daemon, "late")
    first = await viewers(agent_daemon, "late")
    await first.prompt("chunks 20", request_id="r1")
    await first.until(is_result("r1"))
    late = await viewers(agent_daemon, "late")
    state = await late.next()
    await first.until(lambda m: m.get("seq") == state["lastSeq"])
    history = [m for m in first.messages if "seq" in m]
    assert state["replayCount"] == len(history) and state["lastSeq"] == history[-1]["seq"]
    await late.until(lambda m: m.get("type") == "session_replay_complete")
    assert [m for m in late.messages if "seq" in m] == history

    middle = history[10]["seq"]
    resumed = await viewers(agent_daemon, "late", after=middle)
    await resumed.until(lambda m: m.get("type") == "session_replay_complete")
    assert [m for m in resumed.messages if "seq" in m] == [m for m in history if m["seq"] > middle]

    await resumed.prompt("echo live", request_id="r2")
    await resumed.until(is_result("r2"))
    assert chunk_texts(resumed.messages)[-1] == "live"


async def test_prompt_while_busy_queues_and_runs_after(agent_daemon, viewers):
    await create_session(agent_daemon, "busy")
    v = await viewers(agent_daemon, "busy")
    await v.prompt("sleep 30", request_id="long")
    await v.until(lambda m: chunk_texts([m]) == ["sleeping"])
    await v.prompt("echo second", request_id="second")
    queued = await v.until(lambda m: m.get("type") == "queue_update")
    assert [q["text"] for q in queued["queue"]] == ["echo second"]

    await v.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    long_done = await v.until(is_result("long"))
    second_done = await v.until(is_result("second"))
    assert long_done["result"]["stopReason"] == "cancelled"
    assert second_done["result"]["stopReason"] == "end_turn"
    assert chunk_texts(v.messages)[-1] == "second"


async def test_follow_up_runs_after_everything_queued(agent_daemon, viewers):
    await create_session(agent_daemon, "fu")
    v = await viewers(agent_daemon, "fu")
    await v.prompt("sleep 30", request_id="a")
    await v.until(lambda m: chunk_texts([m]) == ["sleeping"])
    await v.prompt("echo second", request_id="b")
    await v.send({"type": "follow_up", "message": "echo third", "id": "f"})
    reply = await v.until(lambda m: m.get("type") == "response")
    assert reply["status"] == "queued" and reply["position"] == 2
    await v.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    await v.until(is_result("f"))
    order = [m["id"] for m in v.messages if is_result(m.get("id"))(m)]
    assert order == ["a", "b", "f"]
    assert chunk_texts(v.messages) == ["sleeping", "second", "third"]


async def test_steer_without_native_support_cancels_and_runs_first(agent_daemon, viewers):
    await create_session(agent_daemon, "steer")
    v = await viewers(agent_daemon, "steer")
    await v.prompt("sleep 30", request_id="long")
    await v.until(lambda m: chunk_texts([m]) == ["sleeping"])
    await v.prompt("echo queued", request_id="queued")
    await v.send({"type": "steer", "message": "echo steered"})
    reply = await v.until(lambda m: m.get("type") == "response")
    assert reply["success"] is True
    await v.until(is_result("queued"))
    results = [m for m in v.messages if m.get("jsonrpc") and "promptId" in m]
    assert results[0]["id"] == "long" and results[0]["result"]["stopReason"] == "cancelled"
    assert chunk_texts(v.messages)[-2:] == ["steered", "queued"]


async def test_native_steer_joins_the_running_turn(agent_daemon, viewers):
    await create_session(agent_daemon, "nsteer", agent="fake-steer")
    v = await viewers(agent_daemon, "nsteer")
    await v.prompt("sleep 30", request_id="long")
    await v.until(lambda m: chunk_texts([m]) == ["sleeping"])
    await v.send({"type": "steer", "message": "go left"})
    reply = await v.until(lambda m: m.get("type") == "response")
    assert reply["status"] == "steered"
    done = await v.until(is_result("long"))
    assert done["result"]["stopReason"] == "end_turn"
    assert "steered: go left" in chunk_texts(v.messages)


async def test_abort_cancels_and_clears_the_queue(agent_daemon, viewers):
    await create_session(agent_daemon, "abort")
    v = await viewers(agent_daemon, "abort")
    await v.prompt("sleep 30", request_id="long")
    await v.until(lambda m: chunk_texts([m]) == ["sleeping"])
    await v.prompt("echo one", request_id="one")
    await v.prompt("echo two", request_id="two")
    await v.send({"type": "abort"})
    reply = await v.until(lambda m: m.get("type") == "response")
    assert reply == {"type": "response", "command": "abort", "success": True, "cancelled": True, "dropped": 2}
    for request_id in ("one", "two", "long"):
        await v.until(is_result(request_id)) if not any(is_result(request_id)(m) for m in v.messages) else None
    results = {m["id"]: m["result"]["stopReason"] for m in v.messages if is_result(m.get("id"))(m)}
    assert results == {"one": "cancelled", "two": "cancelled", "long": "cancelled"}
    assert "one" not in chunk_texts(v.messages) and "two" not in chunk_texts(v.messages)
    await v.send({"type": "get_state"})
    state = await v.until(lambda m: m.get("command") == "get_state")
    assert state["data"]["queue"] == [] and state["data"]["status"] == "ready"


async def test_transient_errors_are_retried_visibly_with_one_completion(agent_daemon, viewers):
    await create_session(agent_daemon, "retry")
    v = await viewers(agent_daemon, "retry")
    await v.prompt("transient 2", request_id="t")
    done = await v.until(is_result("t"))
    assert done["result"]["stopReason"] == "end_turn"
    retries = [m for m in v.messages if m.get("type") == "prompt_retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    await v.prompt("echo next", request_id="barrier")
    await v.until(is_result("barrier"))
    assert sum(1 for m in v.messages if is_result("t")(m)) == 1
    dones = [m for m in v.messages if m.get("type") == "session_prompt_done"]
    assert [d["promptId"] for d in dones] == [done["promptId"]]
    assert chunk_texts(v.messages) == ["attempt 1", "attempt 2", "succeeded after 2 failures", "next"]


async def test_transient_errors_beyond_the_limit_fail_the_prompt(agent_daemon, viewers):
    await create_session(agent_daemon, "retry3")
    v = await viewers(agent_daemon, "retry3")
    await v.prompt("transient 5", request_id="t")
    done = await v.until(is_result("t"))
    assert "error" in done and "Overloaded" in done["error"]["message"]
    assert len([m for m in v.messages if m.get("type") == "prompt_retry"]) == 2


async def test_agent_killed_mid_prompt_is_restarted_and_the_session_reloaded(agent_daemon, viewers):
    await create_session(agent_daemon, "crash")
    v = await viewers(agent_daemon, "crash")
    await v.prompt("echo before", request_id="a")
    await v.until(is_result("a"))
    await v.prompt("crash", request_id="c")
    done = await v.until(is_result("c"))
    assert done["result"]["stopReason"] == "recovered"
    report = next(m for m in v.messages if m.get("type") == "agent_crash_report")
    assert report["exitCode"] == 3
    assert "sk-ant-secret123456" not in report["stderr"] and "[REDACTED]" in report["stderr"]
    await v.prompt("echo after", request_id="b")
    await v.until(is_result("b"))
    # the reloaded conversation's replay is not shown again
    assert chunk_texts(v.messages) == ["before", "about to crash", "after"]


async def test_unknown_and_malformed_viewer_messages_get_errors_and_the_socket_survives(agent_daemon, viewers):
    await create_session(agent_daemon, "bad")
    v = await viewers(agent_daemon, "bad")
    await v.until(lambda m: m.get("type") == "session_replay_complete")
    await v.ws.send_str("{not json")
    assert (await v.next())["error"]["code"] == -32700
    await v.send({"jsonrpc": "2.0", "id": 7, "method": "fs/read_text_file", "params": {"path": "/etc/passwd"}})
    assert (await v.next()) == {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601,
                                                                     "message": "method not found: fs/read_text_file"}}
    await v.send({"type": "launch_missiles"})
    assert (await v.next())["error"]["code"] == -32601
    await v.send({"jsonrpc": "2.0", "id": 8, "method": "session/prompt", "params": {"prompt": 42}})
    assert (await v.next())["error"]["code"] == -32602
    await v.send({"type": "ping"})
    assert (await v.next()) == {"type": "pong"}
    await v.prompt("echo still fine", request_id="ok")
    await v.until(is_result("ok"))
    assert chunk_texts(v.messages) == ["still fine"]


async def test_oversized_viewer_message_closes_with_1009(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_WS_MAX_MESSAGE_BYTES="64KiB")
    await create_session(daemon, "big")
    v = await viewers(daemon, "big")
    await v.until(lambda m: m.get("type") == "session_replay_complete")
    await v.prompt("x" * 70_000)
    msg = await v.ws.receive(timeout=10)
    while msg.type.name == "TEXT":
        msg = await v.ws.receive(timeout=10)
    assert msg.type.name == "CLOSE" and msg.data == 1009
    # the session is unharmed: a new viewer can prompt it
    w = await viewers(daemon, "big")
    await w.prompt("echo fine", request_id="f")
    await w.until(is_result("f"))


async def test_agent_output_edge_cases_are_relayed_or_skipped_without_harm(agent_daemon, viewers):
    await create_session(agent_daemon, "edge")
    v = await viewers(agent_daemon, "edge")
    await v.prompt("malformed", request_id="m")
    await v.until(is_result("m"))
    await v.prompt("unknown", request_id="u")
    await v.until(is_result("u"))
    await v.prompt("bigline 2000000", request_id="b")
    await v.until(is_result("b"))
    assert chunk_texts(v.messages)[0] == "after garbage"
    kinds = [m["params"]["update"]["sessionUpdate"] for m in v.messages if m.get("method") == "session/update"]
    assert "brand_new_kind" in kinds
    assert any(m.get("method") == "_vendor/notice" for m in v.messages)
    # An agent's own top-level "seq" must not shadow the gateway's (resume depends on it).
    numbered = next(m for m in v.messages if m.get("method") == "_vendor/numbered")
    sequenced = [m["seq"] for m in v.messages if "seq" in m]
    assert numbered["seq"] != 12345 and sequenced == sorted(set(sequenced))
    assert len(chunk_texts(v.messages)[-1]) == 2_000_000


async def test_ten_thousand_chunks_arrive_in_exact_order(agent_daemon, viewers):
    await create_session(agent_daemon, "many")
    v = await viewers(agent_daemon, "many")
    await v.prompt("chunks 10000", request_id="n")
    await v.until(is_result("n"), timeout=60)
    assert chunk_texts(v.messages) == [f"c{i} " for i in range(10000)]


async def test_missing_agent_binary_reports_a_clear_error(agent_daemon, viewers):
    await create_session(agent_daemon, "nobin", agent="missing")
    v = await viewers(agent_daemon, "nobin")
    await v.prompt("hello", request_id="h")
    done = await v.until(is_result("h"))
    assert "install it" in done["error"]["message"]
    status = [m for m in v.messages if m.get("type") == "agent_status"][-1]
    assert status["status"] == "error"


async def test_agent_line_over_the_limit_is_skipped_and_the_stream_continues(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_MAX_LINE_BYTES="64KiB")
    await create_session(daemon, "huge")
    v = await viewers(daemon, "huge")
    await v.prompt("bigline 100000", request_id="big")
    await v.until(is_result("big"))
    await v.prompt("echo next", request_id="next")
    await v.until(is_result("next"))
    assert chunk_texts(v.messages) == ["next"]


async def test_agent_that_never_finishes_its_handshake_fails_the_start_clearly(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_INIT_TIMEOUT="0.3s")
    await create_session(daemon, "slow", agent="fake-slow")
    v = await viewers(daemon, "slow")
    await v.prompt("echo never", request_id="s")
    done = await v.until(is_result("s"))
    assert "timed out" in done["error"]["message"]
    await v.send({"type": "get_state"})
    state = await v.until(lambda m: m.get("command") == "get_state")
    assert state["data"]["status"] == "error"


async def test_a_viewer_behind_the_retained_history_gets_a_gap_marker(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_MESSAGE_BUFFER_SIZE="50")
    await create_session(daemon, "gap")
    first = await viewers(daemon, "gap")
    await first.prompt("chunks 200", request_id="n")
    await first.until(is_result("n"))
    late = await viewers(daemon, "gap", after=0)
    state = await late.next()
    gap = await late.next()
    assert gap["type"] == "session_gap" and gap["from"] == 1
    first_kept = await late.next()
    assert first_kept["seq"] == gap["to"] + 1 and state["replayCount"] == 50
    await late.until(lambda m: m.get("type") == "session_replay_complete")
    assert chunk_texts(late.messages)[-1] == "c199 "


async def test_an_agent_that_keeps_crashing_is_not_restarted_forever(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**agent_env, ACP_MAX_RESTART_ATTEMPTS="1")
    await create_session(daemon, "crashy")
    v = await viewers(daemon, "crashy")
    await v.prompt("crash", request_id="c1")
    assert (await v.until(is_result("c1")))["result"]["stopReason"] == "recovered"
    await v.prompt("crash", request_id="c2")
    failed = await v.until(is_result("c2"))
    assert "crashed 2 times" in failed["error"]["message"]
    assert [m["status"] for m in v.messages if m.get("type") == "agent_status"][-1] == "error"


async def test_select_agent_switches_and_starts_the_new_agent(agent_daemon, viewers):
    await create_session(agent_daemon, "switch")
    v = await viewers(agent_daemon, "switch")
    await v.send({"type": "select_agent", "agentType": "no-such-agent"})
    error = await v.until(lambda m: m.get("type") == "error")
    assert error["error"] == "unknown_agent_type"
    await v.send({"type": "select_agent", "agentType": "fake-steer"})
    ready = await v.until(lambda m: m.get("type") == "agent_status" and m["status"] == "ready")
    assert ready["agentType"] == "fake-steer"
    await v.prompt("echo switched", request_id="s")
    await v.until(is_result("s"))
    assert chunk_texts(v.messages) == ["switched"]


async def test_agent_dying_between_prompts_is_reported_and_restarted_on_the_next_prompt(agent_daemon, viewers):
    await create_session(agent_daemon, "idlecrash")
    v = await viewers(agent_daemon, "idlecrash")
    await v.prompt("echo one", request_id="a")
    await v.until(is_result("a"))
    await v.send({"type": "get_state"})
    state = await v.until(lambda m: m.get("command") == "get_state")
    os.kill(state["data"]["agentPid"], signal.SIGKILL)
    report = await v.until(lambda m: m.get("type") == "agent_crash_report")
    assert report["promptId"] is None and report["exitCode"] == -9
    await v.prompt("echo two", request_id="b")
    await v.until(is_result("b"))
    updates = [m for m in v.messages if m.get("method") == "session/update"]
    assert len({m["params"]["sessionId"] for m in updates}) == 1  # the conversation was reloaded
    assert chunk_texts(v.messages) == ["one", "two"]


async def test_cancel_during_a_retry_wait_ends_the_prompt_at_once(make_daemon, agent_env, viewers):
    daemon = await make_daemon(**{**agent_env, "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "60s",
                                  "ACP_PROMPT_RETRY_MAX_BACKOFF": "60s"})
    await create_session(daemon, "retrywait")
    v = await viewers(daemon, "retrywait")
    await v.prompt("transient 5", request_id="t")
    retry = await v.until(lambda m: m.get("type") == "prompt_retry")
    assert retry["delaySeconds"] == 60
    await v.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    done = await v.until(is_result("t"), timeout=10)
    assert done["result"]["stopReason"] == "cancelled"


async def test_an_agent_that_ignores_cancel_is_stopped_and_the_next_prompt_restarts_it(make_daemon, agent_env,
                                                                                        viewers):
    daemon = await make_daemon(**{**agent_env, "ACP_RPC_TIMEOUT": "0.5s"})
    await create_session(daemon, "stubborn")
    v = await viewers(daemon, "stubborn")
    await v.prompt("stubborn 60", request_id="s")
    await v.until(lambda m: chunk_texts([m]) == ["stubborn"])
    await v.send({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    done = await v.until(is_result("s"), timeout=10)
    assert done["result"]["stopReason"] == "cancelled"
    await v.prompt("echo back again", request_id="next")
    await v.until(is_result("next"))
    assert chunk_texts(v.messages)[-1] == "back again"
