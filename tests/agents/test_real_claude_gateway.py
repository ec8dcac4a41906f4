"""A real Claude Code (claude-agent-acp) behind the whole daemon: streaming, steering, permissions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.agents.conftest import chunk_texts, is_result
from tests.agents.conftest_real import (
    RealAgents,
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

WAIT = 45.0


def is_permission_request(message: dict[str, Any]) -> bool:
    return message.get("method") == "permission/request"


async def test_a_claude_reply_streams_to_the_viewer_and_completes(make_daemon, real_agents_in_env, fake_llm,
                                                                 viewers):
    fake_llm.script(Reply.say("Hello from Claude, streamed in pieces.", thinking="Greet the user."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "claude-hello", agent="claude-code")
    v = await viewers(daemon, "claude-hello")

    await v.prompt("say hello", request_id="r1")
    done = await v.until(is_result("r1"), WAIT)

    assert done["result"]["stopReason"] == "end_turn"
    pieces = chunk_texts(v.messages)
    assert "".join(pieces) == "Hello from Claude, streamed in pieces." and len(pieces) > 1
    assert "".join(u["content"]["text"] for u in updates(v.messages, "agent_thought_chunk")) == "Greet the user."
    seqs = [m["seq"] for m in history(v.messages)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert fake_llm.main_requests[0].user_texts()[-1] == "say hello"


async def test_steer_reaches_the_running_claude_turn(make_daemon, real_agents_in_env, fake_llm, viewers):
    gate = asyncio.Event()
    fake_llm.script(Reply.say("A long story about cats.", gate=gate), Reply.say("Switching to dogs."))
    daemon = await make_daemon(**daemon_env(real_agents_in_env))
    await start_session(daemon, "claude-steer", agent="claude-code")
    v = await viewers(daemon, "claude-steer")
    await v.prompt("tell me about cats", request_id="long")
    await fake_llm.wait_for_requests(1, WAIT)

    await v.send({"type": "steer", "message": "talk about dogs instead", "id": "s"})
    reply = await v.until(lambda m: m.get("type") == "response", WAIT)
    gate.set()
    done = await v.until(is_result("long"), WAIT)

    assert reply["success"] is True and reply["status"] == "steered"
    assert done["result"]["stopReason"] == "end_turn"
    await fake_llm.wait_for_requests(2, WAIT)
    assert "talk about dogs instead" in fake_llm.main_requests[1].user_texts()
    assert "Switching to dogs." in "".join(chunk_texts(v.messages))
    assert len([m for m in v.messages if is_result("long")(m)]) == 1


async def run_gated_tool(daemon: Any, viewers: Any, agents: RealAgents, session_id: str, policy: str,
                         answer: str | None = None) -> tuple[Any, bool]:
    """Claude wants to `touch` a file (a tool it asks permission for); returns the viewer and
    whether the file exists once the prompt completed."""
    target = agents.workdir / f"made-by-claude-{policy}.txt"
    agents.llm.script(Reply.call("Bash", {"command": f"touch {target}", "description": "create a file"}),
                      Reply.say("Finished."))
    await start_session(daemon, session_id, agent="claude-code", permissionPolicy=policy)
    v = await viewers(daemon, session_id)
    await v.prompt("create the file", request_id="r1")
    if answer is not None:
        request = await v.until(is_permission_request, WAIT)
        option = next(o for o in request["params"]["options"] if o["kind"] == answer)
        await v.send({"jsonrpc": "2.0", "id": request["id"],
                      "result": {"outcome": {"outcome": "selected", "optionId": option["optionId"]}}})
    done = await v.until(is_result("r1"), WAIT)
    assert done["result"]["stopReason"] == "end_turn"
    return v, target.exists()


@pytest.mark.parametrize(("policy", "answer", "created"), [
    ("ask", "allow_once", True),
    ("ask", "reject_once", False),
    ("auto", None, True),
    ("deny", None, False),
])
async def test_permission_policy_decides_whether_claude_may_run_a_gated_tool(
        make_daemon, real_agents_in_env, fake_llm, viewers, policy, answer, created):
    daemon = await make_daemon(**daemon_env(real_agents_in_env))

    v, exists = await run_gated_tool(daemon, viewers, real_agents_in_env, f"claude-perm-{policy}", policy, answer)

    assert exists is created
    asked = [m for m in v.messages if is_permission_request(m)]
    assert len(asked) == (1 if policy == "ask" else 0)
    statuses = [u.get("status") for u in updates(v.messages, "tool_call_update") if u.get("status")]
    assert statuses[-1] == ("completed" if created else "failed")
