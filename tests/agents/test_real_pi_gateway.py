"""A real pi behind the whole daemon: what viewers on /agent/ws see for tools, steering and retries."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.agents.conftest import chunk_texts, is_result
from tests.agents.conftest_real import (
    daemon_env,
    fake_llm,
    history,
    real_agents,
    real_agents_in_env,
    start_session,
    updates,
)
from tests.fakes.fake_llm import Reply

pytestmark = pytest.mark.agents
__all__ = ["fake_llm", "real_agents", "real_agents_in_env"]  # fixtures used by this module

WAIT = 30.0


async def test_a_tool_call_streams_to_two_viewers_in_identical_order(make_daemon, real_agents_in_env, fake_llm,
                                                                      viewers):
    fake_llm.script(Reply.call("bash", {"command": "echo tool-output-42"}, text="Running the command."),
                    Reply.say("The command printed tool-output-42.", thinking="It worked."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-tools")
    a = await viewers(daemon, "pi-tools")
    b = await viewers(daemon, "pi-tools")
    for viewer in (a, b):
        await viewer.until(lambda m: m.get("type") == "session_replay_complete", WAIT)

    await a.prompt("run the command", request_id="r1")
    done = await a.until(is_result("r1"), WAIT)
    await b.until(lambda m: m.get("seq") == done["seq"], WAIT)

    assert done["result"]["stopReason"] == "end_turn"
    assert "".join(chunk_texts(a.messages)) == "Running the command.The command printed tool-output-42."
    finished = [u for u in updates(a.messages, "tool_call_update") if u.get("status") == "completed"]
    assert "tool-output-42" in finished[0]["content"][0]["content"]["text"]
    assert updates(a.messages, "tool_call")[0]["kind"] == "execute"
    assert history(a.messages) == history(b.messages)
    seqs = [m["seq"] for m in history(a.messages)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_steer_reaches_the_running_pi_turn(make_daemon, real_agents_in_env, fake_llm, viewers):
    gate = asyncio.Event()
    fake_llm.script(Reply.say("A long story about cats.", gate=gate), Reply.say("Switching to dogs."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-steer")
    v = await viewers(daemon, "pi-steer")
    await v.prompt("tell me about cats", request_id="long")
    await fake_llm.wait_for_requests(1, WAIT)

    await v.send({"type": "steer", "message": "talk about dogs instead", "id": "s"})
    reply = await v.until(lambda m: m.get("type") == "response", WAIT)
    gate.set()
    done = await v.until(is_result("long"), WAIT)

    assert reply["success"] is True and reply["status"] == "steered"
    assert done["result"]["stopReason"] == "end_turn"
    assert fake_llm.main_requests[1].user_texts()[-1] == "talk about dogs instead"
    assert "".join(chunk_texts(v.messages)) == "A long story about cats.Switching to dogs."
    results = [m for m in v.messages if is_result("long")(m)]
    assert len(results) == 1


async def test_overloaded_twice_then_success_shows_retries_and_completes_once(make_daemon, real_agents_in_env,
                                                                             fake_llm, viewers):
    fake_llm.script(Reply.overloaded(), Reply.overloaded(), Reply.say("Third time works."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-retry")
    v = await viewers(daemon, "pi-retry")

    await v.prompt("hello", request_id="r1")
    done = await v.until(is_result("r1"), WAIT)

    assert done["result"]["stopReason"] == "end_turn"
    retries = [m["params"] for m in v.messages if m.get("method") == "_pi/auto_retry_start"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all("529" in r["errorMessage"] for r in retries)
    assert "".join(chunk_texts(v.messages)) == "Third time works."
    assert len([m for m in v.messages if is_result("r1")(m)]) == 1
    assert len(fake_llm.main_requests) == 3


def pi_pids(home: str) -> list[int]:
    """pi processes whose HOME is this test's (found through /proc, as an operator would)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        # pi renames itself to "pi" once started (process.title); before that it is `node …/pi`
        named_pi = cmdline[0].strip() == b"pi" or any(a.endswith(b"/pi") for a in cmdline[:2])
        if named_pi and f"HOME={home}".encode() in environ:
            found.append(int(entry))
    return found


