"""The interface every agent protocol driver implements (ACP: acp_driver.py, pi RPC: pi_rpc.py).

An `AgentSession` (session.py) owns exactly one driver at a time and talks only to this
interface, so the session's state machine, queue, retry and recovery logic never learns which
wire protocol runs underneath. A driver owns one agent process (spawned with
`vm_agent.agents.process.AgentProcess.spawn(spec, launch, settings)`) and the protocol spoken on
its stdin/stdout.

Ordering contract (PROTOCOL.md §5.2) — the reason this interface looks the way it does:

* A driver has exactly ONE reader task per process. It reads a line, parses it, and for every
  message a viewer must see (ACP `session/update` notifications as the agent sent them, pi
  events translated into the same `session/update` shape, `_`-prefixed extension
  notifications, unknown update kinds) it calls `await self.deliver(message)` BEFORE reading
  the next line. `deliver` calls the session's `emit`, which appends the message to the
  session's event log with the next sequence number. Two viewers therefore see every token in
  the same order the agent wrote it.
* `emit` is synchronous and cheap (serialize + append). If it ever returns an awaitable,
  `deliver` waits for it at most `settings.acp_notif_serialize_timeout` and then logs and moves
  on, so a stuck handler can never wedge the agent.
* Anything slow that a message triggers (answering a permission request, which may wait for a
  human) is handed off to its own task; the reader never awaits an RPC answer inline.
* Every update of a turn is delivered before `prompt()` returns: the reader resolves the prompt's
  future only after it has delivered everything read before the answer line.

Methods other than the reader are called by the session's single control task, never
concurrently with each other, except `cancel()` and `steer()` which are called while `prompt()`
is awaiting (that is their purpose).
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from vm_agent.config import Settings

if TYPE_CHECKING:
    from vm_agent.agents.registry import AgentSpec
    from vm_agent.workspaces.placement import Placement

log = structlog.get_logger("vm_agent.agents.driver")

ContentBlocks = list[dict[str, Any]]
"""ACP ContentBlocks, e.g. [{"type": "text", "text": "hello"}]."""

Emit = Callable[[dict[str, Any], "bytes | str | None"], "Awaitable[None] | None"]
"""emit(message, raw): `raw` is the message's JSON text exactly as read (UTF-8 bytes or str; lets
the session splice in `seq` instead of re-serializing), or None when the driver built the message."""
RequestPermission = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Called FROM THE READER TASK with `session/request_permission` params. It does its ordered work
(emitting `permission/request` to viewers) synchronously and returns an awaitable of the result
({"outcome": {...}}), which the driver awaits in a separate task, never in the reader."""
OnExit = Callable[["int | None"], None]

# ACP stop reasons (session/prompt result) plus ours.
END_TURN = "end_turn"
CANCELLED = "cancelled"
MAX_TOKENS = "max_tokens"
REFUSAL = "refusal"


_TRANSIENT = re.compile(
    r"\b(429|500|502|503|504|529)\b|overload|rate[ _-]?limit|too many requests|econnreset|"
    r"connection (reset|closed|error|refused)|socket hang up|terminated|premature close|"
    r"internal server error|service unavailable|bad gateway|gateway timeout|temporarily unavailable",
    re.IGNORECASE,
)


def looks_transient(*texts: Any) -> bool:
    """Whether an error text (message, code, data) describes a retryable provider failure."""
    return any(text is not None and _TRANSIENT.search(str(text)) for text in texts)


class AgentError(Exception):
    """Base of everything a driver raises."""


class AgentStartError(AgentError):
    """The agent could not be spawned or the handshake failed (binary missing, init timeout)."""


class TransientProviderError(AgentError):
    """The model provider failed in a way worth retrying (429, 5xx, 529 overloaded, rate limit,
    connection reset mid-stream). The session retries with backoff; the process is still alive."""


