"""The ACP driver on its own, against the fake agent: ordering when handlers are slow, and its contract."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import FAKE_AGENT
from vm_agent.agents.acp_driver import AcpDriver
from vm_agent.agents.driver import AgentCrashed, AgentStartError, Launch, TransientProviderError
from vm_agent.agents.permissions import auto_outcome, deny_outcome, valid_answer
from vm_agent.agents.redact import redact
from vm_agent.agents.registry import AgentSpec, RegistryError, load_agents_file
from vm_agent.config import Settings
from vm_agent.workspaces.placement import HostPlacement


def make_driver(tmp_path: Path, emit: Any, **settings: str) -> AcpDriver:
    spec = AgentSpec("fake", (sys.executable, str(FAKE_AGENT)), env={"FAKE_ACP_STATE": str(tmp_path)})
    config = Settings.from_env({"VM_AGENT_STATE_DIR": str(tmp_path), **settings})
    return AcpDriver(spec, Launch(HostPlacement(str(tmp_path))), config, emit)


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["params"]["update"]["content"]["text"] for m in messages
            if m.get("method") == "session/update" and m["params"]["update"]["sessionUpdate"] == "agent_message_chunk"]


async def test_handlers_that_await_never_reorder_chunks(tmp_path):
    """The failure mode of a task-per-notification client: awaiting handlers shuffle tokens."""
    seen: list[dict[str, Any]] = []

    def emit(message: dict[str, Any], raw: str | None) -> Any:
        seen.append(message)
        return asyncio.sleep(random.random() / 1000)

    driver = make_driver(tmp_path, emit)
    await driver.start()
    try:
        assert await driver.prompt([{"type": "text", "text": "chunks 200"}]) == "end_turn"
        assert texts(seen) == [f"c{i} " for i in range(200)]  # all delivered before prompt() returned
    finally:
        await driver.stop()


async def test_a_stuck_handler_is_bounded_by_the_serialize_timeout(tmp_path):
    seen: list[str] = []
    stuck = asyncio.get_running_loop().create_future()

    def emit(message: dict[str, Any], raw: str | None) -> Any:
        seen.extend(texts([message]))
        return stuck if texts([message]) == ["c0 "] else None

    driver = make_driver(tmp_path, emit, ACP_NOTIF_SERIALIZE_TIMEOUT="0.2s")
    await driver.start()
    try:
        assert await driver.prompt([{"type": "text", "text": "chunks 3"}]) == "end_turn"
        assert seen == ["c0 ", "c1 ", "c2 "]
    finally:
        await driver.stop()


async def test_prompt_errors_are_classified(tmp_path):
    driver = make_driver(tmp_path, lambda m, r: None)
    await driver.start()
    try:
        with pytest.raises(TransientProviderError):
            await driver.prompt([{"type": "text", "text": "transient 1"}])
        with pytest.raises(AgentCrashed) as crash:
            await driver.prompt([{"type": "text", "text": "crash"}])
        assert crash.value.returncode == 3 and "ANTHROPIC_API_KEY" in crash.value.stderr
        assert not driver.alive
    finally:
        await driver.stop()


async def test_load_of_an_unknown_conversation_falls_back_to_a_new_one(tmp_path):
    driver = make_driver(tmp_path, lambda m, r: None)
    session_id = await driver.start(resume_session_id="fake-doesnotexist")
    try:
        assert session_id != "fake-doesnotexist" and driver.capabilities.supports_load
    finally:
        await driver.stop()


async def test_missing_binary_is_a_start_error_with_the_install_hint(tmp_path):
    spec = AgentSpec("ghost", ("/nonexistent/ghost-agent",), install_hint="npm i -g ghost")
    driver = AcpDriver(spec, Launch(HostPlacement(str(tmp_path))),
                       Settings.from_env({"VM_AGENT_STATE_DIR": str(tmp_path)}), lambda m, r: None)
    with pytest.raises(AgentStartError, match="npm i -g ghost"):
        await driver.start()


def test_operator_agents_file_is_validated(tmp_path):
    good = tmp_path / "agents.json"
    good.write_text('{"agents": {"mine": {"command": "my-acp", "args": ["--stdio"], "envPassthrough": ["MY_*"]}}}')
    (spec,) = load_agents_file(str(good))
    assert spec.argv == ("my-acp", "--stdio") and spec.protocol == "acp"
    env, secret = spec.environment({"PATH": "/bin", "MY_API_KEY": "k", "MY_MODE": "x", "OTHER": "no"})
    assert env == {"PATH": "/bin", "MY_MODE": "x"} and secret == {"MY_API_KEY": "k"}
    bad = tmp_path / "bad.json"
    bad.write_text('{"agents": {"x": {"command": [], "protocol": "carrier-pigeon"}}}')
    with pytest.raises(RegistryError):
        load_agents_file(str(bad))


def test_permission_outcomes_and_redaction():
    options = [{"optionId": "a", "kind": "allow_once"}, {"optionId": "r", "kind": "reject_once"}]
    assert auto_outcome(options) == {"outcome": {"outcome": "selected", "optionId": "a"}}
    assert deny_outcome(options) == {"outcome": {"outcome": "selected", "optionId": "r"}}
    assert valid_answer(options, {"optionId": "zzz"}) is None
    text = "OPENAI_API_KEY=sk-proj-abcdefgh12345 and Authorization: Bearer eyJhbGciOi.abcdefghij.klmnopqrst"
    cleaned = redact(text, ["hunter22"])
    assert "sk-proj" not in cleaned and "eyJhbGciOi" not in cleaned
    assert redact("password is hunter22", ["hunter22"]) == "password is [REDACTED]"
