"""Benchmark: POST /workspaces → running, against a plain `docker run` of the same image.

    .venv/bin/python -m bench.workspaces [--rounds 10] [--count 20]

Starts the real daemon as a subprocess (`python -m vm_agent serve`, TLS, a local JWKS), builds
the offline test image (tests/images), then alternates, round after round:
  - peer:   `docker run -d` of the image with a named volume at /workspaces (CLI, until it exits)
  - daemon: POST /workspaces, then GET /workspaces/{id} every 10 ms until `running`
Target: daemon median within 10% + 100 ms of the peer median. Then the daemon's memory: its RSS
with no workspaces vs with `--count` running ones, per workspace. Needs Docker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._procstat import free_port, rss_bytes  # noqa: E402
from tests.images.build import ensure_image  # noqa: E402
from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks  # noqa: E402
from vm_agent.workspaces.provision import KEEPALIVE  # noqa: E402

PREFIX = "bench" + secrets.token_hex(3)
NODE = "bench-node"


class Bench:
    def __init__(self, image: str, state: Path) -> None:
        self.image = image
        self.state = state
        self.key = DevKey.load_or_create(state / "key")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.headers = {"Authorization": "Bearer " + self.key.mint(kind="management", workspace=None, node=NODE)}

    async def start(self) -> None:
        self.jwks_runner, jwks_url = await serve_jwks(self.key)
        env = {
            **os.environ, "VM_AGENT_STATE_DIR": str(self.state / "daemon"), "VM_AGENT_HOST": "127.0.0.1",
            "VM_AGENT_PORT": str(self.port), "JWKS_ENDPOINT": jwks_url, "JWT_ISSUER": DEV_ISSUER,
            "NODE_ID": NODE, "WORKSPACE_IMAGE": self.image, "LOG_LEVEL": "warn",
        }
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "vm_agent", "serve", env=env,
                                                         cwd=ROOT)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        async with asyncio.timeout(30):
            while True:
                try:
                    async with self.http.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.http:
            await self.http.close()
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        await self.jwks_runner.cleanup()

    async def create_until_running(self, ws: str) -> float:
        assert self.http is not None
        start = time.perf_counter()
        async with self.http.post(self.url + "/workspaces", json={"workspaceId": ws}, headers=self.headers) as r:
            assert r.status == 202, await r.text()
        while True:
            async with self.http.get(f"{self.url}/workspaces/{ws}", headers=self.headers) as r:
                status = (await r.json())["status"]
            if status == "running":
                return time.perf_counter() - start
            if status == "error":
                raise RuntimeError(f"workspace {ws} failed")
            await asyncio.sleep(0.01)

    async def delete(self, ws: str) -> None:
        assert self.http is not None
        async with self.http.delete(f"{self.url}/workspaces/{ws}", headers=self.headers) as r:
            assert r.status == 200, await r.text()


async def docker_run(image: str, name: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "docker", "run", "-d", "--name", name, "--label", f"vm-agent.bench={PREFIX}",
        "-v", f"{name}-data:/workspaces", "--entrypoint", KEEPALIVE[0], image, *KEEPALIVE[1:],
        stdout=asyncio.subprocess.DEVNULL,
    )
    if await proc.wait() != 0:
        raise RuntimeError("docker run failed")
    return time.perf_counter() - start


def _summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))], ordered[0]


async def main(rounds: int, count: int) -> int:
    client = docker.from_env()
    state = Path(tempfile.mkdtemp(prefix="vm-agent-bench-"))
    image = ensure_image(client, state)
    bench = Bench(image, state)
    await bench.start()
    try:
        for i in range(2):  # warm up both paths (imports, thread pool, page cache)
            await bench.create_until_running(f"{PREFIX}-warm{i}")
            await docker_run(image, f"{PREFIX}-peerwarm{i}")
        peer, ours = [], []
        for i in range(rounds):
            pair = [("peer", lambda i=i: docker_run(image, f"{PREFIX}-peer{i}")),
                    ("ours", lambda i=i: bench.create_until_running(f"{PREFIX}-ws{i}"))]
            for kind, run in pair if i % 2 == 0 else reversed(pair):
                (peer if kind == "peer" else ours).append(await run())
        for i in range(2):
            await bench.delete(f"{PREFIX}-warm{i}")
        for i in range(rounds):
            await bench.delete(f"{PREFIX}-ws{i}")

        assert bench.proc is not None
        base_rss = rss_bytes(bench.proc.pid)
        ids = [f"{PREFIX}-mem{i}" for i in range(count)]
        await asyncio.gather(*(bench.create_until_running(ws) for ws in ids))
        loaded_rss = rss_bytes(bench.proc.pid)
        await asyncio.gather(*(bench.delete(ws) for ws in ids))
    finally:
        await bench.stop()
        for c in client.containers.list(all=True, filters={"name": PREFIX}):
            c.remove(force=True)
        for v in client.volumes.list(filters={"name": PREFIX}):
            v.remove(force=True)

    p_med, p_p90, p_min = _summary(peer)
    o_med, o_p90, o_min = _summary(ours)
    target = p_med * 1.10 + 0.100
    print(f"\nworkspace creation, {rounds} rounds, image {image}")
    print(f"{'':34} {'median':>9} {'p90':>9} {'min':>9}")
    print(f"{'docker run -d (peer)':34} {p_med * 1000:8.0f}ms {p_p90 * 1000:8.0f}ms {p_min * 1000:8.0f}ms")
    print(f"{'POST /workspaces -> running':34} {o_med * 1000:8.0f}ms {o_p90 * 1000:8.0f}ms {o_min * 1000:8.0f}ms")
    print(f"ratio (median) {o_med / p_med:.2f}x; target <= peer*1.10+100ms = {target * 1000:.0f}ms: "
          f"{'MET' if o_med <= target else 'MISSED'}")
    print(f"\ndaemon memory: {base_rss / 2**20:.1f} MiB idle, {loaded_rss / 2**20:.1f} MiB with {count} "
          f"running workspaces -> {(loaded_rss - base_rss) / count / 1024:.0f} KiB per workspace")
    return 0 if o_med <= target else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.count)))
