"""The pi driver: `pi --mode rpc` (JSON lines on stdio) behind the same interface as ACP agents.

pi's protocol, as the installed pi documents and as it behaves:
- Commands carry our `id`; answers are `{"type": "response", "id", "command", "success", ...}`
  and arrive concurrently with events and with each other, so every answer is matched by id and
  every wait has a timeout. A `prompt` answer only means "accepted": the work follows as events.
- A run is over at `agent_settled` (pi will not continue by itself). `agent_end` alone is not
  the end: `auto_retry_*`, compaction recovery, steering and follow-ups can follow it. pi
  releases without `agent_settled` are handled with a barrier: after an `agent_end` that does
  not announce a retry, a `get_state` is sent, and an answer that arrives before any new
  `agent_start`/`auto_retry_start` and reports nothing streaming or pending ends the run.
- pi exits at once when its stdin closes, even mid-run, so stdin stays open for the life of
  the session (AgentProcess never closes it before `stop`).
- `steer` and `follow_up` sent while pi is idle are not refused: they wait silently in pi's
  queue and would ride along with the NEXT prompt. The driver therefore sends them only while
  its run is open, and after a run settles takes back (`clear_queue`) anything that was queued
  too late and runs it as a continuation of the same prompt. `_queue_lock` keeps that check
  and a concurrent `steer` from interleaving.

Ordering: one reader task reads stdout, translates each event (pi_events.py) and delivers the
result before reading the next line; it completes the run only after delivering everything
read before `agent_settled`. Commands are written by the caller's task, never by the reader,
except the barrier `get_state` and extension-dialog answers, which go through helper tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import structlog

from vm_agent.agents.driver import (
    CANCELLED,
    END_TURN,
    MAX_TOKENS,
    AgentCrashed,
    AgentDriver,
    AgentError,
    AgentStartError,
    ContentBlocks,
    NotSupported,
    PromptFailed,
    TransientProviderError,
    looks_transient,
    stop_shielded,
)
from vm_agent.agents.pi_events import PiEventTranslator, to_pi_message
from vm_agent.agents.process import OVERSIZED, AgentProcess
from vm_agent.agents.redact import has_surrogate_escape, scrub_surrogates

log = structlog.get_logger("vm_agent.agents.pi_rpc")

_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_DIALOGS = frozenset({"select", "confirm", "input", "editor"})
_STOP_REASONS = {"stop": END_TURN, "toolUse": END_TURN, "length": MAX_TOKENS, "aborted": CANCELLED}


@dataclass
class _Run:
    """One prompt's run inside pi, from the `prompt` command to `agent_settled`."""

    done: asyncio.Future[str]
    last_stop: str | None = None
    last_error: str | None = None
    cancelled: bool = False
    queued_into: int = 0  # steer/follow_up messages pi accepted during this run
    barrier: str | None = None  # id of the get_state that may prove an older pi is done


