"""One prompt seen from the coordinator: what the daemon answered when it was sent, and what it
produced, read from the session's events by the prompt's own id.

A session runs one prompt at a time, but others can be queued before and after ours: by another
coordinator, a `follow-up`, a swarm re-run. Waiting for the *session* to go idle would hand back
whichever prompt ran last, and its exit status. The daemon tags the events that belong to a
prompt with its `promptId` (`session_prompting`, `prompt_retry`, `agent_crash_report`, the
prompt's result and `session_prompt_done`); streamed text carries no id, but only one prompt
runs at a time, so the text between a prompt's start and its `session_prompt_done` is its reply.

Two things can end the events of a prompt without ending the work it stands for:

- A steer to an agent without native steering queues the steer at the head of the queue, then
  cancels the running prompt; the steer runs next as a new prompt with its own id. The daemon
  does not link the two, but the order of its events does: the steer's `queue_update` comes
  before the running prompt's `session_prompt_done`. A prompt that had started and ends
  `cancelled` while the queue's head is a steer was replaced by it, so the reply follows it.
  (`abort` empties the queue before it cancels, so an aborted prompt stays cancelled.)
- A reader that fell behind the daemon's retained log gets `session_gap`: the prompt's own
  `session_prompt_done` may be among the lost events. The waiter then reads the session's state;
  if the prompt is neither running nor queued, its end happened by the state's last seq, and
  once the events up to that seq are read without it, it was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vm_agent.client.events import Event
from vm_agent.client.settling import last_seq

LOST_END = "the prompt's end was not seen: the daemon's event log dropped it (session_gap) while it was not read"


@dataclass(frozen=True)
class SentPrompt:
    """A prompt the daemon accepted: where to read its events from, and which events are its own.

    `after` is the session's last seq read *before* the prompt was sent, so nothing the prompt
    produces can be missed however fast the agent is. `prompt_id` is None only from a daemon
    that does not send one; waiting then falls back to "until the session settles".
    """

    after: int
    prompt_id: str | None = None
    status: str | None = None  # "prompting", or "queued" behind other work
    position: int | None = None  # place in the queue when queued

    @classmethod
    def from_answer(cls, after: int, answer: dict[str, Any]) -> SentPrompt:
        prompt_id, position = answer.get("promptId"), answer.get("position")
        return cls(
            after,
            str(prompt_id) if prompt_id is not None else None,
            answer.get("status") if isinstance(answer.get("status"), str) else None,
            position if isinstance(position, int) else None,
        )


@dataclass
class RunResult:
    """What one prompt produced: the assistant's reply text and how the turn ended."""

    text: str
    stop_reason: str | None
    state: dict[str, Any] = field(default_factory=dict)  # the session's state right after it ended
    error: str | None = None
    prompt_id: str | None = None
    crash: dict[str, Any] | None = None  # the daemon's agent_crash_report when the agent died mid-prompt

    @property
    def failure(self) -> str | None:
        """Why the prompt did not do its task, or None when it did.

        Besides an error, a prompt that ended `cancelled` (aborted, cancelled, or stopped by a
        daemon shutting down) is a failure: its reply is partial and its task not done, so
        `vmagent prompt --wait "Build X" && deploy` must not deploy. The CLI and `Swarm` both
        decide by this property, so they can never disagree about the same prompt.
        """
        if self.error:
            return self.error
        if self.stop_reason == "cancelled":
            return "the prompt was cancelled"
        return None


def crash_detail(report: dict[str, Any]) -> str:
    """`agent exited (code 3)` from an agent_crash_report ({agentType, promptId, exitCode, error, stderr})."""
    detail = str(report.get("error") or "").strip()
    code = report.get("exitCode")
    if code is not None and f"code {code}" not in detail:
        detail = f"{detail} (exit code {code})" if detail else f"exit code {code}"
    return detail or "no reason given"