class AgentCrashed(AgentError):
    """The agent process died (or closed stdout) while it was needed."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class PromptFailed(AgentError):
    """The agent answered the prompt with a non-retryable error (JSON-RPC error or pi failure)."""

    def __init__(self, message: str, code: int = -32603, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class NotSupported(AgentError):
    """The agent does not offer this operation (e.g. set_mode on pi)."""


@dataclass(frozen=True)
class Launch:
    """Where and how to run the agent process; built by the gateway, consumed by the driver.

    `placement.wrap(spec.argv, tty=False, env=env, secret_env=secret_env, cwd=cwd)` gives the
    Command; AgentProcess.spawn does that for you.
    """

    placement: Placement
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    model: str | None = None
    permission_mode: str | None = None
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Capabilities:
    """What the running agent offers; read by the session after `start()` returns."""

    supports_load: bool = False
    """`start(resume_session_id=...)` can reload a previous conversation (ACP loadSession; pi: yes)."""
    supports_steer: bool = False
    """`steer()` redirects the running prompt natively (pi `steer`, ACP `_session/steering`).
    When False the session cancels the running prompt and runs the steer message first."""
    supports_follow_up: bool = False
    """`follow_up()` hands a message to the agent to run after the current turn, and the running
    `prompt()` returns only after it ran. When False the session queues follow-ups itself and
    runs each as its own prompt (its own completion)."""
    supports_new_session: bool = True
    """`new_session()` works in the same process; when False the session restarts the process."""


class AgentDriver(abc.ABC):
    """One agent process and its protocol. Subclasses: AcpDriver (acp_driver.py), PiRpcDriver (pi_rpc.py)."""

    protocol: str = ""

    def __init__(
        self,
        spec: AgentSpec,
        launch: Launch,
        settings: Settings,
        emit: Emit,
        *,
        request_permission: RequestPermission | None = None,
        on_exit: OnExit | None = None,
    ) -> None:
        """`emit(message, raw)`: called in order by the reader task for every viewer-visible message.
        `request_permission(params)`: ACP `session/request_permission` params → the result
        object to answer with ({"outcome": {...}}); the driver awaits it in a separate task.
        `on_exit(returncode)`: called once when the process ends for any reason, including
        between prompts (the session uses it to notice idle crashes)."""
        self.spec = spec
        self.launch = launch
        self.settings = settings
        self._emit = emit
        self._request_permission = request_permission
        self._on_exit = on_exit
        self.capabilities = Capabilities()
        self.session_id: str | None = None
        """The agent's own conversation id (ACP sessionId / pi session file id); persisted so a
        daemon restart can reload the conversation."""
        self.usage: dict[str, Any] = {}
        """Latest token/cost usage the agent reported, for get_state (free-form)."""

    # --- ordering helper for the reader task -------------------------------------------------

    async def deliver(self, message: dict[str, Any], raw: bytes | str | None = None) -> None:
        """Hand one viewer-visible message to the session, in order. Never raises.

        `raw`: the JSON text of `message` as the agent wrote it, if it is forwarded unchanged."""
        pending = self.deliver_nowait(message, raw)
        if pending is not None:
            await pending

    def deliver_nowait(self, message: dict[str, Any], raw: bytes | str | None = None) -> Awaitable[None] | None:
        """`deliver` for hot loops: emits now and returns None, or returns what the reader must
        await (a handler that wants to wait, bounded by ACP_NOTIF_SERIALIZE_TIMEOUT) before it
        reads the next line. Saves a coroutine per message when nothing waits (the usual case)."""
        try:
            result = self._emit(message, raw)
        except Exception:
            log.exception("notification_handler_failed", agent=self.spec.name)
            return None
        # emit returns the message's seq (an int); only something else can be awaitable
        if result is None or result.__class__ is int or not inspect.isawaitable(result):
            return None
        return self._bounded(result)

    async def _bounded(self, pending: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self.settings.acp_notif_serialize_timeout):
                await pending
        except TimeoutError:
            log.warning("notification_handler_slow", agent=self.spec.name,
                        timeout=self.settings.acp_notif_serialize_timeout)
        except Exception:
            log.exception("notification_handler_failed", agent=self.spec.name)

    def _exited(self, returncode: int | None) -> None:
        """Subclasses call this exactly once when the process is gone."""
        if self._on_exit is not None:
            callback, self._on_exit = self._on_exit, None
            try:
                callback(returncode)
            except Exception:
                log.exception("on_exit_failed", agent=self.spec.name)

    # --- lifecycle ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, resume_session_id: str | None = None) -> str:
        """Spawn the process and do the handshake; create a new conversation, or reload
        `resume_session_id` (history replayed by the agent during the load is NOT emitted: the
        viewers' log already has it or it is an old conversation). Returns the agent session id
        (also stored in `self.session_id`). Raises AgentStartError; on failure, and when the
        start is cancelled (a stop or close meanwhile), the process is already stopped."""

    @abc.abstractmethod
    async def prompt(self, content: ContentBlocks) -> str:
        """Run one turn and return its stop reason (END_TURN, CANCELLED, MAX_TOKENS, ...).

        All updates of the turn have been emitted when this returns. Raises
        TransientProviderError (retryable provider failure), AgentCrashed (process died),
        PromptFailed (any other error answer). Bounded by settings.acp_prompt_timeout."""

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Ask the agent to stop the running turn; the pending `prompt()` then returns CANCELLED
        (or whatever the agent says). Harmless when nothing runs."""

    async def steer(self, content: ContentBlocks) -> bool:
        """Put `content` into the running turn (only if capabilities.supports_steer).

        True: the agent took it and the running `prompt()` still completes once, at the real end.
        False: no turn was running any more (e.g. it settled just now); the session then runs
        `content` as an ordinary prompt."""
        raise NotSupported("steering is not supported by this agent")

    async def follow_up(self, content: ContentBlocks) -> None:
        """Queue `content` inside the agent after the running turn (capabilities.supports_follow_up)."""
        raise NotSupported("follow-ups are queued by the gateway for this agent")

    @abc.abstractmethod
    async def new_session(self) -> str:
        """End the conversation and start a fresh one in the same process; returns its id."""

    async def set_mode(self, mode_id: str) -> None:
        raise NotSupported("this agent has no modes")

    async def set_model(self, model: str) -> None:
        raise NotSupported("this agent cannot switch models")

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the process (cancel what runs, close stdin, TERM, KILL after the grace period).
        The cancel is best effort and bounded: a hung agent is stopped all the same.
        Idempotent; pending `prompt()` calls raise AgentCrashed."""

    @property
    def pid(self) -> int | None:
        """The agent process id (for get_state and operators), when known."""
        return None

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the process runs."""

    @abc.abstractmethod
    def stderr_tail(self) -> str:
        """The last bytes the agent wrote to stderr (bounded by ACP_STDERR_BUFFER_BYTES), decoded.
        Not redacted: the session redacts before showing it."""


async def stop_quietly(driver: AgentDriver) -> None:
    """`driver.stop()` for callers that are done with the driver whatever happens: an error of
    the stop is logged, never raised into them."""
    try:
        await driver.stop()
    except Exception:
        log.exception("agent_stop_failed", agent=driver.spec.name)


async def stop_shielded(driver: AgentDriver) -> None:
    """`stop_quietly` that another cancellation of the caller cannot cut short (the stop goes on
    in a task of its own): for a start that was cancelled and must still not leave its process
    behind."""
    await asyncio.shield(asyncio.ensure_future(stop_quietly(driver)))


def create_driver(
    spec: AgentSpec,
    launch: Launch,
    settings: Settings,
    emit: Emit,
    *,
    request_permission: RequestPermission | None = None,
    on_exit: OnExit | None = None,
) -> AgentDriver:
    """The driver for `spec.protocol` ("acp" or "pi-rpc")."""
    cls: type[AgentDriver]
    if spec.protocol == "acp":
        from vm_agent.agents.acp_driver import AcpDriver

        cls = AcpDriver
    elif spec.protocol == "pi-rpc":
        from vm_agent.agents.pi_rpc import PiRpcDriver

        cls = PiRpcDriver
    else:
        raise AgentStartError(f"unknown agent protocol {spec.protocol!r}")
    return cls(spec, launch, settings, emit, request_permission=request_permission, on_exit=on_exit)
