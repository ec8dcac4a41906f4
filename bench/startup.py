"""Start-up time to a /health answer and idle RSS of `vm-agent serve`, over several cold starts.

Prints a table; no assertions. Run: .venv/bin/python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._procstat import free_port, rss_bytes
from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks


async def one_start(key: DevKey, jwks_url: str, state: Path) -> tuple[float, int, str]:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(state), "VM_AGENT_STATE_DIR": str(state),
        "VM_AGENT_HOST": "127.0.0.1", "VM_AGENT_PORT": str(port), "JWKS_ENDPOINT": jwks_url,
        "JWT_ISSUER": DEV_ISSUER, "NODE_ID": "bench", "IDENTITY_FILE": "",
    }
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vm_agent", "serve", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http, asyncio.timeout(60):
        while True:
            try:
                async with http.get(f"https://127.0.0.1:{port}/health") as response:
                    # "degraded" counts: the daemon serves; only a check failed (no Docker here)
                    status = (await response.json())["status"]
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let start-up garbage settle before reading RSS
    rss = rss_bytes(process.pid)
    process.terminate()
    await process.wait()
    return elapsed, rss, status


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key = DevKey.load_or_create(Path(tmp) / "key")
        runner, url = await serve_jwks(key)
        state = Path(tmp) / "state"
        results = [await one_start(key, url, state) for _ in range(runs)]
        await runner.cleanup()
    times = sorted(t for t, _, _ in results)
    rss = sorted(r for _, r, _ in results)
    statuses = sorted({s for _, _, s in results})
    print(f"{'metric':<34}{'median':>12}{'min':>12}{'max':>12}")
    print(f"{'start-up to /health answer (ms)':<34}{statistics.median(times) * 1000:>12.0f}"
          f"{times[0] * 1000:>12.0f}{times[-1] * 1000:>12.0f}")
    print(f"/health status at start-up: {', '.join(statuses)}")
    print(f"{'idle RSS (MiB)':<34}{statistics.median(rss) / 2**20:>12.1f}"
          f"{rss[0] / 2**20:>12.1f}{rss[-1] / 2**20:>12.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args()
    asyncio.run(main(3 if args.quick else args.runs))
