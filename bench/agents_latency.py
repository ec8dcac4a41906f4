"""What the gateway adds to a prompt's round trip with a REAL pi, against the fake LLM.

    .venv/bin/python bench/agents_latency.py [--prompts 40]

Peers, measured in the same run and interleaved prompt by prompt so drift hits both alike:
- direct: this process drives `pi --mode rpc` itself: `prompt` command → `agent_settled`.
- gateway: the daemon (its own process, TLS, as in production) runs pi as agent type `pi`; a
  viewer on /agent/ws sends `session/prompt` → the prompt's result.
Both pi processes talk to one fake LLM (tests/fakes/fake_llm.py, in this process) that answers
every request with a short streamed text, so the model's time is the same for both. The
difference of the medians is the gateway's added latency per prompt (target ≤ 2 ms).
Needs the agents from scripts/install-agents.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._served_daemon import ServedDaemon  # noqa: E402


@dataclass
class LatencyResult:
    direct: list[float]
    gateway: list[float]

    @property
    def added(self) -> float:
        """Median gateway round trip minus median direct round trip, in seconds."""
        return statistics.median(self.gateway) - statistics.median(self.direct)


# --- the daemon, in a child process -------------------------------------------------------------

async def serve(state: Path) -> None:
    from vm_agent.config import Settings
    from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks
    from vm_agent.logs import configure_logging
    from vm_agent.server import start_server

    configure_logging("warn", "text")
    key = DevKey.load_or_create(state / "key")
    runner, jwks_url = await serve_jwks(key)
    settings = Settings.from_env({
        "VM_AGENT_STATE_DIR": str(state / "daemon"), "VM_AGENT_HOST": "127.0.0.1", "VM_AGENT_PORT": "0",
        "JWKS_ENDPOINT": jwks_url, "JWT_ISSUER": DEV_ISSUER, "NODE_ID": "bench", "LOG_FORMAT": "text",
        "LOG_LEVEL": "warn", "HOST_WORKSPACE_DIR": os.environ["BENCH_WORKDIR"],
        "VM_AGENT_AGENT_PATH": os.environ["BENCH_AGENT_PATH"],
    })
    server = await start_server(settings)
    (state / "port").write_text(str(server.port))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await runner.cleanup()


# --- the two peers ------------------------------------------------------------------------------

class DirectPi:
    """`pi --mode rpc` driven by a bare loop: the floor the gateway is compared with."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.n = 0

    async def start(self) -> DirectPi:
        self.proc = await asyncio.create_subprocess_exec(
            "pi", "--mode", "rpc", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=self.env, cwd=self.cwd, limit=64 * 1024 * 1024)
        return self

    async def prompt(self) -> float:
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.n += 1
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps({"id": f"p{self.n}", "type": "prompt", "message": "hi"}).encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pi exited")
            if b'"agent_settled"' in line:
                return time.perf_counter() - t0

    async def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            await self.proc.wait()


class GatewayViewer:
    def __init__(self, daemon: ServedDaemon) -> None:
        self.daemon = daemon
        self.n = 0

    async def start(self) -> GatewayViewer:
        import aiohttp

        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        params = {"token": self.daemon.token(), "sessionId": "latency", "agentType": "pi"}
        self.ws = await self.http.ws_connect(f"wss://127.0.0.1:{self.daemon.port}/agent/ws", params=params,
                                             max_msg_size=0)
        return self

    async def prompt(self) -> float:
        self.n += 1
        request_id = f"p{self.n}"
        t0 = time.perf_counter()
        await self.ws.send_json({"jsonrpc": "2.0", "id": request_id, "method": "session/prompt",
                                 "params": {"prompt": [{"type": "text", "text": "hi"}]}})
        while True:
            msg = await self.ws.receive()
            if msg.type.name != "TEXT":
                raise RuntimeError(f"viewer socket ended: {msg.type}")
            data: dict[str, Any] = json.loads(msg.data)
            if data.get("id") == request_id and "method" not in data and ("result" in data or "error" in data):
                if "error" in data:
                    raise RuntimeError(f"prompt failed: {data['error']}")
                return time.perf_counter() - t0

    async def stop(self) -> None:
        await self.ws.close()
        await self.http.close()


# --- the measurement ----------------------------------------------------------------------------

async def pi_prompt_latency(prompts: int = 40) -> LatencyResult:
    """Round trips of `prompts` prompts through each peer, after one warm-up prompt each."""
    from tests.agents.conftest_real import RealAgents, agent_bin_dir
    from tests.fakes.fake_llm import FakeLLM, Reply

    bin_dir = agent_bin_dir()
    if bin_dir is None:
        raise SystemExit("pi is not installed: bash scripts/install-agents.sh")
    llm = await FakeLLM(default=Reply.say("Done.")).start()
    with tempfile.TemporaryDirectory() as tmp:
        home, workdir, state = Path(tmp, "home"), Path(tmp, "work"), Path(tmp, "state")
        for directory in (home, workdir, state):
            directory.mkdir()
        agents = RealAgents(bin_dir, home, workdir, llm)
        agents.configure_pi()
        env = {**os.environ, "HOME": str(home), "PATH": agents.path, "PI_OFFLINE": "1",
               "BENCH_WORKDIR": str(workdir), "BENCH_AGENT_PATH": str(bin_dir)}
        os.environ.update(env)  # the daemon child inherits it; its agents get HOME and PI_* from it
        daemon = await ServedDaemon(__file__, state).start()
        direct = await DirectPi(env, workdir).start()
        viewer = await GatewayViewer(daemon).start()
        try:
            await direct.prompt()
            await viewer.prompt()  # starts the daemon's pi
            result = LatencyResult([], [])
            for _ in range(prompts):
                result.direct.append(await direct.prompt())
                result.gateway.append(await viewer.prompt())
        finally:
            await viewer.stop()
            await direct.stop()
            await daemon.stop()
            await llm.close()
    return result


def _row(label: str, values: list[float]) -> str:
    p90 = sorted(values)[int(len(values) * 0.9)]
    return f"{label:<26}{statistics.median(values) * 1000:>10.2f}{p90 * 1000:>10.2f}{min(values) * 1000:>10.2f}"


async def main(args: argparse.Namespace) -> None:
    print(f"pi prompt latency: {args.prompts} prompts each, interleaved, {os.cpu_count()} CPUs")
    result = await pi_prompt_latency(args.prompts)
    print(f"{'path':<26}{'median ms':>10}{'p90 ms':>10}{'min ms':>10}")
    print(_row("direct (pi --mode rpc)", result.direct))
    print(_row("gateway (/agent/ws)", result.gateway))
    print(f"{'added by the gateway':<26}{result.added * 1000:>10.2f}   (target ≤ 2 ms)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(Path(sys.argv[2])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=40)
    asyncio.run(main(parser.parse_args()))
