"""Agent gateway benchmark: notification throughput to viewers, ordering, added prompt latency.

    .venv/bin/python bench/agents.py [--chunks 100000] [--viewers 10] [--prompts 50] [--repeat 3] [--no-pi]

The daemon runs in its own process (as in production; viewers must not share its event loop),
over TLS, with the fake ACP agent (tests/fakes/fake_acp_agent.py) registered as `fake`. Rows:

- direct: this process reads the fake agent's stdout itself (readline + json.loads): the
  ceiling the agent allows, the peer the gateway is compared with.
- gateway → N viewers: a prompt makes the agent write `--chunks` session/update lines as fast as
  it can; each viewer (a WebSocket on /agent/ws) counts notifications and checks that chunk i
  is followed by chunk i+1. Rate = chunks / (last chunk received - prompt sent), per viewer.
- prompt latency: `echo` prompts one after another, prompt → result, through the gateway vs.
  JSON-RPC straight to the agent's stdio; the difference is what the gateway adds. The same with
  a real pi against the fake LLM (tests/fakes/fake_llm.py) when scripts/install-agents.sh ran:
  `pi --mode rpc` driven directly (prompt → agent_settled) vs. through the gateway.
- daemon CPU per notification/prompt: from /proc, so it stays meaningful on a busy machine
  where wall-clock rates mostly measure the scheduler.

BENCH_PROFILE=/tmp/daemon.prof profiles the daemon process (cProfile, CPU time) for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import ssl
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._served_daemon import ServedDaemon  # noqa: E402

FAKE = REPO / "tests" / "fakes" / "fake_acp_agent.py"
CHUNK = re.compile(rb'"agent_message_chunk","content":\{"type":"text","text":"c(\d+) "')


# --- the daemon, in a child process -------------------------------------------------------------

async def serve(state: Path) -> None:
    from vm_agent.config import Settings
    from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks
    from vm_agent.logs import configure_logging
    from vm_agent.server import start_server

    configure_logging("warn", "text")
    key = DevKey.load_or_create(state / "key")
    runner, jwks_url = await serve_jwks(key)
    agents = state / "agents.json"
    agents.write_text(json.dumps({"agents": {"fake": {"command": [sys.executable, str(FAKE)]}}}))
    settings = Settings.from_env({
        "VM_AGENT_STATE_DIR": str(state / "daemon"), "VM_AGENT_HOST": "127.0.0.1", "VM_AGENT_PORT": "0",
        "JWKS_ENDPOINT": jwks_url, "JWT_ISSUER": DEV_ISSUER, "NODE_ID": "bench", "LOG_FORMAT": "text",
        "LOG_LEVEL": "warn", "AGENTS_CONFIG": str(agents), "HOST_WORKSPACE_DIR": str(state),
        "ACP_MESSAGE_BUFFER_SIZE": "200000", "ACP_MESSAGE_BUFFER_BYTES": "256MiB",
        "VM_AGENT_AGENT_PATH": os.environ.get("VM_AGENT_AGENT_PATH", ""),
    })
    server = await start_server(settings)
    (state / "port").write_text(str(server.port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    profile_to = os.environ.get("BENCH_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    await stop.wait()
    if profile_to:
        profiler.disable()
        profiler.dump_stats(profile_to)
    await server.stop()
    await runner.cleanup()


# --- the client side ------------------------------------------------------------------------------

class Daemon(ServedDaemon):
    def __init__(self, state: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(__file__, state, env)

    def cpu_split(self) -> tuple[float, float]:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick


class RawViewer:
    """A minimal /agent/ws client: one TLS socket, frames written by hand, and the stream scanned
    in bulk for chunk numbers. A full client library spends ~15 µs per message in Python, so ten
    of them in one process would measure the client, not the daemon."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tail = b""

    @classmethod
    async def connect(cls, port: int, token: str, session_id: str) -> RawViewer:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /agent/ws?token={token}&sessionId={session_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.decode(errors="replace"))
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        mask = os.urandom(4)
        size = len(payload)
        header = struct.pack("!BB", 0x81, 0x80 | size) if size < 126 else struct.pack("!BBH", 0x81, 0xFE, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def prompt(self, request_id: str, text: str) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "session/prompt",
                   "params": {"prompt": [{"type": "text", "text": text}]}})

    async def until(self, marker: bytes) -> None:
        while True:
            data = self.tail + await self.reader.read(1 << 20)
            if marker in data:
                self.tail = b""
                return
            self.tail = data[-256:]

    async def count_chunks(self, total: int, started: list[float]) -> tuple[int, int, float]:
        """Scan until chunk total-1; returns (chunks seen, reorderings, seconds since the prompt)."""
        expected, reorders, seen = 0, 0, 0
        while seen < total:
            data = await self.reader.read(1 << 20)
            if not data:
                raise RuntimeError("viewer socket ended")
            buf = self.tail + data
            end = 0
            for match in CHUNK.finditer(buf):
                n = int(match.group(1))
                reorders += n != expected
                expected, seen, end = n + 1, seen + 1, match.end()
            self.tail = buf[max(end, len(buf) - 256):]
        return seen, reorders, time.perf_counter() - started[0]

    def close(self) -> None:
        self.writer.close()


