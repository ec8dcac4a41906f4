"""Stress-suite plumbing: profiles, resource probes, a daemon in its own process, and the figures table.

Profiles: VM_AGENT_STRESS_PROFILE=short (CI, under two minutes) or full (the default of
`make stress`). The suite only runs when selected (`-m stress`) or when a profile is named, so
a plain `pytest` run of the unit suite never pays for it.

Why a separate process for some tests: latency under load and shutdown behaviour must be
measured on a daemon whose event loop is not shared with the test's own clients, and SIGTERM
must hit a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_NODE_ID, base_env
from vm_agent.devkeys import DevKey

PROFILE_NAME = os.environ.get("VM_AGENT_STRESS_PROFILE", "full").strip().lower() or "full"


@dataclass(frozen=True)
class Profile:
    name: str
    terminal_cycles: int
    viewer_cycles: int
    flood_terminals: int
    flood_seconds: float
    fuzz_examples: int  # per HTTP operation
    ws_fuzz_messages: int  # per WebSocket endpoint
    kill_rounds: int
    jwks_flap_seconds: float
    stalled_megabytes: int


PROFILES = {
    "short": Profile("short", terminal_cycles=200, viewer_cycles=200, flood_terminals=200, flood_seconds=3.0,
                     fuzz_examples=4, ws_fuzz_messages=120, kill_rounds=8, jwks_flap_seconds=3.0,
                     stalled_megabytes=24),
    "full": Profile("full", terminal_cycles=1000, viewer_cycles=1000, flood_terminals=200, flood_seconds=15.0,
                    fuzz_examples=80, ws_fuzz_messages=600, kill_rounds=20, jwks_flap_seconds=15.0,
                    stalled_megabytes=90),
}
if PROFILE_NAME not in PROFILES:
    raise pytest.UsageError(f"VM_AGENT_STRESS_PROFILE must be one of {', '.join(PROFILES)}")
PROFILE = PROFILES[PROFILE_NAME]

FIGURES: list[dict[str, Any]] = []


def record(name: str, value: float | str, unit: str = "", target: str = "") -> None:
    """A measured figure, printed in the summary table (and written to VM_AGENT_STRESS_REPORT)."""
    FIGURES.append({"name": name, "value": value, "unit": unit, "target": target, "profile": PROFILE.name})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stress: load, fault and fuzz tests (make stress; excluded from make test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = "stress" in (config.getoption("markexpr", "") or "") or "VM_AGENT_STRESS_PROFILE" in os.environ
    for item in items:
        if "tests/stress/" in item.nodeid:
            item.add_marker(pytest.mark.stress)
            item.add_marker(pytest.mark.timeout(600))
            if not selected:
                item.add_marker(pytest.mark.skip(reason="stress suite: run `make stress` or -m stress"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    write = terminalreporter.write_line
    write("")
    write(f"stress figures (profile {PROFILE.name})")
    width = max(len(f["name"]) for f in FIGURES)
    for f in FIGURES:
        value = f"{f['value']:.3f}" if isinstance(f["value"], float) else str(f["value"])
        write(f"  {f['name']:<{width}}  {value:>12} {f['unit']:<6} {f['target']}")
    report = os.environ.get("VM_AGENT_STRESS_REPORT")
    if report:
        Path(report).write_text(json.dumps(FIGURES, indent=2))


# ---- resource probes (Linux /proc) ---------------------------------------------------------

def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _parents() -> dict[int, int]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            table[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def descendants(pid: int | None = None) -> set[int]:
    """Every live (non-zombie) process below `pid` (default: this process)."""
    root = os.getpid() if pid is None else pid
    parents = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---- a daemon in its own process -----------------------------------------------------------

class DaemonProcess:
    """`python -m vm_agent serve` with the test settings, its port read from its own log."""

    def __init__(self, state_dir: Path, env: dict[str, str], key: DevKey, prefix: list[str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = env
        self.key = key
        self.prefix = prefix or []
        self.log_path = state_dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self, timeout: float = 30.0) -> DaemonProcess:
        full_env = {**os.environ, **self.env, "LOG_FORMAT": "json"}
        log = self.log_path.open("ab")
        # Popen returns at once; a plain Popen (not asyncio's) lets teardown kill it from any loop.
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "vm_agent", "serve"], env=full_env,  # noqa: ASYNC220
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.state_dir)
        log.close()
        async with asyncio.timeout(timeout):
            while not self.port:
                assert self.proc.poll() is None, f"daemon exited: {self.log_tail()}"
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if '"daemon_listening"' in line:
                        self.port = int(json.loads(line)["port"])
                await asyncio.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def token(self, kind: str = "user", workspace: str | None = "host", user: str = "user-1", **claims: Any) -> str:
        node = claims.pop("node", TEST_NODE_ID if kind == "management" else None)
        return self.key.mint(kind=kind, workspace=workspace, node=node, user=user, **claims)

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, limit=0), **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    async def terminate(self, timeout: float) -> float:
        """SIGTERM; seconds until the process exited (raises TimeoutError past `timeout`)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            while self.proc.poll() is None:  # noqa: ASYNC110 - process exit offers nothing to await here
                await asyncio.sleep(0.02)
        return time.monotonic() - started

    def kill(self) -> None:
        """Test teardown: the daemon and everything it started, whatever state they are in."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
async def spawn_daemon(tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey,
                       jwks_url: str) -> AsyncIterator[Any]:
    started: list[DaemonProcess] = []

    async def spawn(prefix: list[str] | None = None, **env: str) -> DaemonProcess:
        state_dir = tmp_path_factory.mktemp("stress-state")
        merged = {**base_env(state_dir, jwks_url), **{k: str(v) for k, v in env.items()}}
        daemon = DaemonProcess(state_dir, merged, dev_key, prefix)
        started.append(daemon)
        return await daemon.start()

    yield spawn
    for daemon in started:
        daemon.kill()


def plain_shell(directory: Path) -> str:
    """A shell without the machine's login scripts (pyenv and friends take seconds under load),
    so the figures measure the daemon, not ~/.bashrc. The daemon starts it as `<shell> -l`."""
    path = directory / "plain-bash"
    path.write_text("#!/bin/sh\nexec /bin/bash --noprofile --norc -i\n")
    path.chmod(0o755)
    return str(path)


async def health_ok(url: str, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{url}/health") as response:
        assert response.status == 200
        return await response.json()