async def test_pi_killed_mid_prompt_is_restarted_with_its_conversation(make_daemon, real_agents_in_env, fake_llm,
                                                                       viewers):
    fake_llm.script(Reply.say("Noted: zebra."), Reply.hang(), Reply.say("The word was zebra."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-crash")
    v = await viewers(daemon, "pi-crash")
    await v.prompt("remember the word zebra", request_id="r1")
    await v.until(is_result("r1"), WAIT)
    await v.prompt("this one hangs", request_id="r2")
    await fake_llm.wait_for_requests(2, WAIT)

    for pid in pi_pids(str(real_agents_in_env.home)):
        os.kill(pid, signal.SIGKILL)
    crashed = await v.until(is_result("r2"), WAIT)
    fake_llm.release()
    await v.prompt("which word?", request_id="r3")
    done = await v.until(is_result("r3"), WAIT)

    assert crashed["result"]["stopReason"] == "recovered"
    assert any(m.get("type") == "agent_crash_report" for m in v.messages)
    assert done["result"]["stopReason"] == "end_turn"
    assert fake_llm.main_requests[-1].user_texts()[0] == "remember the word zebra"
    assert "".join(chunk_texts(v.messages)).endswith("The word was zebra.")


async def test_follow_up_runs_inside_the_running_pi_prompt_and_both_complete(make_daemon, real_agents_in_env,
                                                                           fake_llm, viewers):
    gate = asyncio.Event()
    fake_llm.script(Reply.say("First answer.", gate=gate), Reply.say("Follow-up answer."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-follow")
    v = await viewers(daemon, "pi-follow")
    await v.prompt("first question", request_id="first")
    await fake_llm.wait_for_requests(1, WAIT)

    await v.send({"type": "follow_up", "message": "and a follow-up", "id": "second"})
    reply = await v.until(lambda m: m.get("type") == "response", WAIT)
    gate.set()
    await v.until(is_result("first"), WAIT)
    await v.until(is_result("second"), WAIT)

    assert reply["success"] is True and reply.get("native") is True
    assert "".join(chunk_texts(v.messages)) == "First answer.Follow-up answer."
    assert fake_llm.main_requests[1].user_texts() == ["first question", "and a follow-up"]
    results = {m["id"]: m["result"]["stopReason"] for m in v.messages if is_result(m.get("id"))(m)}
    assert results == {"first": "end_turn", "second": "end_turn"}


async def test_half_an_emoji_from_pi_reaches_viewers_and_no_event_is_lost(make_daemon, real_agents_in_env, fake_llm,
                                                                         viewers):
    # pi cuts text by UTF-16 units (grep lines, truncated output) and writes a lone surrogate
    # as a JSON escape; a model can send one too, which is how this test makes pi emit it.
    fake_llm.script(Reply.call("bash", {"command": "echo cut \ud83d"}, text="Cut \ud83d here."),
                    Reply.say("Done \ud83d."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "pi-surrogate")
    v = await viewers(daemon, "pi-surrogate")
    await v.prompt("cut an emoji", request_id="r1")
    done = await v.until(is_result("r1"), WAIT)

    assert done["result"]["stopReason"] == "end_turn"
    assert "".join(chunk_texts(v.messages)) == "Cut \ufffd here.Done \ufffd."
    statuses = [u.get("status") for u in updates(v.messages, "tool_call_update")]
    assert "in_progress" in statuses and "completed" in statuses
    assert updates(v.messages, "tool_call_update")[0]["rawInput"] == {"command": "echo cut \ufffd"}
    seqs = [m["seq"] for m in history(v.messages)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
