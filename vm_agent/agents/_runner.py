"""The control side of an AgentSession: agent lifecycle, the one-at-a-time prompt runner,
transient retry, crash recovery and exactly-once completion.

Kept apart from session.py (state, history, verbs) because this is the part with the
concurrency reasoning, and it reads best on its own. Everything here runs in the session's
control task, except `_on_driver_exit`, a plain callback from the driver's reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from vm_agent import metrics
from vm_agent.agents.driver import (
    CANCELLED,
    AgentCrashed,
    AgentDriver,
    AgentError,
    AgentStartError,
    ContentBlocks,
    PromptFailed,
    TransientProviderError,
    stop_quietly,
)
from vm_agent.agents.redact import redact
from vm_agent.agents.registry import UnknownAgentType

if TYPE_CHECKING:
    from vm_agent.agents.session import AgentSession, PromptItem

log = structlog.get_logger("vm_agent.agents.session")

RECOVERED = "recovered"


class PromptRunner:
    async def _run(self: AgentSession) -> None:
        """The control task: run queued prompts one at a time, forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self._closing:
                item = self._queue.popleft()
                if item.done:
                    continue
                if item.queued:
                    self._queue_update()
                try:
                    await self._run_prompt(item)
                except asyncio.CancelledError:
                    self._complete(item, CANCELLED)
                    raise
                except Exception as exc:
                    self._log.exception("prompt_runner_failed")
                    self._complete(item, error={"code": -32603, "message": f"internal error: {exc}"})

    async def _run_prompt(self: AgentSession, item: PromptItem) -> None:
        self._current, self._current_merged = item, []
        self._cancel.clear()
        self._idle.clear()
        try:
            if not self.agent_running:
                try:
                    await self._start_agent(resume=True)
                except AgentStartError as exc:
                    if self._cancel.is_set():  # e.g. stopped while its agent started
                        self._complete(item, CANCELLED)
                    else:
                        self._complete(item, error={"code": -32002, "message": str(exc)})
                    return
            if self._cancel.is_set():
                self._complete(item, CANCELLED)
                return
            self._set_status("prompting")
            self.emit({"type": "session_prompting", "promptId": item.id, "kind": item.kind, "prompt": item.content})
            stop_reason, error = await self._attempts(item)
            self._complete(item, stop_reason, error)
        finally:
            self._current, self._current_merged = None, []
            self._idle.set()
            if self.status == "prompting":
                self._set_status("ready" if self.agent_running else "idle")

    async def _attempts(self: AgentSession, item: PromptItem) -> tuple[str | None, dict[str, Any] | None]:
        retries = self.settings.acp_prompt_retry_max_retries
        attempt = 0
        while True:
            driver = self._driver
            if driver is None:
                return None, {"code": -32002, "message": "agent is not running"}
            try:
                return await self._prompt_once(driver, item.content), None
            except TransientProviderError as exc:
                if attempt >= retries:
                    return None, {"code": -32003, "message": f"provider error after {attempt} retries: {exc}"}
                if self._cancel.is_set():
                    return CANCELLED, None
                attempt += 1
                delay = min(self.settings.acp_prompt_retry_initial_backoff * 2 ** (attempt - 1),
                            self.settings.acp_prompt_retry_max_backoff)
                self.counts["retries"] += 1
                metrics.PROMPT_RETRIES.inc()
                self.emit({"type": "prompt_retry", "promptId": item.id, "attempt": attempt,
                           "maxRetries": retries, "delaySeconds": delay, "error": str(exc)})
                self._log.info("prompt_retry_scheduled", attempt=attempt, delay=delay, error=str(exc))
                if await self._cancellable_sleep(delay):
                    return CANCELLED, None
            except AgentCrashed as exc:
                return await self._recover(item, driver, exc)
            except PromptFailed as exc:
                return None, {"code": exc.code, "message": str(exc), **({"data": exc.data} if exc.data else {})}

    async def _prompt_once(self: AgentSession, driver: AgentDriver, content: ContentBlocks) -> str:
        """One session/prompt; a cancel request gives the agent acp_rpc_timeout to wind down.

        The prompt is awaited right here in the control task, not in a task of its own raced
        against the cancel event: each hop between tasks costs a loop turn on the way in and
        two on the way out, which was most of the latency the gateway added to a prompt.
        `cancel()` instead arms `_cancel_deadline`, which cuts this await short if the agent
        ignores the cancel."""
        if self._cancel.is_set():
            return CANCELLED
        deadline = asyncio.timeout(None)
        self._cancel_deadline = deadline
        try:
            async with deadline:
                return await driver.prompt(content)
        except TimeoutError:
            if not deadline.expired():
                raise
            # The agent ignored session/cancel: stop it; the next prompt starts it again.
            self._log.warning("agent_ignored_cancel")
            await self._stop_driver()
            return CANCELLED
        finally:
            self._cancel_deadline = None

    def _arm_cancel_deadline(self: AgentSession) -> None:
        """A cancel was requested: the running prompt has acp_rpc_timeout left to end."""
        deadline = self._cancel_deadline
        if deadline is not None and deadline.when() is None:
            deadline.reschedule(asyncio.get_running_loop().time() + self.settings.acp_rpc_timeout)

    async def _cancellable_sleep(self: AgentSession, delay: float) -> bool:
        """Sleep `delay` seconds; True if a cancel arrived meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._cancel.wait()
        return self._cancel.is_set()

    async def _recover(self: AgentSession, item: PromptItem, driver: AgentDriver,
                       exc: AgentCrashed) -> tuple[str | None, dict[str, Any] | None]:
        self.counts["crashes"] += 1
        self._crash_report(exc, driver, item.id)
        if self._driver is driver:
            self._driver = None
        self._abandon(driver)
        if self._cancel.is_set():  # not worth a restart: the next prompt starts the agent
            return CANCELLED, None
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.settings.acp_restart_decay_window:
            self._restarts.popleft()
        if len(self._restarts) >= self.settings.acp_max_restart_attempts:
            message = f"agent crashed {len(self._restarts) + 1} times within the restart window; not restarting"
            self._set_status("error", message)
            return None, {"code": -32004, "message": message}
        self._restarts.append(now)
        self.counts["restarts"] += 1
        metrics.AGENT_RESTARTS.inc()
        try:
            await self._start_agent(resume=True)
        except AgentStartError as start_exc:
            return None, {"code": -32004, "message": f"agent crashed and could not be restarted: {start_exc}"}
        self._set_status("prompting")
        return RECOVERED, None

    def _crash_report(self: AgentSession, exc: AgentCrashed, driver: AgentDriver, prompt_id: str | None) -> None:
        stderr = redact(exc.stderr or driver.stderr_tail(), self._secrets)
        self.emit({"type": "agent_crash_report", "agentType": self.agent_type, "promptId": prompt_id,
                   "exitCode": exc.returncode, "error": str(exc), "stderr": stderr[-8192:]})
        self._log.warning("agent_crashed", exit_code=exc.returncode)

    def _on_driver_exit(self: AgentSession, driver: AgentDriver | None, returncode: int | None) -> None:
        """The agent's process ended or its reader gave up on it. Its open permission requests
        die with it (viewers' dialogs close now, before the crash report). Mid-prompt the runner
        handles the rest (AgentCrashed); here: idle crashes."""
        if driver is None or driver is not self._driver:
            return
        self.permissions.cancel_all("agent_exited")
        if self._current is not None or self._closing:
            return
        self._driver = None
        self._abandon(driver)
        self.counts["crashes"] += 1
        self._crash_report(AgentCrashed(f"agent exited (code {returncode})", returncode, driver.stderr_tail()),
                           driver, None)
        self._set_status("idle", f"agent exited (code {returncode}); the next prompt restarts it")

    def _abandon(self: AgentSession, driver: AgentDriver) -> None:
        """Stop, in the background, a driver the session no longer uses. "Exited" may only mean
        its reader gave up (a malformed line, stdout closed): the process can still run, and must
        not outlive the session. `close` waits for these."""
        task = asyncio.create_task(stop_quietly(driver), name=f"agent-abandon-{self.id}")
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _call_off_start(self: AgentSession) -> None:
        """No start begun before now may bring the agent up: a stop must not be followed by the
        agent becoming ready. The generation tells a start that finishes later to stop its own
        agent (`_start_agent_locked`); one under way is cancelled, and waited for until its
        half-started process is stopped, so nothing outlives the caller's stop or close."""
        self._generation += 1
        starting = self._starting
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.wait({starting})

    async def _reaped(self: AgentSession) -> None:
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    async def _start_agent(self: AgentSession, *, resume: bool) -> None:
        """Start the agent unless it runs; serialized so a headless start and a prompt never race.

        The generation is read before waiting for the lock: a start that queued behind another
        when the session was stopped is as stale as the one under way."""
        generation = self._generation
        async with self._start_lock:
            if generation != self._generation or self._closing:
                raise AgentStartError("the agent was stopped before it started")
            if not self.agent_running:
                await self._start_agent_locked(resume=resume, generation=generation)

    async def _start_agent_locked(self: AgentSession, *, resume: bool, generation: int) -> None:
        if self._driver is not None:  # not alive any more, but its process may be
            self._abandon(self._driver)
            self._driver = None
        try:
            spec = self._registry.get(self.agent_type)
        except UnknownAgentType as exc:
            self._set_status("error", str(exc))
            raise AgentStartError(str(exc)) from None
        self._set_status("starting")
        try:
            launch = await self._launcher(self)
        except Exception as exc:
            self._set_status("error", f"cannot start agent: {exc}")
            raise AgentStartError(str(exc)) from exc
        if generation != self._generation:
            raise AgentStartError("the agent was stopped before it started")
        self._secrets = [*launch.secret_env.values(), *spec.environment()[1].values()]
        holder: list[AgentDriver] = []
        driver = self._driver_factory(spec, launch, self.settings, self.emit,
                                      request_permission=self.permissions.request,
                                      on_exit=lambda code: self._on_driver_exit(holder[0] if holder else None, code))
        holder.append(driver)
        # In a task of its own so that stop/close can cancel it (_call_off_start) whichever task
        # asked for the start; cancelling this one cancels it too.
        starting = self._starting = asyncio.ensure_future(driver.start(self.acp_session_id if resume else None))
        try:
            session_id = await starting
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if generation == self._generation or (current is not None and current.cancelling()):
                raise
            raise AgentStartError("the agent was stopped while it started") from None
        except AgentError as exc:
            if generation != self._generation:
                raise AgentStartError("the agent was stopped while it started") from None
            self._set_status("error", str(exc))
            raise exc if isinstance(exc, AgentStartError) else AgentStartError(str(exc)) from exc
        finally:
            if self._starting is starting:
                self._starting = None
        if generation != self._generation:
            # stopped after the agent came up but before this task resumed: not ours to keep
            await stop_quietly(driver)
            raise AgentStartError("the agent was stopped while it started")
        self._driver = driver
        if session_id != self.acp_session_id:
            self.acp_session_id = session_id
            self._on_change(self)
        self._log.info("agent_started", agent=self.agent_type, acp_session_id=session_id)
        self._set_status("ready")

    async def _stop_driver(self: AgentSession) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            await stop_quietly(driver)

    def _complete(self: AgentSession, item: PromptItem, stop_reason: str | None = None,
                  error: dict[str, Any] | None = None) -> None:
        """Report the end of `item` (and anything merged into it) exactly once."""
        merged = self._current_merged if item is self._current else []
        if item is self._current:
            # Its turn is over (timed out, failed, cancelled): a permission request still open
            # belongs to nothing; viewers get permission_resolved before the result.
            self.permissions.cancel_all()
        for each in (item, *merged):
            if each.done:
                continue
            each.done = True
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": each.request_id}
            if error is not None:
                reply["error"] = error
            else:
                reply["result"] = {"stopReason": stop_reason}
            reply["promptId"] = each.id
            self.emit(reply)
            self.counts["prompts"] += 1
            metrics.PROMPTS.labels(metrics.prompt_outcome(stop_reason if error is None else "error")).inc()
            done: dict[str, Any] = {"type": "session_prompt_done", "promptId": each.id,
                                    "stopReason": stop_reason if error is None else "error"}
            if error is not None:
                done["error"] = error["message"]
            self.emit(done)
        self.last_stop_reason = stop_reason if error is None else "error"
        self.updated_at = time.time()
