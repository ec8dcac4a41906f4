"""Agent sessions through the library against the real gateway and the fake ACP agent."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from vm_agent.client import AgentError, ConflictError, NotFoundError, is_idle

from .conftest import agent_env, client_for, stop_agents

WAIT = 30


async def test_run_returns_the_final_reply_and_leaves_the_session_idle(agent_daemon):
    async with client_for(agent_daemon) as client:
        result = await client.run("echo hello from the agent", timeout_s=WAIT)
        assert result.text == "hello from the agent"
        assert result.stop_reason == "end_turn" and result.error is None
        assert is_idle(result.state)
        sessions = await client.list_sessions()
    assert [s["id"] for s in sessions] == ["main"]


async def test_second_run_reports_only_its_own_reply(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.run("echo first", timeout_s=WAIT)
        second = await client.run("echo second", timeout_s=WAIT)
    assert second.text == "second"


async def test_a_failing_prompt_is_reported_not_hidden(agent_daemon):
    async with client_for(agent_daemon) as client:
        result = await client.run("fail", timeout_s=WAIT)
    assert result.error


async def test_events_resume_across_forced_disconnects_without_duplicates_or_holes(agent_daemon, relay_to):
    relay = await relay_to(agent_daemon)
    seqs: list[int] = []
    text: list[str] = []
    done = asyncio.Condition()

    async with client_for(agent_daemon, url=relay.url) as watcher, client_for(agent_daemon) as driver:
        await driver.ensure_session()
        events = watcher.events(after=0)

        async def watch() -> None:
            async for event in events:
                if event.seq is not None:
                    seqs.append(event.seq)
                    text.append(event.text())
                if event.kind == "session_prompt_done":
                    async with done:
                        done.notify_all()

        watching = asyncio.create_task(watch())
        try:
            for round_ in range(3):
                async with done:
                    await driver.prompt(f"chunks {100 + round_}")
                    await asyncio.wait_for(done.wait(), WAIT)
                # Cut the watcher's connection; the next prompt runs while it is reconnecting.
                assert relay.drop() >= 1
            await driver.prompt("echo last")
            async with asyncio.timeout(WAIT), done:
                while "last" not in "".join(text):
                    await done.wait()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            await events.aclose()
    assert events.reconnects >= 3
    assert seqs == list(range(1, len(seqs) + 1))  # every seq exactly once, in order
    expected = "".join("".join(f"c{i} " for i in range(n)) for n in (100, 101, 102)) + "last"
    assert "".join(text) == expected


async def test_resuming_from_a_seq_starts_right_after_it(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.run("echo one", timeout_s=WAIT)
        state = await client.get_state()
        mark = state["counts"]["messages"]
        await client.run("echo two", timeout_s=WAIT)
        events = client.events(after=mark)
        kinds = []
        async with asyncio.timeout(WAIT):
            async for event in events:
                assert event.seq is None or event.seq > mark
                kinds.append(event.kind)
                if event.kind == "session_prompt_done":
                    break
        await events.aclose()
    assert kinds[0] == "session_state" and "session/update:agent_message_chunk" in kinds


async def test_queue_verbs_follow_up_abort_and_state(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        await client.prompt("sleep 30")
        queued = await client.follow_up("echo later")
        assert queued["success"] is True
        state = await client.get_state()
        assert not is_idle(state) and len(state["queue"]) == 1
        await client.abort()
        state = await client.wait_idle(WAIT)
        assert state["queue"] == [] and state["lastStopReason"] == "cancelled"


async def test_steer_redirects_the_running_prompt(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session(agent_type="fake-steer")
        sent = await client.send_prompt("sleep 30")
        events = client.events(sent.after)
        async with asyncio.timeout(WAIT):
            async for event in events:
                if event.text() == "sleeping":  # the first prompt is running now
                    break
        await events.aclose()
        await client.steer("look at the tests instead")
        result = await client.wait_result(sent, WAIT)
    assert result.text == "sleepingsteered: look at the tests instead"


async def test_new_session_starts_a_fresh_conversation(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.run("echo before", timeout_s=WAIT)
        old = (await client.get_state())["acpSessionId"]
        answer = await client.new_session()
    assert answer["success"] and answer["acpSessionId"] and answer["acpSessionId"] != old


async def test_refused_verbs_and_unknown_sessions_are_typed_errors(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        with pytest.raises(AgentError, match="prompt failed: prompt needs a non-empty message"):
            await client.prompt("")
        with pytest.raises(NotFoundError):
            await client.get_state(session="no-such-session")


async def test_events_continue_across_a_daemon_restart(make_daemon, tmp_path):
    daemon = await make_daemon(**agent_env(tmp_path))
    async with client_for(daemon, reconnect_attempts=30) as client:
        await client.run("echo before the restart", timeout_s=WAIT)
        events = client.events(after=0)
        async with asyncio.timeout(WAIT):
            async for event in events:
                if event.kind == "session_prompt_done":
                    break
        before = events.last_seq
        await stop_agents(daemon)
        await daemon.restart()  # the new process numbers its events from 1 again
        # Enough new events that their numbers overlap the ones already read.
        await client.run("chunks 30", timeout_s=WAIT)
        seen = []
        async with asyncio.timeout(WAIT):
            async for event in events:
                seen.append(event)
                if event.kind == "session_prompt_done":
                    break
        await events.aclose()
    assert max(e.seq or 0 for e in seen) > before  # the new history reaches past the old position
    kinds = [e.kind for e in seen]
    assert "session_restarted" in kinds
    after_restart = seen[kinds.index("session_restarted") + 1 :]
    numbered = [e.seq for e in after_restart if e.seq is not None]
    assert numbered == list(range(1, len(numbered) + 1))
    assert "".join(e.text() for e in after_restart) == "".join(f"c{i} " for i in range(30))


async def test_headless_start_then_cancel_when_idle_is_a_conflict(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session("headless")
        started = await client.start("echo started without a viewer", session="headless")
        assert started == {"status": "starting", "sessionId": "headless"}
        texts = []
        events = client.events(session="headless")
        async with asyncio.timeout(WAIT):
            async for event in events:
                texts.append(event.text())
                if event.kind == "session_prompt_done":
                    break
        await events.aclose()
        assert "".join(texts) == "started without a viewer"
        state = await client.wait_idle(WAIT, session="headless")
        assert state["lastStopReason"] == "end_turn"
        with pytest.raises(ConflictError) as idle:
            await client.cancel(session="headless")
    assert idle.value.code == "not_prompting" and idle.value.body["status"] == "idle"
