"""What a waited-for prompt reports: its own reply whatever else is queued, and an honest outcome
when it was cancelled, retried or its agent crashed. Library and `vmagent prompt --wait` alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from vm_agent.client import AgentClient, Event
from vm_agent.client.prompts import PromptReply
from vm_agent.client.settling import last_seq

from .conftest import cli_env, client_for, run_cli

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