async def until_result(ws: Any, request_id: str) -> None:
    marker = f'"id":"{request_id}"'
    while True:
        msg = await ws.receive()
        if msg.type.name != "TEXT":
            raise RuntimeError("socket ended")
        if marker in msg.data and "method" not in msg.data:
            if '"result"' in msg.data:
                return
            if '"error"' in msg.data:
                raise RuntimeError(f"prompt failed: {msg.data}")


async def gateway_fanout(daemon: Daemon, session_id: str, viewers: int, chunks: int) -> list[tuple[int, int, float]]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        headers = {"Authorization": f"Bearer {daemon.token('management')}"}
        await http.post(f"https://127.0.0.1:{daemon.port}/workspaces/host/agent-sessions",
                        json={"sessionId": session_id, "agentType": "fake"}, headers=headers)
    sockets = [await RawViewer.connect(daemon.port, daemon.token("user"), session_id) for _ in range(viewers)]
    sockets[0].prompt("warm", "echo warm")  # starts the agent; every viewer sees its result
    for ws in sockets:
        await ws.until(b'"id":"warm","result"')
    started = [time.perf_counter()]
    sockets[0].prompt("go", f"chunks {chunks}")
    results = await asyncio.gather(*(ws.count_chunks(chunks, started) for ws in sockets))
    for ws in sockets:
        ws.close()
    return list(results)


async def direct_agent(chunks: int, prompts: int) -> tuple[float, list[float]]:
    """The fake agent read by a bare loop: chunks/s and per-prompt latency without the gateway."""
    proc = await asyncio.create_subprocess_exec(sys.executable, str(FAKE), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
    assert proc.stdin and proc.stdout
    ids = iter(range(1, 10**9))

    async def request(method: str, params: dict[str, Any]) -> Any:
        rid = next(ids)
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode() + b"\n")
        await proc.stdin.drain()
        while True:
            message = json.loads(await proc.stdout.readline())
            if message.get("id") == rid and "method" not in message:
                return message.get("result")

    await request("initialize", {"protocolVersion": 1})
    sid = (await request("session/new", {"cwd": ".", "mcpServers": []}))["sessionId"]
    latencies = []
    for _ in range(prompts):
        t0 = time.perf_counter()
        await request("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "echo hi"}]})
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    await request("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": f"chunks {chunks}"}]})
    rate = chunks / (time.perf_counter() - t0)
    proc.stdin.close()
    await proc.wait()
    return rate, latencies


