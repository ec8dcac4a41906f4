"""The machine misbehaves: the disk under the store fills up, and the wall clock jumps an hour
forward and back (as after a VM snapshot restore).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.stress.conftest import plain_shell, record
from vm_agent.auth.principal import Principal
from vm_agent.auth.sessions import SessionStore

pytestmark = pytest.mark.stress

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
FAKETIME_AVAILABLE = FAKETIME_LIB.exists()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "6m"):
    """A tmpfs of `size` at `path` (needs root; skipped otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_full_disk_gives_clear_errors_and_never_corrupts_the_store(make_daemon, tmp_path):
    with small_filesystem(tmp_path / "state") as state:
        daemon = await make_daemon(VM_AGENT_STATE_DIR=str(state), HOST_WORKSPACE_DIR=str(tmp_path))
        mgmt = {"Authorization": f"Bearer {daemon.token('management', workspace='host')}"}
        base = f"{daemon.url}/workspaces/host/agent-sessions"
        statuses: dict[int, int] = {}
        bodies: list[Any] = []
        async with daemon.client() as http:
            for i in range(5):
                async with http.post(base, json={"sessionId": f"before-{i}", "label": "x" * 200}, headers=mgmt) as r:
                    assert r.status == 201
            filler = fill(state)
            for i in range(40):
                async with http.post(base, json={"sessionId": f"full-{i}", "label": "y" * 250}, headers=mgmt) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    body = await r.json(content_type=None)
                    if r.status >= 400:
                        bodies.append(body)
            async with http.get(f"{daemon.url}/health") as response:
                health_full = await response.json()
            filler.unlink()
            async with http.post(base, json={"sessionId": "after", "label": "z"}, headers=mgmt) as r:
                after_status = r.status
        await daemon.restart()
        async with daemon.client() as http, http.get(base, headers=mgmt) as response:
            listed = {s["id"] for s in (await response.json())["sessions"]}
        await daemon.stop()
        check = sqlite3.connect(state / "vm-agent.db").execute("PRAGMA integrity_check").fetchone()[0]
    record("disk full: answers to 40 writes", json.dumps(statuses), "", "clear 4xx/5xx JSON, no 500")
    record("disk full: store integrity after", check, "", "ok")
    assert check == "ok"
    assert {f"before-{i}" for i in range(5)} <= listed, "what was stored before the disk filled survives"
    assert "after" in listed and after_status == 201, "writes work again once there is space"
    assert all(isinstance(b, dict) and "error" in b and "message" in b for b in bodies), bodies[:3]
    assert health_full["status"] in ("healthy", "degraded")
    assert 500 not in statuses, f"a full disk must be a clear error, not internal_error: {bodies[:2]}"


def test_login_sessions_survive_clock_jumps_of_an_hour():
    """The cookie-session store takes an injectable clock: a jump of an hour either way (inside
    the 24 h TTL) neither logs browsers out nor keeps sessions alive past their TTL."""
    now = [1_000_000.0]
    store = SessionStore(ttl=24 * 3600, max_count=10, clock=lambda: now[0])
    principal = Principal(user_id="u", workspace_id="host", node_id=None, kind="user", expires_at=now[0] + 86400)
    session_id = store.create(principal)
    for jump in (3600, -7200, 3600):
        now[0] += jump
        assert store.get(session_id) == principal
    now[0] += 24 * 3600 + 1
    assert store.get(session_id) is None


async def test_wall_clock_jumps_keep_timers_tokens_and_sessions_sane(spawn_daemon, tmp_path):
    """The daemon under libfaketime (wall clock only; monotonic time untouched, as on a restored
    VM): tokens are judged against the daemon's clock with JWT_LEEWAY, terminal sessions and
    their orphan timers (monotonic) are unaffected, and the daemon stays healthy."""
    if not FAKETIME_AVAILABLE:
        pytest.skip("libfaketime is not installed (apt-get install libfaketime; scripts/install-stress-deps.sh)")
    offset_file = tmp_path / "faketime.rc"
    offset_file.write_text("+0s\n")
    daemon = await spawn_daemon(
        DEFAULT_SHELL=plain_shell(tmp_path), HOST_WORKSPACE_DIR=str(tmp_path), PTY_ORPHAN_GRACE_PERIOD="30s",
        LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(offset_file), FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1", FAKETIME_DONT_RESET="1",
    )
    results: dict[str, Any] = {}
    async with daemon.client() as http:
        ws = await http.ws_connect(f"{daemon.ws_url}/terminal/ws/multi", params={"token": daemon.token()})
        await ws.send_json({"type": "create_session", "data": {"sessionId": "clock", "rows": 24, "cols": 80}})
        await _until(ws, "session_created")
        await ws.close()  # orphaned: the 30 s grace timer runs on the monotonic clock

        async def whoami(token: str) -> int:
            async with http.get(f"{daemon.url}/auth/whoami", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

        for label, shift in (("forward", "+3600s"), ("back", "-3600s"), ("small", "+30s")):
            offset_file.write_text(f"{shift}\n")
            await asyncio.sleep(0.2)  # libfaketime rereads the file on its next clock call
            fresh = daemon.token("user")  # minted by the real (control-plane) clock
            results[label] = await whoami(fresh)
            async with http.get(f"{daemon.url}/health") as response:
                assert response.status == 200
        offset_file.write_text("+0s\n")
        await asyncio.sleep(0.2)
        results["restored"] = await whoami(daemon.token("user"))
        ws = await http.ws_connect(f"{daemon.ws_url}/terminal/ws/multi", params={"token": daemon.token()})
        await ws.send_json({"type": "reattach_session", "data": {"sessionId": "clock", "rows": 24, "cols": 80}})
        reattached = await _until(ws, "session_reattached", "error")
        await ws.close()
    record("clock +1h: fresh token", results["forward"], "", "200 (token still inside its lifetime)")
    record("clock -1h: fresh token", results["back"], "", "401 invalid_token: iat ahead of the VM clock > JWT_LEEWAY")
    record("clock +30s: fresh token", results["small"], "", "200 (within JWT_LEEWAY)")
    record("clock restored: fresh token", results["restored"], "", "200")
    assert results["small"] == 200 and results["restored"] == 200
    assert results["forward"] in (200, 401) and results["back"] in (200, 401)
    assert reattached["type"] == "session_reattached", "an hour of wall-clock jumps did not reap the orphan"
    assert not any('"request_failed"' in line for line in daemon.log_lines())


async def _until(ws: Any, *kinds: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            message = json.loads((await ws.receive()).data)
            if message["type"] in kinds:
                return message


_ = time  # the real clock is the control plane's; the daemon's is faked
