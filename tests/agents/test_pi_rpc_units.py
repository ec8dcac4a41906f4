"""The pi driver's parts that real pi cannot exercise on demand.

Completion with a pi that predates `agent_settled` (tests/fakes/fake_old_pi.py): the driver must
not end a prompt at an `agent_end` that pi follows with an automatic retry. And the translation
details: prompt content, and tool progress that would otherwise flood the history."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from vm_agent.agents.driver import END_TURN, Launch
from vm_agent.agents.pi_events import PiEventTranslator, to_pi_message
from vm_agent.agents.pi_rpc import PiRpcDriver
from vm_agent.agents.registry import AgentSpec
from vm_agent.config import Settings
from vm_agent.workspaces.placement import HostPlacement

OLD_PI = Path(__file__).resolve().parents[1] / "fakes" / "fake_old_pi.py"


async def start_old_pi(tmp_path: Path, seen: list[dict[str, Any]],
                       delivered: asyncio.Event | None = None) -> PiRpcDriver:
    def emit(message: dict[str, Any], raw: str | None = None) -> None:
        seen.append(message)
        if delivered is not None:
            delivered.set()

    spec = AgentSpec("old-pi", (sys.executable, str(OLD_PI)), "pi-rpc")
    settings = Settings(acp_init_timeout=10.0, acp_rpc_timeout=10.0, acp_prompt_timeout=20.0,
                        acp_stop_grace_period=1.0)
    driver = PiRpcDriver(spec, Launch(HostPlacement(str(tmp_path))), settings, emit)
    await driver.start()
    return driver


def texts(seen: list[dict[str, Any]]) -> list[str]:
    updates = [m["params"]["update"] for m in seen if m.get("method") == "session/update"]
    return [u["content"]["text"] for u in updates if u["sessionUpdate"] == "agent_message_chunk"]


async def test_a_run_without_agent_settled_ends_at_the_get_state_barrier(tmp_path):
    seen: list[dict[str, Any]] = []
    driver = await start_old_pi(tmp_path, seen)
    try:
        assert await driver.prompt([{"type": "text", "text": "hello"}]) == END_TURN
        assert await driver.prompt([{"type": "text", "text": "again"}]) == END_TURN
        assert texts(seen) == ["ok", "ok"]
    finally:
        await driver.stop()


async def test_an_agent_end_followed_by_auto_retry_does_not_end_the_prompt(tmp_path):
    seen: list[dict[str, Any]] = []
    driver = await start_old_pi(tmp_path, seen)
    try:
        assert await driver.prompt([{"type": "text", "text": "retry"}]) == END_TURN
        # returned only after the retried run: its text and the retry events were delivered
        assert texts(seen) == ["recovered"]
        assert [m["method"] for m in seen if m["method"].startswith("_pi/")] == \
            ["_pi/auto_retry_start", "_pi/auto_retry_end"]
    finally:
        await driver.stop()


async def test_a_follow_up_that_lands_as_pi_settles_still_runs_within_the_same_prompt(tmp_path):
    seen: list[dict[str, Any]] = []
    delivered = asyncio.Event()
    driver = await start_old_pi(tmp_path, seen, delivered)
    try:
        running = asyncio.create_task(driver.prompt([{"type": "text", "text": "settle-with-queue"}]))
        await asyncio.wait_for(delivered.wait(), 10)  # "working": the run is open
        assert texts(seen) == ["working"]
        await driver.follow_up([{"type": "text", "text": "late follow-up"}])

        assert await asyncio.wait_for(running, 10) == END_TURN
        updates = [m["params"]["update"] for m in seen if m.get("method") == "session/update"]
        user = [u["content"]["text"] for u in updates if u["sessionUpdate"] == "user_message_chunk"]
        assert user == ["late follow-up"]  # viewers see pi take it, then its answer
        assert texts(seen) == ["working", "ok"]
    finally:
        await driver.stop()


def test_acp_content_becomes_pi_text_and_images():
    text, images = to_pi_message([
        {"type": "text", "text": "look at"},
        {"type": "image", "data": "aGk=", "mimeType": "image/png"},
        {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "contents"}},
        {"type": "resource_link", "uri": "file:///b.txt", "name": "b"},
    ])
    assert text == "look at\n\nfile:///a.txt:\ncontents\n\n@file:///b.txt"
    assert images == [{"type": "image", "data": "aGk=", "mimeType": "image/png"}]


def test_a_noisy_tool_reaches_viewers_at_most_once_a_second_and_its_result_always():
    now = [0.0]
    translator = PiEventTranslator(clock=lambda: now[0])
    relayed = []
    for i in range(25):  # pi's bash: a growing snapshot every 100 ms
        now[0] = i * 0.1
        relayed += translator.translate({"type": "tool_execution_update", "toolCallId": "c1", "partialResult": {
            "content": [{"type": "text", "text": "line\n" * (i + 1)}]}})
    end = translator.translate({"type": "tool_execution_end", "toolCallId": "c1", "isError": False,
                                "result": {"content": [{"type": "text", "text": "line\n" * 25}]}})

    assert len(relayed) == 3  # at 0 s, 1 s, 2 s
    final = end[0]["params"]["update"]
    assert final["status"] == "completed" and final["content"][0]["content"]["text"] == "line\n" * 25
