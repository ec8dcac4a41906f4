"""The pi RPC driver against a real `pi --mode rpc` and the fake LLM: what a viewer and the
session see (ACP updates, stop reasons, errors), for replies, tools, faults and the verbs."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.agents.conftest_real import PI_API_ANTHROPIC, PI_API_OPENAI, RealAgents, fake_llm, real_agents
from tests.fakes.fake_llm import Reply
from vm_agent.agents.driver import (
    CANCELLED,
    END_TURN,
    AgentCrashed,
    AgentStartError,
    Launch,
    NotSupported,
    PromptFailed,
    TransientProviderError,
)
from vm_agent.agents.pi_rpc import PiRpcDriver
from vm_agent.agents.registry import AgentRegistry, AgentSpec
from vm_agent.config import Settings
from vm_agent.workspaces.placement import HostPlacement

pytestmark = pytest.mark.agents
__all__ = ["fake_llm", "real_agents"]  # fixtures used by this module

WAIT = 30.0


class Recorder:
    """The session's side of a driver: every delivered message, and exits."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.exits: list[int | None] = []

    def emit(self, message: dict[str, Any], raw: str | None = None) -> None:
        self.messages.append(message)

    def updates(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [m["params"]["update"] for m in self.messages if m.get("method") == "session/update"]
        return [u for u in out if kind is None or u.get("sessionUpdate") == kind]

    def text(self, kind: str = "agent_message_chunk") -> str:
        return "".join(u["content"]["text"] for u in self.updates(kind))

    def extensions(self, name: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.messages if m.get("method") == name]




@pytest.fixture
async def make_driver(real_agents: RealAgents) -> AsyncIterator[Any]:
    started: list[PiRpcDriver] = []

    async def make(resume: str | None = None, **settings: Any) -> tuple[PiRpcDriver, Recorder]:
        recorder = Recorder()
        config = Settings(acp_init_timeout=WAIT, acp_rpc_timeout=WAIT, acp_prompt_timeout=60.0,
                          acp_stop_grace_period=1.0, agent_path=str(real_agents.bin_dir), **settings)
        launch = Launch(HostPlacement(str(real_agents.workdir)), env=real_agents.env)
        driver = PiRpcDriver(AgentRegistry().get("pi"), launch, config, recorder.emit,
                             on_exit=recorder.exits.append)
        started.append(driver)
        await driver.start(resume)
        return driver, recorder

    yield make
    for driver in started:
        await driver.stop()


@pytest.mark.parametrize("api", [PI_API_OPENAI, PI_API_ANTHROPIC])
async def test_reply_with_a_tool_call_streams_as_acp_updates_in_order(make_driver, real_agents, fake_llm, api):
    real_agents.configure_pi(api)
    fake_llm.script(Reply.call("bash", {"command": "echo hello-from-tool"}, text="Let me run it."),
                    Reply.say("All done, the tool said hello.", thinking="Summarize the output."))
    driver, seen = await make_driver()

    stop = await driver.prompt([{"type": "text", "text": "run echo"}])

    assert stop == END_TURN
    assert seen.text() == "Let me run it.All done, the tool said hello."
    assert seen.text("agent_thought_chunk") == "Summarize the output."
    tool = [u for u in seen.updates() if u.get("toolCallId")]
    assert tool[0]["sessionUpdate"] == "tool_call" and tool[0]["kind"] == "execute"
    assert tool[0]["status"] == "pending"
    assert any(u.get("rawInput") == {"command": "echo hello-from-tool"} for u in tool)
    assert tool[-1]["status"] == "completed"
    assert "hello-from-tool" in tool[-1]["content"][0]["content"]["text"]
    # order as pi produced it: first text, then the tool's life, then the final text
    kinds = [u["sessionUpdate"] for u in seen.updates() if u["sessionUpdate"] != "agent_thought_chunk"]
    first_tool, last_tool = kinds.index("tool_call"), len(kinds) - 1 - kinds[::-1].index("tool_call_update")
    assert set(kinds[:first_tool]) == {"agent_message_chunk"}
    assert set(kinds[last_tool + 1:]) == {"agent_message_chunk"}
    assert all(m["params"]["sessionId"] == driver.session_id for m in seen.messages)
    assert "hello-from-tool" in "".join(fake_llm.main_requests[1].tool_results())


async def test_overloaded_twice_then_success_completes_once_with_retries_visible(make_driver, fake_llm):
    fake_llm.script(Reply.overloaded(), Reply.overloaded(), Reply.say("Finally it works."))
    driver, seen = await make_driver()

    stop = await driver.prompt([{"type": "text", "text": "hi"}])

    assert stop == END_TURN
    assert seen.text() == "Finally it works."
    retries = seen.extensions("_pi/auto_retry_start")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert "529" in retries[0]["errorMessage"]
    assert seen.extensions("_pi/auto_retry_end")[-1]["success"] is True
    assert len(fake_llm.main_requests) == 3


@pytest.mark.parametrize(("api", "fault"), [
    (PI_API_OPENAI, Reply.cut("This reply is cut off in the middle")),
    (PI_API_ANTHROPIC, Reply.overloaded_mid_stream()),
], ids=["openai-connection-cut", "anthropic-overloaded-mid-stream"])
async def test_a_reply_broken_mid_stream_is_retried_and_completes(make_driver, real_agents, fake_llm, api, fault):
    real_agents.configure_pi(api)
    fake_llm.script(fault, Reply.say("Second time lucky."))
    driver, seen = await make_driver()

    assert await driver.prompt([{"type": "text", "text": "hi"}]) == END_TURN
    assert seen.text().endswith("Second time lucky.")
    assert len(seen.extensions("_pi/auto_retry_start")) == 1
    assert len(fake_llm.main_requests) == 2


async def test_provider_errors_map_to_transient_or_failed_and_pi_stays_usable(make_driver, real_agents, fake_llm):
    real_agents.configure_pi(retry={"enabled": False, "provider": {"maxRetries": 0}})
    fake_llm.script(Reply.error(500), Reply.error(400), Reply.say("Working again."))
    driver, seen = await make_driver()

    with pytest.raises(TransientProviderError, match="500"):
        await driver.prompt([{"type": "text", "text": "first"}])
    with pytest.raises(PromptFailed, match="400"):
        await driver.prompt([{"type": "text", "text": "second"}])
    assert await driver.prompt([{"type": "text", "text": "third"}]) == END_TURN
    assert driver.alive and seen.text() == "Working again."


async def test_steer_redirects_the_running_prompt_which_completes_once(make_driver, fake_llm):
    gate = asyncio.Event()
    fake_llm.script(Reply.say("I am writing a long answer about cats.", gate=gate), Reply.say("Dogs, then."))
    driver, seen = await make_driver()

    running = asyncio.create_task(driver.prompt([{"type": "text", "text": "tell me about cats"}]))
    await fake_llm.wait_for_requests(1)
    assert await driver.steer([{"type": "text", "text": "talk about dogs instead"}]) is True
    gate.set()

    assert await asyncio.wait_for(running, WAIT) == END_TURN
    assert fake_llm.main_requests[1].user_texts()[-1] == "talk about dogs instead"
    assert seen.text() == "I am writing a long answer about cats.Dogs, then."
    steered = [u["content"]["text"] for u in seen.updates("user_message_chunk")]
    assert steered == ["talk about dogs instead"]


async def test_follow_up_runs_inside_the_prompt_before_it_returns(make_driver, fake_llm):
    gate = asyncio.Event()
    fake_llm.script(Reply.say("First answer.", gate=gate), Reply.say("Follow-up answer."))
    driver, seen = await make_driver()

    running = asyncio.create_task(driver.prompt([{"type": "text", "text": "first"}]))
    await fake_llm.wait_for_requests(1)
    await driver.follow_up([{"type": "text", "text": "and then this"}])
    gate.set()

    assert await asyncio.wait_for(running, WAIT) == END_TURN
    assert seen.text() == "First answer.Follow-up answer."
    assert len(fake_llm.main_requests) == 2


async def test_steer_or_follow_up_after_the_run_settled_is_refused_not_stranded(make_driver, fake_llm):
    driver, _ = await make_driver()
    assert await driver.prompt([{"type": "text", "text": "quick"}]) == END_TURN

    assert await driver.steer([{"type": "text", "text": "too late"}]) is False
    with pytest.raises(NotSupported):
        await driver.follow_up([{"type": "text", "text": "also too late"}])
    assert await driver.prompt([{"type": "text", "text": "next"}]) == END_TURN
    assert fake_llm.main_requests[-1].user_texts() == ["quick", "next"]


async def test_cancel_while_the_model_hangs_returns_cancelled_and_drops_queued_follow_ups(make_driver, fake_llm):
    fake_llm.script(Reply.hang(), Reply.say("After the abort."))
    driver, _ = await make_driver()

    running = asyncio.create_task(driver.prompt([{"type": "text", "text": "hang please"}]))
    await fake_llm.wait_for_requests(1)
    await driver.follow_up([{"type": "text", "text": "queued behind the hang"}])
    await driver.cancel()

    assert await asyncio.wait_for(running, WAIT) == CANCELLED
    assert await driver.prompt([{"type": "text", "text": "again"}]) == END_TURN
    assert "queued behind the hang" not in fake_llm.main_requests[-1].user_texts()


async def test_pi_killed_mid_prompt_raises_crashed_and_reports_the_exit(make_driver, fake_llm):
    fake_llm.script(Reply.hang())
    driver, seen = await make_driver()
    running = asyncio.create_task(driver.prompt([{"type": "text", "text": "hang"}]))
    await fake_llm.wait_for_requests(1)

    assert driver._process is not None
    os.kill(driver._process.pid, signal.SIGKILL)

    with pytest.raises(AgentCrashed):
        await asyncio.wait_for(running, WAIT)
    assert not driver.alive
    assert seen.exits == [-signal.SIGKILL]
    with pytest.raises(AgentCrashed):
        await driver.prompt([{"type": "text", "text": "anyone?"}])


async def test_a_resumed_session_remembers_the_conversation(make_driver, fake_llm):
    first, _ = await make_driver()
    await first.prompt([{"type": "text", "text": "remember the word zebra"}])
    session_id = first.session_id
    await first.stop()

    second, _ = await make_driver(resume=session_id)
    assert second.session_id == session_id
    await second.prompt([{"type": "text", "text": "which word?"}])
    assert fake_llm.main_requests[-1].user_texts() == ["remember the word zebra", "which word?"]


async def test_new_session_forgets_the_conversation(make_driver, fake_llm):
    driver, _ = await make_driver()
    await driver.prompt([{"type": "text", "text": "old conversation"}])
    old = driver.session_id

    new = await driver.new_session()
    await driver.prompt([{"type": "text", "text": "fresh start"}])

    assert new != old and driver.session_id == new
    assert fake_llm.main_requests[-1].user_texts() == ["fresh start"]


async def test_a_pi_that_exits_at_start_fails_fast_with_its_stderr(real_agents):
    # e.g. an operator's AGENTS_CONFIG passes pi a flag it does not know: pi prints why and exits
    spec = AgentSpec("pi-custom", ("pi", "--mode", "rpc", "--no-such-flag"), "pi-rpc")
    settings = Settings(acp_init_timeout=WAIT, acp_stop_grace_period=1.0)
    exits: list[int | None] = []
    driver = PiRpcDriver(spec, Launch(HostPlacement(str(real_agents.workdir)), env=real_agents.env), settings,
                         lambda m, raw=None: None, on_exit=exits.append)

    async with asyncio.timeout(WAIT / 2):  # at once, not after ACP_INIT_TIMEOUT
        with pytest.raises(AgentStartError, match="Unknown option: --no-such-flag"):
            await driver.start()
    assert not driver.alive and exits == [1]
