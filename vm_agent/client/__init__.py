"""The coordinator client: an async library and the `vmagent` CLI.

Needs only aiohttp; imports nothing from the daemon, so it can be installed on a laptop or a
coordinator VM that runs no daemon.
"""

from vm_agent.client.api import AgentClient
from vm_agent.client.errors import (
    AgentError,
    ApiError,
    AuthError,
    ClientError,
    ConfigError,
    ConflictError,
    ConnectionFailed,
    ForbiddenError,
    NotFoundError,
    ProtocolError,
    RequestTimeout,
    TlsError,
    UnavailableError,
)
from vm_agent.client.events import Event, EventStream
from vm_agent.client.prompts import RunResult, SentPrompt
from vm_agent.client.settling import is_idle
from vm_agent.client.swarm import AgentRun, AgentStatus, Swarm
from vm_agent.client.terminals import RemoteTerminal, TerminalError, TerminalOutput
from vm_agent.client.tls import TlsConfig, fetch_fingerprint

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentRun",
    "AgentStatus",
    "ApiError",
    "AuthError",
    "ClientError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailed",
    "Event",
    "EventStream",
    "ForbiddenError",
    "NotFoundError",
    "ProtocolError",
    "RemoteTerminal",
    "RequestTimeout",
    "RunResult",
    "SentPrompt",
    "Swarm",
    "TerminalError",
    "TerminalOutput",
    "TlsConfig",
    "TlsError",
    "UnavailableError",
    "fetch_fingerprint",
    "is_idle",
]
