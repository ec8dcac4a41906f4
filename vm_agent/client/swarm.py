"""`Swarm`: one task (or one per agent) fanned out to many VMs, gathered back with each outcome.

What replaces the coordinator's `for i in $(seq 1 N); do vers exec worker-$i ...; done` loops.
Every agent is driven by its own task and every failure is caught at that task's edge, so a VM
that dies, refuses the token or times out becomes one `error` row while the others carry on.
Submitting prompts is bounded by `concurrency` (connection set-up is what costs); waiting for
results is not, because an idle SSE connection per VM costs almost nothing and every VM should
work at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vm_agent.client.api import AgentClient
from vm_agent.client.errors import ClientError
from vm_agent.client.events import Event


class AgentStatus(StrEnum):
    IDLE = "idle"  # nothing sent yet
    WORKING = "working"  # prompt sent, waiting for the agent to settle
    DONE = "done"  # the agent settled; `text` holds its final reply
    ERROR = "error"  # unreachable, refused, timed out or the agent failed; `error` says why


@dataclass
class AgentRun:
    """One agent's part in a swarm run, updated live (for progress displays)."""

    name: str
    client: AgentClient = field(repr=False)
    task: str | None = None
    status: AgentStatus = AgentStatus.IDLE
    text: str = ""
    stop_reason: str | None = None
    error: str | None = None
    events: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.client.base_url,
            "status": str(self.status),
            "stopReason": self.stop_reason,
            "error": self.error,
            "text": self.text,
            "events": self.events,
            "seconds": round(self.elapsed, 3),
        }


Tasks = str | Sequence[str] | Mapping[str, str]


class Swarm:
    """Drive many `AgentClient`s at once. `on_change(run)` is called on every status change."""

    def __init__(
        self,
        clients: Sequence[AgentClient],
        *,
        concurrency: int = 16,
        on_change: Callable[[AgentRun], None] | None = None,
    ) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError("every client in a swarm needs a distinct name")
        self.runs = [AgentRun(c.name, c) for c in clients]
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._on_change = on_change

    async def __aenter__(self) -> Swarm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(r.client.close() for r in self.runs), return_exceptions=True)

    def _tasks_for(self, tasks: Tasks) -> list[str | None]:
        if isinstance(tasks, str):
            return [tasks] * len(self.runs)
        if isinstance(tasks, Mapping):
            return [tasks.get(r.name) for r in self.runs]
        if len(tasks) != len(self.runs):
            raise ValueError(f"{len(tasks)} tasks for {len(self.runs)} agents")
        return list(tasks)

    def _set(self, run: AgentRun, status: AgentStatus, **changes: Any) -> None:
        run.status = status
        for key, value in changes.items():
            setattr(run, key, value)
        if status in (AgentStatus.DONE, AgentStatus.ERROR):
            run.finished_at = time.monotonic()
        if self._on_change is not None:
            self._on_change(run)

    async def run(self, tasks: Tasks, timeout_s: float | None = None) -> list[AgentRun]:
        """Send each agent its task and wait until all settle (or `timeout_s` passes).

        Agents without a task (a mapping that omits them) are left `idle`. Returns the runs in
        the order the clients were given; inspect `.failures` for the ones that went wrong.
        """
        jobs = [
            asyncio.create_task(self._drive(run, task, timeout_s))
            for run, task in zip(self.runs, self._tasks_for(tasks), strict=True)
            if task is not None
        ]
        await asyncio.gather(*jobs)
        return self.runs

    async def _drive(self, run: AgentRun, task: str, timeout_s: float | None) -> None:
        run.task, run.text, run.error, run.events, run.finished_at = task, "", None, 0, None
        run.started_at = time.monotonic()

        # The caller's own event hook (a progress display, a log) keeps working during the run.
        chained = run.client.on_event

        def count(event: Event) -> None:
            run.events += 1
            if chained is not None:
                chained(event)

        run.client.on_event = count
        try:
            async with asyncio.timeout(timeout_s):
                async with self._limit:
                    sent = await run.client.send_prompt(task)
                self._set(run, AgentStatus.WORKING)
                result = await run.client.wait_result(sent)
        except TimeoutError:
            self._set(run, AgentStatus.ERROR, error=f"timed out after {timeout_s:g}s")
        except ClientError as exc:
            self._set(run, AgentStatus.ERROR, error=str(exc))
        except Exception as exc:  # one broken VM must never stop the others
            self._set(run, AgentStatus.ERROR, error=f"{type(exc).__name__}: {exc}")
        else:
            if result.failure:  # an error, or cancelled (aborted, daemon shut down): the task is not done
                failed = {"error": result.failure, "text": result.text, "stop_reason": result.stop_reason}
                self._set(run, AgentStatus.ERROR, **failed)
            else:
                self._set(run, AgentStatus.DONE, text=result.text, stop_reason=result.stop_reason)
        finally:
            run.client.on_event = chained

    async def broadcast(self, command: str, message: str | None = None) -> dict[str, dict[str, Any] | ClientError]:
        """Send one RPC verb (steer, follow_up, abort, ...) to every agent; errors come back, not raised."""

        async def one(run: AgentRun) -> dict[str, Any] | ClientError:
            try:
                async with self._limit:
                    return await run.client.rpc(command, message)
            except ClientError as exc:
                return exc

        answers = await asyncio.gather(*(one(r) for r in self.runs))
        return {r.name: a for r, a in zip(self.runs, answers, strict=True)}

    async def states(self) -> dict[str, dict[str, Any] | ClientError]:
        """Every agent's current `get_state`, or the error that prevented reading it."""

        async def one(run: AgentRun) -> dict[str, Any] | ClientError:
            try:
                async with self._limit:
                    return await run.client.get_state()
            except ClientError as exc:
                return exc

        answers = await asyncio.gather(*(one(r) for r in self.runs))
        return {r.name: a for r, a in zip(self.runs, answers, strict=True)}

    async def wait_all(self, timeout_s: float) -> dict[str, dict[str, Any] | ClientError]:
        """Wait until every agent is idle; one still busy at the deadline maps to `RequestTimeout`."""

        async def one(run: AgentRun) -> dict[str, Any] | ClientError:
            try:
                return await run.client.wait_idle(timeout_s)
            except ClientError as exc:
                return exc

        answers = await asyncio.gather(*(one(r) for r in self.runs))
        return {r.name: a for r, a in zip(self.runs, answers, strict=True)}

    @property
    def failures(self) -> list[AgentRun]:
        return [r for r in self.runs if r.status is AgentStatus.ERROR]

    @property
    def texts(self) -> dict[str, str]:
        """Final replies of the agents that finished."""
        return {r.name: r.text for r in self.runs if r.status is AgentStatus.DONE}
