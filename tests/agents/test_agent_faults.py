"""Agents that misbehave: malformed answers, a closed stdout, a hung process, a slow handshake
cut short by a stop. Whatever the agent does, a user can always cancel and stop it, its output
reaches viewers, and no agent process outlives its session or the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from tests.agents.conftest import agent_pids, chunk_texts, is_result, pid_alive, until
from tests.agents.test_agent_ws import create_session
from tests.agents.test_http import BASE, call


async def state_of(viewer: Any) -> dict[str, Any]:
    await viewer.send({"type": "get_state"})
    return (await viewer.until(lambda m: m.get("command") == "get_state"))["data"]


async def test_malformed_responses_from_the_agent_are_skipped_and_it_keeps_serving(agent_daemon, viewers):
    await create_session(agent_daemon, "badrpc")
    v = await viewers(agent_daemon, "badrpc")
    await v.prompt("echo warm", request_id="w")
    await v.until(is_result("w"))
    pid = (await state_of(v))["agentPid"]

    await v.prompt("badid", request_id="i")  # a response whose id is an array
    assert (await v.until(is_result("i")))["result"]["stopReason"] == "end_turn"
    await v.prompt("badcode", request_id="c")  # an error whose code is a string
    failed = await v.until(is_result("c"))
    assert failed["error"]["message"] == "the code is not a number"
    await v.prompt("echo still here", request_id="s")
    await v.until(is_result("s"))

    assert chunk_texts(v.messages) == ["warm", "after badid", "before badcode", "still here"]
    state = await state_of(v)
    assert state["agentPid"] == pid and state["counts"]["crashes"] == 0
    assert not any(m.get("type") == "agent_crash_report" for m in v.messages)


async def test_an_agent_that_closed_its_stdout_is_killed_when_replaced_and_none_outlive_the_daemon(
        agent_daemon, viewers, tmp_path: Path):
    await create_session(agent_daemon, "closeout")
    v = await viewers(agent_daemon, "closeout")
    await v.prompt("closeout", request_id="x")
    done = await v.until(is_result("x"))
    assert done["result"]["stopReason"] == "recovered"
    first, replacement = agent_pids(tmp_path)
    await until(lambda: not pid_alive(first))  # still running when the session gave up on it
    assert pid_alive(replacement)
    await agent_daemon.stop()
    assert not any(pid_alive(pid) for pid in agent_pids(tmp_path))


async def wedge(daemon: Any, viewer: Any, tmp_path: Path, request_id: str) -> int:
    """Stop the agent (SIGSTOP: it reads nothing more, like a hung one) and send it a prompt
    larger than the pipe's buffer, so the gateway's write cannot complete. Returns its pid."""
    pid = agent_pids(tmp_path)[-1]
    os.kill(pid, signal.SIGSTOP)
    status, _ = await call(daemon, "POST", f"{BASE}/wedged/prompt",
                           {"prompt": "echo " + "y" * 300_000, "messageId": request_id})
    assert status == 202
    await viewer.until(lambda m: m.get("type") == "session_prompting" and m["prompt"][0]["text"].startswith("echo y"))
    return pid


async def test_a_hung_agent_that_stopped_reading_its_stdin_can_be_cancelled_stopped_and_shut_down(
        make_daemon, agent_env, viewers, tmp_path: Path):
    daemon = await make_daemon(**agent_env, ACP_RPC_TIMEOUT="1s")
    await create_session(daemon, "wedged")
    v = await viewers(daemon, "wedged")
    await v.prompt("echo warm", request_id="w")
    await v.until(is_result("w"))
    hung: list[int] = []
    try:
        hung.append(await wedge(daemon, v, tmp_path, "big1"))
        async with asyncio.timeout(5):
            status, _ = await call(daemon, "POST", f"{BASE}/wedged/cancel")
        assert status == 200
        assert (await v.until(is_result("big1")))["result"]["stopReason"] == "cancelled"
        await until(lambda: not pid_alive(hung[0]))

        await v.prompt("echo back", request_id="b")  # a new agent
        await v.until(is_result("b"))
        hung.append(await wedge(daemon, v, tmp_path, "big2"))
        async with asyncio.timeout(10):
            status, stopped = await call(daemon, "POST", f"{BASE}/wedged/stop")
        assert status == 200 and stopped["status"] == "stopped" and stopped["hostStatus"] == "stopped"
        assert not pid_alive(hung[1])

        await v.prompt("echo again", request_id="a")
        await v.until(is_result("a"))
        hung.append(await wedge(daemon, v, tmp_path, "big3"))
        async with asyncio.timeout(10):
            await daemon.stop()
        assert not pid_alive(hung[2])
    finally:
        for pid in hung:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_stop_during_a_slow_start_stays_stopped_and_leaves_no_agent(agent_daemon, viewers, tmp_path: Path):
    await create_session(agent_daemon, "slowstop", agent="fake-slow")  # its handshake takes 30 s
    v = await viewers(agent_daemon, "slowstop")
    status, _ = await call(agent_daemon, "POST", f"{BASE}/slowstop/start", {})
    assert status == 202
    await until(lambda: bool(agent_pids(tmp_path)))
    (pid,) = agent_pids(tmp_path)
    async with asyncio.timeout(10):
        status, stopped = await call(agent_daemon, "POST", f"{BASE}/slowstop/stop")
    assert stopped["status"] == "stopped" and stopped["hostStatus"] == "stopped"
    # the start under way was called off: its process is gone, and nothing came up instead
    assert not pid_alive(pid)
    await v.until(lambda m: m.get("type") == "agent_status" and m["status"] == "stopped")
    state = await state_of(v)
    assert state["status"] == "stopped" and state["agentPid"] is None and agent_pids(tmp_path) == [pid]
    assert [m["status"] for m in v.messages if m.get("type") == "agent_status"] == ["starting", "stopped"]


async def test_a_prompt_whose_agent_start_is_stopped_ends_cancelled(agent_daemon, viewers, tmp_path: Path):
    """The user stopped it: that is a cancel, not an error about an agent that failed to start."""
    await create_session(agent_daemon, "slowprompt", agent="fake-slow")
    v = await viewers(agent_daemon, "slowprompt")
    await v.prompt("echo hi", request_id="p")
    await until(lambda: bool(agent_pids(tmp_path)))
    status, _ = await call(agent_daemon, "POST", f"{BASE}/slowprompt/stop")
    assert status == 200
    result = await v.until(is_result("p"))
    assert result.get("result") == {"stopReason": "cancelled"}


async def test_daemon_shutdown_during_a_start_leaves_no_agent_process(agent_daemon, tmp_path: Path):
    await create_session(agent_daemon, "slowdown", agent="fake-slow")
    status, _ = await call(agent_daemon, "POST", f"{BASE}/slowdown/start", {})
    assert status == 202
    await until(lambda: bool(agent_pids(tmp_path)))
    await agent_daemon.stop()
    assert not any(pid_alive(pid) for pid in agent_pids(tmp_path))


async def test_half_an_emoji_from_the_agent_reaches_viewers_as_a_replacement_character(agent_daemon, viewers):
    await create_session(agent_daemon, "halfemoji")
    v = await viewers(agent_daemon, "halfemoji")
    await v.prompt("surrogate", request_id="s")
    await v.until(is_result("s"))
    assert chunk_texts(v.messages) == ["half an emoji \ufffd", "after"]