async def gateway_latency(daemon: Daemon, prompts: int, agent: str = "fake", text: str = "echo hi") -> list[float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        params = {"token": daemon.token("user"), "sessionId": f"latency-{agent}", "agentType": agent}
        ws = await http.ws_connect(f"wss://127.0.0.1:{daemon.port}/agent/ws", params=params, max_msg_size=0)
        out = []
        for i in range(prompts + 1):
            t0 = time.perf_counter()
            await ws.send_json({"jsonrpc": "2.0", "id": f"p{i}", "method": "session/prompt",
                                "params": {"prompt": [{"type": "text", "text": text}]}})
            await until_result(ws, f"p{i}")
            if i:  # the first one starts the agent
                out.append(time.perf_counter() - t0)
        await ws.close()
        return out


async def pi_latency(prompts: int) -> tuple[list[float], list[float], float] | None:
    """Per-prompt latency with a real pi against the fake LLM: pi's own RPC on stdio vs. the
    gateway, and the daemon's CPU seconds per prompt. None when scripts/install-agents.sh has
    not been run."""
    from tests.agents.conftest_real import RealAgents, agent_bin_dir
    from tests.fakes.fake_llm import FakeLLM, Reply

    bin_dir = agent_bin_dir()
    if bin_dir is None or not (bin_dir / "node").exists():
        return None
    llm = await FakeLLM(default=Reply.say("ok")).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home, work = Path(tmp) / "home", Path(tmp) / "work"
            home.mkdir()
            work.mkdir()
            agents = RealAgents(bin_dir, home, work, llm)
            agents.configure_pi()
            env = {**os.environ, "HOME": str(home), "PATH": agents.path, "PI_OFFLINE": "1",
                   "PI_SKIP_VERSION_CHECK": "1", "PI_TELEMETRY": "0", "VM_AGENT_AGENT_PATH": str(bin_dir)}
            direct = await pi_direct(bin_dir, env, work, prompts)
            state = Path(tmp) / "daemon-state"
            state.mkdir()
            daemon = await Daemon(state, env).start()
            try:
                cpu0 = daemon.cpu_seconds()
                gateway = await gateway_latency(daemon, prompts, agent="pi", text="hi")
                cpu = (daemon.cpu_seconds() - cpu0) / (prompts + 1)
            finally:
                await daemon.stop()
            return direct, gateway, cpu
    finally:
        await llm.close()


async def pi_direct(bin_dir: Path, env: dict[str, str], work: Path, prompts: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(str(bin_dir / "pi"), "--mode", "rpc", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                                                env=env, cwd=work, limit=64 * 1024 * 1024)
    assert proc.stdin and proc.stdout
    out = []
    try:
        for i in range(prompts + 1):
            t0 = time.perf_counter()
            proc.stdin.write(json.dumps({"id": f"p{i}", "type": "prompt", "message": "hi"}).encode() + b"\n")
            await proc.stdin.drain()
            async with asyncio.timeout(60):
                while json.loads(await proc.stdout.readline()).get("type") != "agent_settled":
                    pass
            if i:
                out.append(time.perf_counter() - t0)
    finally:
        proc.kill()
        await proc.wait()
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.2f} ms (p90 {sorted(values)[int(len(values) * 0.9)] * 1000:.2f})"


def fanout_rates(results: list[tuple[int, int, float]]) -> tuple[float, int]:
    """(slowest viewer's notifications/s, total reorderings)."""
    return min(n / secs for n, _r, secs in results), sum(r for _n, r, _s in results)


async def main(args: argparse.Namespace) -> None:
    print(f"agent gateway benchmark: {args.chunks:,} chunks, {args.viewers} viewers, best of {args.repeat}, "
          f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), Python {sys.version.split()[0]}")
    direct = [await direct_agent(args.chunks, args.prompts) for _ in range(args.repeat)]
    direct_rate = max(rate for rate, _lat in direct)
    direct_lat = min((lat for _rate, lat in direct), key=statistics.median)
    rows: dict[int, tuple[float, int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        daemon = await Daemon(Path(tmp)).start()
        try:
            for row, viewers in enumerate((1, args.viewers)):
                best: tuple[float, int, float] | None = None
                for attempt in range(args.repeat):
                    cpu0 = daemon.cpu_seconds()
                    # a fresh session each time: a reused one would first replay its history
                    rate, reorders = fanout_rates(await gateway_fanout(daemon, f"v{row}-{viewers}-{attempt}",
                                                                       viewers, args.chunks))
                    cpu = (daemon.cpu_seconds() - cpu0) / args.chunks * 1e6
                    if best is None or rate > best[0]:
                        best = (rate, reorders if best is None else best[1] + reorders, cpu)
                    else:
                        best = (best[0], best[1] + reorders, min(best[2], cpu))
                assert best is not None
                rows[viewers] = best
            cpu0 = daemon.cpu_seconds()
            user0, sys0 = daemon.cpu_split()
            gw_lat = await gateway_latency(daemon, args.prompts)
            user1, sys1 = daemon.cpu_split()
            prompt_cpu = (daemon.cpu_seconds() - cpu0) / (args.prompts + 1) * 1e3
            prompt_user = (user1 - user0) / (args.prompts + 1) * 1e3
            prompt_sys = (sys1 - sys0) / (args.prompts + 1) * 1e3
        finally:
            await daemon.stop()
    pi = await pi_latency(args.prompts) if not args.no_pi else None

    print()
    print(f"{'path':<30}{'notif/s per viewer':>20}{'reorderings':>13}{'vs direct':>11}{'daemon CPU/notif':>18}")
    print(f"{'direct (agent stdout)':<30}{direct_rate:>20,.0f}{0:>13}{'1.00':>11}{'-':>18}")
    for viewers, (rate, reorders, cpu) in rows.items():
        label = f"gateway → {viewers} viewer{'s' if viewers > 1 else ''}"
        print(f"{label:<30}{rate:>20,.0f}{reorders:>13}{rate / direct_rate:>11.2f}{cpu:>15.1f} µs")
    print()
    print(f"{'prompt latency (echo)':<30}{'median':>20}")
    print(f"{'direct (agent stdio)':<30}{ms(direct_lat):>20}")
    print(f"{'gateway (/agent/ws)':<30}{ms(gw_lat):>20}")
    added = statistics.median(gw_lat) - statistics.median(direct_lat)
    print(f"{'added by the gateway':<30}{added * 1000:>17.2f} ms   (daemon CPU per prompt: {prompt_cpu:.2f} ms; "
          f"{prompt_user:.1f} ms user + {prompt_sys:.1f} ms system in 10 ms ticks)")
    if pi is not None:
        print(f"{'prompt latency (real pi)':<30}{'median':>20}")
        print(f"{'pi --mode rpc, direct':<30}{ms(pi[0]):>20}")
        print(f"{'pi through the gateway':<30}{ms(pi[1]):>20}")
        pi_added = statistics.median(pi[1]) - statistics.median(pi[0])
        print(f"{'added by the gateway':<30}{pi_added * 1000:>17.2f} ms   (daemon CPU per prompt: "
              f"{pi[2] * 1000:.2f} ms, including the agent's start)")
    else:
        print("real pi: not installed (bash scripts/install-agents.sh) or --no-pi; skipped")
    print("targets: >= 50,000/s to one viewer, >= 20,000/s to each of 10, zero reorderings, <= 2 ms added")
    print("(rates are wall-clock on a shared machine; daemon CPU per notification is the load-independent cost)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(Path(sys.argv[2])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pi", action="store_true", help="skip the real-pi latency rows")
    asyncio.run(main(parser.parse_args()))
