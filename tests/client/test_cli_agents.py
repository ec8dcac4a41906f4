"""`vmagent` agent commands against the real gateway: output a person reads, JSON a script reads,
and exit codes that say what happened."""

from __future__ import annotations

import json

from .conftest import cli_env, run_cli


async def test_prompt_follow_streams_the_reply_then_exits(agent_daemon):
    env = cli_env(agent_daemon)
    result = await run_cli("prompt", "--follow", "echo", "hello", "world", env=env)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "> echo hello world" in lines
    assert "hello world" in lines
    assert lines[-1] == "[done: end_turn]" or "[done: end_turn]" in lines


async def test_prompt_wait_prints_only_the_final_reply(agent_daemon):
    result = await run_cli("prompt", "--wait", "echo just this", env=cli_env(agent_daemon))
    assert (result.code, result.out) == (0, "just this\n")


async def test_prompt_without_waiting_and_state(agent_daemon):
    env = cli_env(agent_daemon)
    sent = await run_cli("prompt", "echo queued work", env=env)
    assert sent.code == 0 and sent.out.startswith("prompt sent to main on 127.0.0.1:")
    waited = await run_cli("wait", "--wait-timeout", "20", env=env)
    assert waited.code == 0 and waited.out.startswith("idle")
    state = await run_cli("state", env=env)
    assert "status: ready" in state.out and "lastStopReason: end_turn" in state.out
    as_json = json.loads((await run_cli("state", "--json", env=env)).out)
    assert as_json["lastStopReason"] == "end_turn" and as_json["queue"] == []


async def test_follow_up_steer_abort_new_session(agent_daemon):
    env = cli_env(agent_daemon)
    assert (await run_cli("prompt", "sleep 30", env=env)).code == 0
    follow = await run_cli("follow-up", "echo", "afterwards", env=env)
    assert (follow.code, follow.out) == (0, "follow-up: ok\n")
    queued = json.loads((await run_cli("state", "--json", env=env)).out)
    assert [q["text"] for q in queued["queue"]] == ["echo afterwards"]
    abort = await run_cli("abort", env=env)
    assert (abort.code, abort.out) == (0, "abort: ok\n")
    state = json.loads((await run_cli("wait", "--json", "--wait-timeout", "20", env=env)).out)
    assert state["queue"] == [] and state["lastStopReason"] == "cancelled"
    steer = await run_cli("steer", "echo redirected", env=env)
    assert steer.code == 0
    fresh = await run_cli("new-session", "--json", env=env)
    assert fresh.code == 0 and json.loads(fresh.out)["success"] is True


async def test_watch_prints_history_as_text_and_as_json_lines(agent_daemon):
    env = cli_env(agent_daemon)
    await run_cli("prompt", "--wait", "echo watched reply", env=env)
    text = await run_cli("watch", "--until-idle", env=env)
    assert text.code == 0 and "watched reply" in text.out.splitlines()
    lines = (await run_cli("watch", "--json", "--until-idle", env=env)).out.splitlines()
    events = [json.loads(line) for line in lines]
    seqs = [e["seq"] for e in events if "seq" in e]
    assert seqs == list(range(1, len(seqs) + 1))
    assert any(e.get("type") == "session_prompt_done" for e in events)
    later = await run_cli("watch", "--json", "--until-idle", "--after", str(seqs[-2]), env=env)
    assert [json.loads(line).get("seq") for line in later.out.splitlines() if "seq" in line] == [seqs[-1]]


async def test_sessions_tabs_cancel_and_stop(agent_daemon):
    env = cli_env(agent_daemon)
    await run_cli("prompt", "--wait", "echo hi", env=env)
    sessions = await run_cli("sessions", env=env)
    assert sessions.code == 0 and sessions.out.splitlines()[0].split()[:3] == ["ID", "STATUS", "AGENTTYPE"]
    assert sessions.out.splitlines()[1].startswith("main")
    tabs = json.loads((await run_cli("workspaces", "tabs", "host", "--json", env=env)).out)
    assert [t["type"] for t in tabs["tabs"]] == ["chat"]
    cancel = await run_cli("cancel", env=env)  # nothing is running
    assert cancel.code == 1 and cancel.err.strip() == "vmagent: no prompt is running (not_prompting, HTTP 409)"
    stop = await run_cli("stop", env=env)
    assert (stop.code, stop.out) == (0, "stop: stopped\n")


async def test_a_failed_prompt_exits_1_with_the_reason(agent_daemon):
    result = await run_cli("prompt", "--follow", "fail", env=cli_env(agent_daemon))
    assert result.code == 1
    assert "[failed: " in result.out
    assert result.err.startswith("vmagent: agent failed: ") and len(result.err.strip().splitlines()) == 1


async def test_refused_verb_is_one_line(agent_daemon):
    env = cli_env(agent_daemon)
    await run_cli("prompt", "--wait", "echo x", env=env)
    result = await run_cli("follow-up", "", env=env)
    assert result.code == 1 and "Traceback" not in result.err
    assert result.err == "vmagent: follow_up failed: follow_up needs a non-empty message\n"


async def test_watch_until_idle_resumed_after_the_last_event_returns_at_once(agent_daemon):
    env = cli_env(agent_daemon)
    await run_cli("prompt", "--wait", "echo finished work", env=env)
    lines = (await run_cli("watch", "--json", "--until-idle", env=env)).out.splitlines()
    last = [json.loads(line)["seq"] for line in lines if '"seq"' in line][-1]
    # Resume where the last watch stopped, as the README says: the work is over, nothing comes.
    resumed = await run_cli("watch", "--until-idle", "--after", str(last), env=env, timeout=10)
    assert (resumed.code, resumed.out, resumed.err) == (0, "", "")
