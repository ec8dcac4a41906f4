"""Agent types: which command runs an agent, which protocol it speaks, which environment it gets.

Built-in defaults cover the agents the platform ships with; an operator adds or overrides types
with a JSON file (`AGENTS_CONFIG`), e.g.

    {"agents": {"my-agent": {"command": ["my-acp", "--stdio"], "protocol": "acp",
                             "env": {"FOO": "1"}, "envPassthrough": ["MY_API_KEY", "MY_*"],
                             "installHint": "npm i -g my-acp"}}}

Agents do not inherit the daemon's environment (it holds the callback token): they get a small
base (PATH, HOME, locale, ...), the variables their type passes through, and fixed values.
Passed-through variables whose names look secret travel as `secret_env`, which placements keep
out of argv.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("acp", "pi-rpc")
DEFAULT_AGENT_TYPE = "pi"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
            "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY",
            "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "XDG_CONFIG_HOME", "XDG_DATA_HOME")


class RegistryError(ValueError):
    """The operator's agents file is unreadable or describes an invalid agent type."""


class UnknownAgentType(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = sorted(known)

    def __str__(self) -> str:
        return f"unknown agent type {self.name!r} (known: {', '.join(self.known)})"


@dataclass(frozen=True)
class AgentSpec:
    """One agent type. `argv[0]` is looked up on PATH inside the workspace."""

    name: str
    argv: tuple[str, ...]
    protocol: str = "acp"
    env: Mapping[str, str] = field(default_factory=dict)
    env_passthrough: tuple[str, ...] = ()
    install_hint: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise RegistryError(f"agent type name {self.name!r} is not 1-64 chars of [A-Za-z0-9._-]")
        if not self.argv or not all(isinstance(a, str) and a for a in self.argv):
            raise RegistryError(f"agent type {self.name!r}: command must be a non-empty list of strings")
        if self.protocol not in PROTOCOLS:
            raise RegistryError(f"agent type {self.name!r}: protocol must be one of {PROTOCOLS}")

    def environment(self, environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(env, secret_env) for a launch of this agent, taken from `environ` (the daemon's)."""
        environ = os.environ if environ is None else environ
        env = {k: environ[k] for k in BASE_ENV if k in environ}
        secret: dict[str, str] = {}
        for name, value in environ.items():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.env_passthrough):
                (secret if _SECRET_NAME.search(name) else env)[name] = value
        for name, value in self.env.items():
            (secret if _SECRET_NAME.search(name) else env)[name] = value
            if name in secret:
                env.pop(name, None)
        return env, secret


_PROVIDER_ENV = ("ANTHROPIC_*", "OPENAI_*", "GEMINI_*", "GOOGLE_*", "OPENROUTER_*", "GROQ_*",
                 "MISTRAL_*", "XAI_*", "AWS_*", "AZURE_*")

BUILTINS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "pi", ("pi", "--mode", "rpc"), "pi-rpc",
        env_passthrough=(*_PROVIDER_ENV, "PI_*"),
        install_hint="npm install -g @earendil-works/pi-coding-agent (Node >= 22.19)",
        description="pi coding agent, its own RPC mode (native steer and follow-up)",
    ),
    AgentSpec(
        "claude-code", ("claude-agent-acp",), "acp",
        # Claude Code refuses to run as root unless told it is sandboxed (a VM is its sandbox)
        env={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", **({"IS_SANDBOX": "1"} if os.geteuid() == 0 else {})},
        env_passthrough=("ANTHROPIC_*", "CLAUDE_*", "IS_SANDBOX", "AWS_*", "DISABLE_*"),
        install_hint="npm install -g @agentclientprotocol/claude-agent-acp (Node 22)",
        description="Claude Code through its ACP adapter",
    ),
    AgentSpec(
        "pi-acp", ("pi-acp",), "acp",
        env_passthrough=(*_PROVIDER_ENV, "PI_*"),
        install_hint="npm install -g pi-acp",
        description="pi through an ACP adapter",
    ),
    AgentSpec(
        "openai-codex", ("codex-acp",), "acp",
        env_passthrough=("OPENAI_*", "CODEX_*"),
        install_hint="npm install -g @zed-industries/codex-acp",
        description="OpenAI Codex through its ACP adapter",
    ),
    AgentSpec(
        "google-gemini", ("gemini", "--acp"), "acp",
        env_passthrough=("GEMINI_*", "GOOGLE_*"),
        install_hint="npm install -g @google/gemini-cli",
        description="Gemini CLI in ACP mode",
    ),
)


class AgentRegistry:
    """Agent types by name: built-ins, then the operator's file, then anything registered at run time."""

    def __init__(self, specs: Iterable[AgentSpec] = BUILTINS) -> None:
        self._specs: dict[str, AgentSpec] = {}
        for spec in specs:
            self.register(spec)

    @classmethod
    def from_file(cls, path: str | None) -> AgentRegistry:
        registry = cls()
        if path:
            for spec in load_agents_file(path):
                registry.register(spec)
        return registry

    def register(self, spec: AgentSpec) -> None:
        """Add or replace an agent type (tests register the fake ACP agent this way)."""
        self._specs[spec.name] = spec

    def get(self, name: str) -> AgentSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownAgentType(name, self._specs) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)


def load_agents_file(path: str) -> list[AgentSpec]:
    """Parse the operator's JSON agents file; raises RegistryError with the reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read AGENTS_CONFIG {path}: {exc}") from exc
    agents = data.get("agents", data) if isinstance(data, dict) else None
    if not isinstance(agents, dict):
        raise RegistryError(f"AGENTS_CONFIG {path}: expected an object of agent types")
    return [spec_from_json(name, body) for name, body in agents.items()]


def spec_from_json(name: str, body: Any) -> AgentSpec:
    if not isinstance(body, dict):
        raise RegistryError(f"agent type {name!r}: expected an object")
    command = body.get("command")
    if isinstance(command, str):
        command = [command]
    args = body.get("args", [])
    if not isinstance(command, list) or not isinstance(args, list):
        raise RegistryError(f"agent type {name!r}: command must be a string or list, args a list")
    env = body.get("env", {})
    passthrough = body.get("envPassthrough", [])
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise RegistryError(f"agent type {name!r}: env must map names to strings")
    if not isinstance(passthrough, list) or not all(isinstance(v, str) for v in passthrough):
        raise RegistryError(f"agent type {name!r}: envPassthrough must be a list of names")
    return AgentSpec(
        name=name,
        argv=tuple([*command, *args]),
        protocol=body.get("protocol", "acp"),
        env=dict(env),
        env_passthrough=tuple(passthrough),
        install_hint=str(body.get("installHint", "")),
        description=str(body.get("description", "")),
    )
