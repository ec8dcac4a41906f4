"""What a waited-for prompt reports: its own reply whatever else is queued, and an honest outcome
when it was cancelled, retried or its agent crashed. Library and `vmagent prompt --wait` alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vm_agent.client import AgentClient, Event
from vm_agent.client.prompts import LOST_END, PromptReply
from vm_agent.client.settling import last_seq

from .conftest import agent_env, cli_env, client_for, run_cli, stop_agents

WAIT = 30


async def until_event(client: AgentClient, after: int, wanted: Callable[[Event], bool]) -> None:
    """Read the session's events after `after` until one is `wanted`."""
    events = client.events(after)
    try:
        async with asyncio.timeout(WAIT):
            async for event in events:
                if wanted(event):
                    return
    finally:
        await events.aclose()


def queued(text: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "queue_update" and text in [q.get("text") for q in e.data.get("queue") or []]


async def test_run_returns_its_own_reply_not_that_of_a_prompt_queued_after_it(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        await client.prompt("sleep 30")  # someone else's work is running
        mine = await client.send_prompt("echo mine")  # ours waits behind it...
        await client.prompt("fail")  # ...and another coordinator's prompt, which fails, behind ours
        await client.cancel()  # the running prompt ends: ours runs, then theirs
        result = await client.wait_result(mine, WAIT)
    assert (mine.status, mine.position) == ("queued", 1)
    assert (result.text, result.stop_reason, result.failure) == ("mine", "end_turn", None)
    assert result.prompt_id == mine.prompt_id


async def test_prompt_wait_prints_its_own_reply_and_exit_code_when_others_queue_behind(agent_daemon):
    env = cli_env(agent_daemon)
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        await client.prompt("sleep 30")
        after = last_seq(await client.get_state())
        waiting = asyncio.create_task(run_cli("prompt", "--wait", "echo mine", env=env))
        await until_event(client, after, queued("echo mine"))  # the CLI's prompt is in the queue
        await client.prompt("fail")  # queued after it, and fails
        await client.cancel()
        result = await waiting
    assert (result.code, result.out, result.err) == (0, "mine\n", "")


async def test_prompt_wait_fails_when_its_prompt_is_aborted(agent_daemon):
    env = cli_env(agent_daemon)
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        after = last_seq(await client.get_state())
        waiting = asyncio.create_task(run_cli("prompt", "--wait", "sleep 30", env=env))
        await until_event(client, after, lambda e: e.text() == "sleeping")
        await client.abort()  # `vmagent prompt --wait "Build X" && deploy` must not deploy now
        result = await waiting
    assert (result.code, result.out, result.err) == (1, "sleeping\n", "vmagent: the prompt was cancelled\n")


async def test_prompt_wait_then_steer_prints_the_steered_reply(agent_daemon):
    # README "Redirect it": `pi` has no native steering, so the daemon cancels the running prompt
    # and runs the steer as a new prompt; the wait follows it to its end.
    env = cli_env(agent_daemon)
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        after = last_seq(await client.get_state())
        waiting = asyncio.create_task(run_cli("prompt", "--wait", "sleep 30", env=env))
        await until_event(client, after, lambda e: e.text() == "sleeping")
        answer = await client.steer("echo redirected to SQLite")
        result = await waiting
    assert answer["status"] == "queued"  # replaced the running prompt, not delivered into it
    assert (result.code, result.out, result.err) == (0, "redirected to SQLite\n", "")


async def test_run_follows_a_steer_and_reports_its_id(agent_daemon):
    async with client_for(agent_daemon) as client:
        await client.ensure_session()
        sent = await client.send_prompt("sleep 30")
        waiting = asyncio.create_task(client.wait_result(sent, WAIT))
        await until_event(client, sent.after, lambda e: e.text() == "sleeping")
        steer = await client.steer("echo steered")
        result = await waiting
    assert (result.text, result.stop_reason, result.failure) == ("steered", "end_turn", None)
    assert result.prompt_id == steer["promptId"] != sent.prompt_id


async def test_a_wait_whose_prompt_ended_in_a_gap_fails_instead_of_hanging(make_daemon, relay_to, tmp_path):
    daemon = await make_daemon(**agent_env(tmp_path), ACP_MESSAGE_BUFFER_SIZE="50")
    relay = await relay_to(daemon)
    try:
        async with client_for(daemon) as other, client_for(daemon, url=relay.url) as me:
            await other.ensure_session()
            await other.prompt("sleep 30")  # someone's work is running
            sent = await me.send_prompt("echo mine")  # ours is queued behind it
            await other.prompt("chunks 300")  # and a chatty prompt behind ours pushes its end out of the log
            read_sleeping = asyncio.Event()
            me.on_event = lambda e: e.text() == "sleeping" and read_sleeping.set()
            waiting = asyncio.create_task(me.wait_result(sent, WAIT))
            await asyncio.wait_for(read_sleeping.wait(), WAIT)
            relay.black_hole()  # the coordinator's network drops out, silently
            await other.cancel()  # the running prompt ends; ours runs, then the chatty one
            state = await other.wait_idle(WAIT)
            relay.silent = False  # the network is back; the stalled connection is cut
            relay.drop()
            result = await waiting
    finally:
        await stop_agents(daemon)
    assert state["queue"] == [] and state["currentPrompt"] is None
    assert result.prompt_id == sent.prompt_id and result.failure == LOST_END
    assert "event log" in result.failure


def test_a_gap_does_not_end_a_wait_whose_end_comes_after_it():
    # The state read after a gap may already say the prompt is over while its end is still on
    # its way in the replay after the gap: only events up to the state's seq decide.
    reply = PromptReply("p2")
    gap = Event(None, {"type": "session_gap", "from": 3, "to": 9})
    assert reply.wants_state(gap)
    reply.seen_state({"currentPrompt": None, "queue": [], "counts": {"messages": 12}})
    assert not reply.feed(gap)
    assert not reply.feed(Event(10, {"seq": 10, "type": "session_prompting", "promptId": "p2"}))
    assert reply.feed(Event(11, {"seq": 11, "type": "session_prompt_done", "promptId": "p2", "stopReason": "end_turn"}))
    assert reply.result().failure is None


def test_a_prompt_cancelled_with_no_steer_at_the_head_of_the_queue_stays_cancelled():
    # abort empties the queue (queue_update []) before it cancels the running prompt.
    reply = PromptReply("p1")
    events = [
        Event(1, {"seq": 1, "type": "session_prompting", "promptId": "p1", "kind": "prompt"}),
        Event(2, {"seq": 2, "type": "queue_update", "queue": [{"id": "p2", "kind": "steer", "text": "x"}]}),
        Event(3, {"seq": 3, "type": "session_prompt_done", "promptId": "p2", "stopReason": "cancelled"}),
        Event(4, {"seq": 4, "type": "queue_update", "queue": []}),
        Event(5, {"seq": 5, "type": "session_prompt_done", "promptId": "p1", "stopReason": "cancelled"}),
    ]
    assert [reply.feed(e) for e in events] == [False, False, False, False, True]
    assert reply.result().failure == "the prompt was cancelled"


async def test_a_reply_after_transient_provider_errors_holds_only_the_successful_attempt(agent_daemon):
    async with client_for(agent_daemon) as client:
        result = await client.run("transient 2", timeout_s=WAIT)  # two 529s, retried by the daemon
    assert (result.text, result.stop_reason, result.failure) == ("succeeded after 2 failures", "end_turn", None)


async def test_an_agent_crash_is_reported_with_its_reason_and_its_recovery(agent_daemon):
    result = await run_cli("prompt", "--follow", "crash", env=cli_env(agent_daemon))
    lines = result.out.splitlines()
    crash = [line for line in lines if line.startswith("[agent crashed")]
    assert len(crash) == 1 and crash[0].startswith("[agent crashed: agent exited (code 3); stderr: fatal: ")
    assert "sk-ant-secret" not in result.out  # the daemon redacted the agent's stderr
    assert lines[lines.index(crash[0]) :][-1] == "[done: recovered]"
    assert result.code == 1
    reason = "agent crashed (agent exited (code 3)); it was restarted, but the prompt did not finish"
    assert result.err == f"vmagent: agent failed: {reason}\n"


def test_a_daemon_restart_unseen_by_the_waiter_ends_the_wait_as_a_failure():
    # A restarted daemon numbers prompts from p1 again: the p1 after the restart is not ours.
    reply = PromptReply("p1")
    history = [
        Event(1, {"seq": 1, "type": "session_prompting", "promptId": "p1"}),
        Event(None, {"type": "session_restarted"}),  # what EventStream yields after a restart
        Event(1, {"seq": 1, "type": "session_prompting", "promptId": "p1"}),
        Event(2, {"seq": 2, "type": "session_prompt_done", "promptId": "p1", "stopReason": "end_turn"}),
    ]
    read = []
    for event in history:  # as wait_result reads: until the prompt is over
        read.append(event)
        if reply.feed(event):
            break
    assert read == history[:2]
    assert reply.result().failure == "the daemon restarted while the prompt was waiting or running; it did not finish"
