"""The daemon as systemd and a newcomer run it: a real process, signals, sd_notify, dev tokens."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _wait_healthy(url: str, process: asyncio.subprocess.Process) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        async with asyncio.timeout(30):
            while True:
                assert process.returncode is None, "daemon exited during start-up"
                try:
                    async with http.get(f"{url}/health") as response:
                        return await response.json()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # polling a port that is not open yet: nothing to await


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET, drained continuously
    (as systemd does) so the daemon's watchdog pings never fill its queue."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.seen: list[str] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            state = (await loop.sock_recv(self.sock, 4096)).decode()
            async with self._arrived:
                self.seen.append(state)
                self._arrived.notify_all()

    async def wait_for(self, state: str) -> list[str]:
        async with asyncio.timeout(20), self._arrived:
            await self._arrived.wait_for(lambda: state in self.seen)
        return self.seen

    def close(self) -> None:
        self._reader.cancel()
        self.sock.close()


async def test_serve_notifies_systemd_and_drains_on_sigterm(tmp_path):
    key = DevKey.load_or_create(tmp_path / "key")
    jwks_runner, jwks_url = await serve_jwks(key)
    notify = NotifySocket(tmp_path / "notify.sock")
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VM_AGENT_STATE_DIR": str(tmp_path / "state"),
        "VM_AGENT_HOST": "127.0.0.1",
        "VM_AGENT_PORT": str(port),
        "JWKS_ENDPOINT": jwks_url,
        "JWT_ISSUER": DEV_ISSUER,
        "NODE_ID": "proc-node",
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "200000",
        "GRACEFUL_SHUTDOWN_TIMEOUT": "5s",
        "IDENTITY_FILE": str(tmp_path / "identity.json"),
        "IDENTITY_POLL_INTERVAL": "1h",
        "LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vm_agent", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert "READY=1" in await notify.wait_for("READY=1")
        assert "WATCHDOG=1" in await notify.wait_for("WATCHDOG=1")
        health = await _wait_healthy(f"https://127.0.0.1:{port}", process)
        assert health["nodeId"] == "proc-node"
        token = key.mint(kind="management", workspace=None, node="proc-node")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with http.get(
                f"https://127.0.0.1:{port}/system-info", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200
        # A snapshot restore writes a new identity; SIGHUP makes the daemon pick it up at once.
        (tmp_path / "identity.json").write_text('{"nodeId": "restored-node"}')
        process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(10):
            while b"identity_changed" not in await process.stderr.readline():
                pass
        health = await _wait_healthy(f"https://127.0.0.1:{port}", process)
        assert health["nodeId"] == "restored-node"
        process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in await notify.wait_for("STOPPING=1")
        async with asyncio.timeout(10):
            code = await process.wait()
        assert code == 0
        stderr = (await process.stderr.read()).decode()
        assert "daemon_stopped" in stderr
        assert "Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await jwks_runner.cleanup()
        notify.close()


async def test_dev_prints_tokens_that_work(tmp_path):
    port = _free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vm_agent", "dev", "--port", str(port), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        banner = ""
        async with asyncio.timeout(30):
            while "more tokens:" not in banner:
                line = await process.stderr.readline()
                assert line, "dev exited before printing its banner"
                banner += line.decode()
        tokens = re.findall(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", banner)
        assert f"https://127.0.0.1:{port}" in banner
        console_token, user_token, management_token = tokens[:3]
        assert console_token == user_token  # the console link logs in as the printed user
        url = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with http.get(f"{url}/system-info", headers={"Authorization": f"Bearer {management_token}"}) as r:
                assert r.status == 200
            async with http.get(f"{url}/auth/whoami", headers={"Authorization": f"Bearer {user_token}"}) as r:
                assert (await r.json())["workspaceId"] == "host"
        minted = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vm_agent",
            "token",
            "--kind",
            "user",
            "--workspace",
            "ws-1",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        extra = (await minted.communicate())[0].decode().strip()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with http.get(f"{url}/auth/whoami", headers={"Authorization": f"Bearer {extra}"}) as r:
                assert (await r.json())["workspaceId"] == "ws-1"
        # The self-signed certificate is kept and reused on restart.
        cert = tmp_path / "xdg" / "vm-agent" / "tls" / "cert.pem"
        assert cert.exists()
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