class PiRpcDriver(AgentDriver):
    protocol = "pi-rpc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = dataclasses.replace(self.capabilities, supports_load=True, supports_steer=True,
                                                supports_follow_up=True, supports_new_session=True)
        self._process: AgentProcess | None = None
        self._reader: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._run: _Run | None = None
        self._queue_lock = asyncio.Lock()
        self._translator = PiEventTranslator()
        self._settled_seen = False  # this pi emits agent_settled: no barrier needed
        self._closed_error: AgentCrashed | None = None
        self.session_file: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, resume_session_id: str | None = None) -> str:
        spec = self.spec
        if resume_session_id:
            if not _SESSION_ID.fullmatch(resume_session_id):
                raise AgentStartError(f"not a pi session id: {resume_session_id!r}")
            # --session-id reopens that conversation of this working directory (or starts it).
            spec = dataclasses.replace(spec, argv=(*spec.argv, "--session-id", resume_session_id))
        self._process = await AgentProcess.spawn(spec, self.launch, self.settings)
        self._reader = asyncio.create_task(self._read_loop(self._process), name=f"pi-reader-{self._process.pid}")
        try:
            self._adopt_state(await self._command({"type": "get_state"}, self.settings.acp_init_timeout))
            if self.launch.model:
                try:
                    await self.set_model(self.launch.model)
                except AgentError as exc:
                    log.warning("pi_launch_model_ignored", model=self.launch.model, error=str(exc))
        except AgentError as exc:
            stderr = self.stderr_tail()
            await self.stop()
            raise AgentStartError(f"pi failed to start: {exc}" + (f"; stderr: {stderr[-500:]}" if stderr else "")) \
                from exc
        except BaseException:
            # Cancelled (the session was stopped or closed meanwhile) or a bug: the half-started
            # process must not outlive this call.
            await stop_shielded(self)
            raise
        assert self.session_id is not None
        log.info("pi_session_ready", session_id=self.session_id, resumed=bool(resume_session_id))
        return self.session_id

    def _adopt_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("sessionId"), str):
            raise PromptFailed("pi get_state returned no sessionId")
        self.session_id = state["sessionId"]
        self.session_file = state.get("sessionFile")
        self._translator.session_id = self.session_id

    async def stop(self) -> None:
        process = self._process
        if process is not None:
            await process.stop()  # closes stdin first: pi exits at once
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(self._reader)
            self._reader.cancel()
        for task in list(self._helpers):
            task.cancel()
        self._close(AgentCrashed("agent stopped", process.returncode if process else None, self.stderr_tail()))

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive and self._closed_error is None

    def stderr_tail(self) -> str:
        return self._process.stderr_tail() if self._process is not None else ""

    # ------------------------------------------------------------------ commands
    async def _command(self, body: dict[str, Any], timeout: float | None = None) -> Any:
        """Send one command and return its `data`; PromptFailed if pi refuses or does not answer."""
        if self._closed_error is not None or self._process is None:
            raise self._closed_error or AgentCrashed("pi is not running")
        command_id = f"vm-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        timeout = self.settings.acp_rpc_timeout if timeout is None else timeout
        try:
            # The write counts against the timeout too: a pi that stopped reading never answers.
            async with asyncio.timeout(timeout):
                await self._process.write_line(json.dumps({"id": command_id, **body}).encode())
                answer = await future
        except TimeoutError:
            raise PromptFailed(f"pi did not answer {body['type']} within {timeout:g}s", -32000) from None
        finally:
            self._pending.pop(command_id, None)
        if not answer.get("success"):
            raise PromptFailed(f"pi refused {body['type']}: {answer.get('error', 'no reason given')}")
        return answer.get("data")

    async def prompt(self, content: ContentBlocks) -> str:
        text, images = to_pi_message(content)
        if not text and not images:
            raise PromptFailed("empty prompt", -32602)
        try:
            async with asyncio.timeout(self.settings.acp_prompt_timeout):
                async with self._queue_lock:
                    run = await self._begin_run(text, images)
                while True:
                    try:
                        stop_reason = await run.done
                    except AgentError:
                        if run.queued_into:
                            with contextlib.suppress(AgentError):
                                await self._take_back_queue()
                        raise
                    async with self._queue_lock:
                        leftovers = await self._take_back_queue() if run.queued_into else []
                        if not leftovers or stop_reason == CANCELLED:
                            return stop_reason
                        # queued after pi had decided to settle: run them now, same prompt
                        log.info("pi_queue_continued", count=len(leftovers))
                        run = await self._begin_run("\n\n".join(leftovers), [], show_echo=True)
        except TimeoutError:
            with contextlib.suppress(AgentError):
                await self.cancel()
            raise PromptFailed(f"prompt timed out after {self.settings.acp_prompt_timeout:g}s", -32000) from None

    async def _begin_run(self, text: str, images: list[dict[str, Any]], *, show_echo: bool = False) -> _Run:
        """Open a run and send its `prompt`. The prompt's own echo is hidden from viewers (they
        have the prompt) unless `show_echo`: a continuation carries steering they never saw pi take."""
        if self._run is not None and not self._run.done.done():
            raise PromptFailed("a prompt is already running in pi")
        run = _Run(asyncio.get_running_loop().create_future())
        self._run = run
        self._translator.skip_prompt_echo = not show_echo
        body: dict[str, Any] = {"type": "prompt", "message": text}
        if images:
            body["images"] = images
        try:
            await self._command(body)
        except AgentError:
            self._translator.skip_prompt_echo = False
            run.done.cancel()  # never started; the caller gets `exc`
            raise
        return run

    async def _take_back_queue(self) -> list[str]:
        """Remove what still waits in pi's queue after the run settled; its texts, in order."""
        data = await self._command({"type": "clear_queue"})
        if not isinstance(data, dict):
            return []
        return [t for t in (*data.get("steering", []), *data.get("followUp", [])) if isinstance(t, str) and t]

    async def cancel(self) -> None:
        run = self._run
        if run is None or run.done.done() or not self.alive:
            return
        run.cancelled = True
        # Queued steering/follow-ups belong to the prompt being cancelled: drop them first, or
        # pi would go on with them after the abort.
        with contextlib.suppress(AgentError):
            await self._command({"type": "clear_queue"})
        with contextlib.suppress(AgentError):
            await self._command({"type": "abort"})

    async def steer(self, content: ContentBlocks) -> bool:
        return await self._queue_into_run("steer", content)

    async def follow_up(self, content: ContentBlocks) -> None:
        if not await self._queue_into_run("follow_up", content):
            raise NotSupported("no pi run is open to follow up")

    async def _queue_into_run(self, kind: str, content: ContentBlocks) -> bool:
        text, images = to_pi_message(content)
        async with self._queue_lock:
            run = self._run
            if run is None or run.done.done() or run.cancelled:
                return False
            body: dict[str, Any] = {"type": kind, "message": text}
            if images:
                body["images"] = images
            await self._command(body)
            run.queued_into += 1
            return True

    async def new_session(self) -> str:
        data = await self._command({"type": "new_session"})
        if isinstance(data, dict) and data.get("cancelled"):
            raise PromptFailed("pi kept the current session (an extension cancelled new_session)")
        self._adopt_state(await self._command({"type": "get_state"}))
        assert self.session_id is not None
        return self.session_id

    async def set_model(self, model: str) -> None:
        provider, _, model_id = model.partition("/")
        if not model_id:
            data = await self._command({"type": "get_available_models"})
            models = data.get("models", []) if isinstance(data, dict) else []
            match = next((m for m in models if isinstance(m, dict) and m.get("id") == model), None)
            if match is None:
                raise PromptFailed(f"pi knows no model {model!r}")
            provider, model_id = match.get("provider", ""), model
        await self._command({"type": "set_model", "provider": provider, "modelId": model_id})

    # ------------------------------------------------------------------ the reader
    async def _read_loop(self, process: AgentProcess) -> None:
        try:
            while (batch := await process.read_batch()) is not None:
                for line in batch:
                    if line is OVERSIZED or not line.strip():  # OVERSIZED: over ACP_MAX_LINE_BYTES, skipped
                        continue
                    try:
                        event = json.loads(line)
                        if has_surrogate_escape(line):
                            # pi cuts text by UTF-16 units (grep lines, truncated output), which
                            # can leave half an emoji: such a string cannot be encoded as UTF-8,
                            # so the event would be lost on its way to viewers.
                            event = scrub_surrogates(event)
                    except (ValueError, RecursionError):  # not JSON, or absurdly deep nesting
                        log.warning("pi_line_not_json", line=line[:200].decode("utf-8", "replace"))
                        continue
                    if isinstance(event, dict):
                        try:
                            await self._handle(event)
                        except Exception:  # an event shaped unlike pi's: that event's problem only
                            log.exception("pi_event_failed", line=line[:200].decode("utf-8", "replace"))
        except Exception:
            log.exception("pi_reader_failed")
        finally:
            returncode = process.returncode
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.acp_stop_grace_period):
                    returncode = await process.wait()
            self._close(AgentCrashed(f"pi exited (code {returncode})", returncode, self.stderr_tail()))
            self._exited(returncode)

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response":
            self._answer(event)
            return
        if kind == "extension_ui_request":
            if event.get("method") in _DIALOGS:  # no UI here: decline instead of leaving pi waiting
                self._helper(self._write({"type": "extension_ui_response", "id": event.get("id"), "cancelled": True}))
            return
        for message in self._translator.translate(event):
            pending = self.deliver_nowait(message)
            if pending is not None:
                await pending
        run = self._run
        if kind == "message_update" and isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if run is None or run.done.done():
            return
        if kind in ("agent_start", "auto_retry_start"):
            run.barrier = None  # still running: an outstanding barrier answer proves nothing
        elif kind == "message_end":
            message = event.get("message") or {}
            if message.get("role") == "assistant":
                run.last_stop, run.last_error = message.get("stopReason"), message.get("errorMessage")
        elif kind == "agent_end" and not event.get("willRetry") and not self._settled_seen:
            run.barrier = f"vm-barrier-{next(self._ids)}"
            self._helper(self._write({"id": run.barrier, "type": "get_state"}))
        elif kind == "agent_settled":
            self._settled_seen = True
            self._finish(run)

    def _answer(self, event: dict[str, Any]) -> None:
        answer_id = event.get("id")
        run = self._run
        if run is not None and answer_id is not None and answer_id == run.barrier:
            run.barrier = None
            state = event.get("data") or {}
            if event.get("success") and not state.get("isStreaming") and not state.get("pendingMessageCount"):
                self._finish(run)
            return
        future = self._pending.get(answer_id) if isinstance(answer_id, str) else None
        if future is not None and not future.done():
            future.set_result(event)
        elif not event.get("success"):
            log.warning("pi_command_failed", command=event.get("command"), error=event.get("error"))

    def _finish(self, run: _Run) -> None:
        """Complete the run exactly once, from what its last assistant message said."""
        if run.done.done():
            return
        if run.cancelled or run.last_stop == "aborted":
            run.done.set_result(CANCELLED)
        elif run.last_stop == "error":
            error = run.last_error or "pi reported an error"
            run.done.set_exception(TransientProviderError(error) if looks_transient(error) else PromptFailed(error))
        else:
            run.done.set_result(_STOP_REASONS.get(run.last_stop or "stop", END_TURN))

    def _close(self, error: AgentCrashed) -> None:
        """The process is gone: fail every wait, once."""
        if self._closed_error is not None:
            return
        self._closed_error = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        run = self._run
        if run is not None and not run.done.done():
            run.done.set_exception(error)

    # ------------------------------------------------------------------ helpers
    async def _write(self, body: dict[str, Any]) -> None:
        if self._process is not None and self._closed_error is None:
            with contextlib.suppress(AgentError):
                await self._process.write_line(json.dumps(body).encode())

    def _helper(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
