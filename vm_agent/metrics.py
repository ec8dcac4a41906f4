"""Prometheus metrics: what an operator of a fleet watches on every VM.

Module-level metrics on one registry: domain objects (sessions, drivers) count events without
knowing about the app, and `/metrics` renders the registry plus live gauges read at scrape
time from the managers (so a gauge can never drift from the real session tables).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_LATENCY = Histogram(
    "vm_agent_http_request_duration_seconds",
    "Time to answer an HTTP request (WebSocket handshakes until upgrade).",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
AUTH_FAILURES = Counter("vm_agent_auth_failures_total", "Rejected requests by reason.", ["reason"], registry=REGISTRY)


class TerminalBytes(Collector):
    """Terminal bytes by direction (in: typed, out: produced), as plain integers.

    Counted on every PTY read and every keystroke, where a prometheus Counter's lock cost 1 µs
    per increment (measured). The event loop is the only writer, so no lock is needed."""

    def __init__(self) -> None:
        self.typed = 0
        self.produced = 0

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "vm_agent_terminal_bytes", "Terminal bytes by direction (in: typed, out: produced).", labels=["direction"]
        )
        family.add_metric(["in"], self.typed)
        family.add_metric(["out"], self.produced)
        yield family


TERMINAL_BYTES = TerminalBytes()
REGISTRY.register(TERMINAL_BYTES)
AGENT_MESSAGES = Counter(
    "vm_agent_agent_messages_total", "Messages appended to agent session histories.", registry=REGISTRY
)
PROMPTS = Counter(
    "vm_agent_prompts_total",
    "Completed prompts by outcome (stop reason, error, cancelled...).",
    ["outcome"],
    registry=REGISTRY,
)
PROMPT_RETRIES = Counter(
    "vm_agent_prompt_retries_total", "Prompt retries after transient provider errors.", registry=REGISTRY
)
AGENT_RESTARTS = Counter("vm_agent_agent_restarts_total", "Agent processes restarted after a crash.", registry=REGISTRY)
LOOP_LAG = Gauge("vm_agent_event_loop_lag_seconds", "How late the last event-loop probe woke up.", registry=REGISTRY)
LOOP_LAG_MAX = Gauge("vm_agent_event_loop_lag_max_seconds", "Largest probe lateness since start.", registry=REGISTRY)

_OUTCOMES = frozenset(
    {"end_turn", "max_tokens", "max_turn_requests", "refusal", "cancelled", "recovered", "error"}
)


def prompt_outcome(stop_reason: str | None) -> str:
    """A bounded label: agents may invent stop reasons, metrics must not grow without limit."""
    return stop_reason if stop_reason in _OUTCOMES else "other"


SessionSource = Callable[[], Iterable[tuple[str, str, int]]]  # (kind, state, count)


class SessionCollector(Collector):
    """Sessions by kind and state, read from the managers at scrape time."""

    def __init__(self) -> None:
        self.sources: list[SessionSource] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("vm_agent_sessions", "Open sessions by kind and state.", labels=["kind", "state"])
        for source in self.sources:
            try:
                for kind, state, count in source():
                    family.add_metric([kind, state], count)
            except Exception:  # a broken source must not break the whole scrape
                continue
        yield family


def render(collector: SessionCollector) -> bytes:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(REGISTRY) + generate_latest(registry)


async def loop_lag_probe(interval: float = 0.5) -> None:
    """Sleep `interval` repeatedly and record how late each wake-up was: a blocked loop shows."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(loop.time() - started - interval, 0.0)
        worst = max(worst, lag)
        LOOP_LAG.set(lag)
        LOOP_LAG_MAX.set(worst)


def observe_request(method: str, route: str, status: int, started: float) -> None:
    HTTP_LATENCY.labels(method, route, str(status)).observe(time.perf_counter() - started)


def session_counts(manager: Any, kind: str) -> SessionSource:
    """Adapter for managers: `sessions_by_state()` → {state: n} if offered, else `session_count()`."""

    def source() -> Iterable[tuple[str, str, int]]:
        if hasattr(manager, "sessions_by_state"):
            return [(kind, state, n) for state, n in manager.sessions_by_state().items()]
        return [(kind, "open", manager.session_count())]

    return source