class PromptReply:
    """Folds a session's events, in order, into the `RunResult` of one prompt.

    `prompt_id=None` (a daemon without prompt ids) treats every prompt's result as ours; the
    caller then decides when to stop (when the session settles), and the last turn wins.
    """

    def __init__(self, prompt_id: str | None) -> None:
        self.prompt_id = prompt_id
        self._turn: list[str] = []
        self._stop_reason: str | None = None
        self._error: str | None = None
        self._crash: dict[str, Any] | None = None
        self._started = False  # our prompt's session_prompting was seen: it ran, not just queued
        self._queue: list[Any] = []  # the queue as the newest queue_update gave it
        self._ended_by: int | None = None  # our prompt had ended by this seq (read after a gap)
        self.steered_from: list[str] = []  # the ids this reply followed before, each replaced by a steer

    def _ours(self, event: Event) -> bool:
        return self.prompt_id is None or event.data.get("promptId") == self.prompt_id

    def wants_state(self, event: Event) -> bool:
        """True when the caller must read the session's state and give it to `seen_state`: after
        a `session_gap`, unless the gap already covers the seq by which the prompt had ended."""
        return event.kind == "session_gap" and self.prompt_id is not None and not self._lost(event)

    def seen_state(self, state: dict[str, Any]) -> None:
        """The session's state, read after a gap: is the prompt still running or queued?"""
        items = [state.get("currentPrompt"), *(state.get("queue") or [])]
        if any(isinstance(item, dict) and item.get("id") == self.prompt_id for item in items):
            self._ended_by = None
        elif self._ended_by is None:
            self._ended_by = last_seq(state)

    def _lost(self, event: Event) -> bool:
        """Every event up to the seq by which our prompt had ended is read or lost, without its end."""
        if self._ended_by is None:
            return False
        if event.kind == "session_gap":
            return isinstance(event.data.get("to"), int) and event.data["to"] >= self._ended_by
        return event.seq is not None and event.seq >= self._ended_by

    def _steered(self, data: dict[str, Any]) -> bool:
        """Our running prompt ended `cancelled` because a steer replaced it: follow the steer."""
        head = self._queue[0] if self._queue else None
        if not (self._started and data.get("stopReason") == "cancelled" and isinstance(head, dict)):
            return False
        if head.get("kind") != "steer" or head.get("id") is None:
            return False
        self.steered_from.append(str(self.prompt_id))
        self.prompt_id, self._started = str(head["id"]), False
        self._stop_reason, self._error, self._crash = None, None, None
        return True

    def feed(self, event: Event) -> bool:
        """Take one event; True once it was this prompt's `session_prompt_done` (or once it is
        known that its `session_prompt_done` was lost in a gap)."""
        finished = self._feed(event)
        if not finished and self._lost(event):
            self._error = LOST_END
            return True
        return finished

    def _feed(self, event: Event) -> bool:
        kind, data = event.kind, event.data
        if kind == "queue_update" and isinstance(data.get("queue"), list):
            self._queue = data["queue"]
        if kind == "session_restarted" and self.prompt_id is not None:
            # The daemon restarted unseen and its history (and its prompt numbering) began again:
            # this prompt is not in it, and a new prompt may now carry the same id.
            self._error = "the daemon restarted while the prompt was waiting or running; it did not finish"
            return True
        if kind in ("session_prompting", "prompt_retry") or (kind == "steer_delivered" and self._ours(event)):
            # A turn starts, or the running prompt starts a new attempt after a transient provider
            # error: the text before it belongs to another prompt or to a failed attempt.
            self._turn = []
            if self._ours(event):
                self._error = None
                if kind == "session_prompting":
                    self._stop_reason, self._crash, self._started = None, None, True
            return False
        self._turn.append(event.text())
        if not self._ours(event):
            return False
        if kind == "prompt_result":
            self._stop_reason = (data.get("result") or {}).get("stopReason")
        elif kind == "prompt_error":
            self._error = str((data.get("error") or {}).get("message") or "prompt failed")
        elif kind == "agent_crash_report":
            self._crash = data
        elif kind == "session_prompt_done":
            if data.get("stopReason") not in (None, "error"):
                self._stop_reason = data["stopReason"]
            if data.get("error"):
                self._error = str(data["error"])
            if self.prompt_id is not None and self._steered(data):
                return False
            return self.prompt_id is not None
        return False

    def result(self, state: dict[str, Any] | None = None) -> RunResult:
        error = self._error
        if self._crash is not None:
            detail = crash_detail(self._crash)
            if self._stop_reason == "recovered":
                # The daemon restarted the agent and reloaded its session, but the prompt was not
                # run again: the reply is whatever came before the crash.
                error = f"agent crashed ({detail}); it was restarted, but the prompt did not finish"
            else:
                error = f"{error} ({detail})" if error else f"agent crashed ({detail})"
        return RunResult("".join(self._turn), self._stop_reason, state or {}, error, self.prompt_id, self._crash)
