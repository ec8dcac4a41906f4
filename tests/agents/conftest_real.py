"""Fixtures for tests that run the REAL coding agents (pi, claude-agent-acp) against the fake LLM.

Import what a module needs (`from tests.agents.conftest_real import fake_llm, real_agents`).
The agents come from `scripts/install-agents.sh`: its bin directory is found through
VM_AGENT_AGENT_PATH (what the installer's env.sh exports) or at <repo>/agent-runtimes. When they
are missing the tests skip with the install command, unless VM_AGENT_REQUIRE_AGENTS=1 (CI),
which turns the skip into a failure so a broken install cannot pass as "skipped".

Each test gets its own HOME holding the agents' configuration, pointed at its own fake LLM:
- pi: `~/.pi/agent/models.json` (a custom provider `fake` with the fake's URL and api),
  `~/.pi/agent/settings.json` (that provider as default, provider-level retries off so faults
  reach pi's own retry, quick retry backoff); PI_OFFLINE=1 stops its network checks.
- Claude Code: ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY, also written into `~/.claude/settings.json`
  `env`, which overrides the process environment; IS_SANDBOX=1 (it refuses to run as root
  otherwise) and CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.fake_llm import FakeLLM

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "install them with: bash scripts/install-agents.sh"
PI_API_OPENAI = "openai-completions"
PI_API_ANTHROPIC = "anthropic-messages"
PI_MODEL = "fake/fake-model"


def agent_bin_dir() -> Path | None:
    """The directory holding pi, claude-agent-acp and their node, or None."""
    candidates = [p for p in os.environ.get("VM_AGENT_AGENT_PATH", "").split(os.pathsep) if p]
    candidates.append(str(REPO / "agent-runtimes" / "node_modules" / ".bin"))
    for directory in candidates:
        if (Path(directory) / "pi").exists() and (Path(directory) / "claude-agent-acp").exists():
            return Path(directory)
    return None


def require_agents() -> Path:
    """The agents' bin directory; skips the test (fails under VM_AGENT_REQUIRE_AGENTS=1) without it."""
    found = agent_bin_dir()
    if found is None or not (found / "node").exists():
        reason = f"real coding agents are not installed; {INSTALL_HINT}"
        if os.environ.get("VM_AGENT_REQUIRE_AGENTS") == "1":
            pytest.fail(reason + " (VM_AGENT_REQUIRE_AGENTS=1)", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass
class RealAgents:
    """Where the agents are and the environment that points them at the fake LLM."""

    bin_dir: Path
    home: Path
    workdir: Path
    llm: FakeLLM
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """PATH with the agents (and their Node 22) first."""
        return f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"

    def configure_pi(self, api: str = PI_API_OPENAI, **settings: object) -> None:
        """(Re)write pi's provider and settings; `api` picks the wire protocol pi speaks."""
        agent_dir = self.home / ".pi" / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        base_url = self.llm.openai_base_url if api == PI_API_OPENAI else self.llm.anthropic_base_url
        models = {"providers": {"fake": {"baseUrl": base_url, "api": api, "apiKey": "fake-key",
                                         "models": [{"id": "fake-model", "reasoning": True}]}}}
        (agent_dir / "models.json").write_text(json.dumps(models, indent=2))
        config: dict[str, object] = {
            "defaultProvider": "fake", "defaultModel": "fake-model",
            "retry": {"enabled": True, "maxRetries": 3, "baseDelayMs": 50, "provider": {"maxRetries": 0}},
        }
        config.update(settings)
        (agent_dir / "settings.json").write_text(json.dumps(config, indent=2))

    def configure_claude(self) -> None:
        claude_dir = self.home / ".claude"
        claude_dir.mkdir(parents=True, exist_ok=True)
        env = {"ANTHROPIC_BASE_URL": self.llm.anthropic_base_url, "ANTHROPIC_API_KEY": "fake-key"}
        (claude_dir / "settings.json").write_text(json.dumps({"env": env}, indent=2))


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    llm = await FakeLLM().start()
    yield llm
    await llm.close()


@pytest.fixture
def real_agents(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[RealAgents]:
    """The installed agents, configured in a fresh HOME for this test's fake LLM."""
    bin_dir = require_agents()
    home = tmp_path / "home"
    workdir = tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    agents = RealAgents(bin_dir, home, workdir, fake_llm)
    agents.configure_pi()
    agents.configure_claude()
    agents.env = {
        "HOME": str(home),
        "PATH": agents.path,
        "PI_OFFLINE": "1",
        "PI_SKIP_VERSION_CHECK": "1",
        "PI_TELEMETRY": "0",
        "ANTHROPIC_BASE_URL": fake_llm.anthropic_base_url,
        "ANTHROPIC_API_KEY": "fake-key",
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_ENABLE_PROMPT_SUGGESTION": "false",
    }
    yield agents
    shutil.rmtree(home / ".pi" / "agent" / "sessions", ignore_errors=True)


@pytest.fixture
def real_agents_in_env(real_agents: RealAgents, monkeypatch: pytest.MonkeyPatch) -> RealAgents:
    """Also put that environment into this process, for an in-process daemon: agent processes
    inherit HOME, PATH and the variables their type passes through from the daemon."""
    for name, value in real_agents.env.items():
        monkeypatch.setenv(name, value)
    return real_agents


def daemon_env(agents: RealAgents, **overrides: str) -> dict[str, str]:
    """Settings for `make_daemon` that run real agents in `agents.workdir`, retrying fast."""
    return {
        "VM_AGENT_AGENT_PATH": str(agents.bin_dir),
        "HOST_WORKSPACE_DIR": str(agents.workdir),
        "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "0.05s",
        "ACP_PROMPT_RETRY_MAX_BACKOFF": "0.2s",
        "ACP_STOP_GRACE_PERIOD": "1s",
        **overrides,
    }


# ------------------------------------------------------------------ helpers for daemon-level tests
async def start_session(daemon: Any, session_id: str, agent: str = "pi", **body: Any) -> None:
    async with daemon.client() as client:
        resp = await client.post(f"{daemon.url}/workspaces/host/agent-sessions",
                                 json={"sessionId": session_id, "agentType": agent, **body},
                                 headers=daemon.auth_headers("management", "host"))
        assert resp.status in (200, 201), await resp.text()


def updates(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found = [m["params"]["update"] for m in messages if m.get("method") == "session/update"]
    return [u for u in found if u.get("sessionUpdate") == kind]


def history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "seq" in m]
