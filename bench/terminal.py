"""Terminal benchmark: vm-agent beside terminado, the asyncio floor and the raw PTY rate, in one run.

    .venv/bin/python bench/terminal.py [--quick] [--only throughput,echo,open,stall,replay] [--peers vm-agent]

Every server runs as its own process, over TLS with the same certificate, serving the same
shell (/bin/sh, empty HOME) to the same client code in this process. The raw PTY figure is the
same command read straight from a PTY by a minimal reader: the ceiling; for opening sessions,
the same login shells started on PTYs by a plain loop (bench/raw_pty.py). The asyncio floor
(bench/floor_relay.py) is the least a Python relay can do, measured for echo and throughput:
what vm-agent costs beyond it is the price of its features. Prints a table; no assertions.
The "CPU stolen by hypervisor" rows tell a calm run (near 0%) from one a noisy neighbour slowed.
`--quick` uses ~20 MB instead of ~90 MB and skips the 1,000-session row.
BENCH_PROFILE=/tmp/terminal.prof runs vm-agent under cProfile (written when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.lean_ws import LeanSocket
from bench.raw_pty import raw_pty_rate, raw_spawn_seconds
from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks

SHELL = "/bin/sh"
DONE = "__BENCH" + "DONE__"
DONE_CMD = "printf '%s%s\\n' __BENCH DONE__"
MB = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time the process's live threads have run, from the scheduler's nanosecond counters
    (/proc/…/stat's tick sampling over-charges a process whose wake-ups follow the timer tick,
    as keystroke echoes through a PTY do)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


def host_cpu_ticks() -> tuple[int, int]:
    """(ticks stolen by the hypervisor, all ticks) summed over the host's CPUs, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


class StealMeter:
    """Share of CPU time the hypervisor took from this VM while a measurement ran: a noisy
    neighbour shows here, and its rows are not comparable with a calm run's."""

    def __init__(self) -> None:
        self._steal, self._total = host_cpu_ticks()

    def percent(self) -> float:
        steal, total = host_cpu_ticks()
        return 100 * (steal - self._steal) / max(total - self._total, 1)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------- clients
class Term:
    """One terminal as seen by a client; subclasses speak each server's protocol."""

    ws: aiohttp.ClientWebSocketResponse

    async def send(self, text: str) -> None:
        raise NotImplementedError

    def texts(self, raw: str) -> list[str]:
        raise NotImplementedError

    async def read_until(self, needle: str, timeout: float = 600) -> int:
        """Read output until `needle` appears; returns the number of characters read."""
        count = 0
        tail = ""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket ended: {msg.type}")
                for text in self.texts(msg.data):
                    count += len(text)
                    window = tail + text
                    if needle in window:
                        return count
                    tail = window[-64:]


class VmAgentTerm(Term):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id

    def encode_input(self, text: str) -> str:
        return json.dumps({"type": "input", "sessionId": self.session_id, "data": {"data": text}})

    async def send(self, text: str) -> None:
        await self.ws.send_str(self.encode_input(text))

    def texts(self, raw: str) -> list[str]:
        message = json.loads(raw)
        if message["type"] in ("output", "scrollback"):
            return [message["data"]["data"]]
        return []


class TerminadoTerm(Term):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @staticmethod
    def encode_input(text: str) -> str:
        return json.dumps(["stdin", text])

    async def send(self, text: str) -> None:
        await self.ws.send_str(self.encode_input(text))

    def texts(self, raw: str) -> list[str]:
        message = json.loads(raw)
        return [message[1]] if message[0] == "stdout" else []


class LeanTerm:
    """A terminal read through the lean client (bench/lean_ws.py), in a worker thread."""

    def __init__(self, sock: LeanSocket, encode: Callable[[str], str], texts: Callable[[str], list[str]]) -> None:
        self.sock = sock
        self._encode = encode
        self._texts = texts

    def send(self, text: str) -> None:
        self.sock.send_text(self._encode(text))

    def read_text_until(self, needle: str, timeout: float = 600) -> None:
        """Decode frames as the peer's JSON until `needle` shows in the output text."""
        deadline = time.monotonic() + timeout
        tail = ""
        while True:
            for text in self._texts(self.sock.receive().decode()):
                window = tail + text
                if needle in window:
                    return
                tail = window[-64:]
            if time.monotonic() > deadline:
                raise TimeoutError(needle)

    def ready(self) -> None:
        self.send("printf '%s%s\\n' RE ADY\r")
        self.read_text_until("READY")


class Peer:
    name = ""
    pid = 0
    measures = frozenset({"throughput", "echo", "open", "stall", "replay"})

    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.port = port
        self._count = 0

    async def open(self) -> Term:
        raise NotImplementedError

    def open_lean(self) -> LeanTerm:
        """A terminal through the lean client (blocking: call it in a worker thread)."""
        raise NotImplementedError

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        """Open `count` sessions; returns a coroutine function that closes them."""
        raise NotImplementedError

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        """(connect + replay seconds, bytes replayed, replay seconds on an open socket or None)."""
        raise NotImplementedError

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        raise NotImplementedError


class VmAgent(Peer):
    name = "vm-agent"

    def __init__(self, http: aiohttp.ClientSession, port: int, token: str) -> None:
        super().__init__(http, port)
        self.token = token
        self.url = f"wss://127.0.0.1:{port}/terminal/ws/multi?token={token}"

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url, max_msg_size=0)

    async def open(self, session_id: str | None = None) -> VmAgentTerm:
        self._count += 1
        session_id = session_id or f"bench-{self._count}"
        ws = await self._socket()
        create = {"sessionId": session_id, "rows": 24, "cols": 80}
        await ws.send_str(json.dumps({"type": "create_session", "data": create}))
        return VmAgentTerm(ws, session_id)

    def open_lean(self) -> LeanTerm:
        self._count += 1
        session_id = f"lean-{self._count}"
        sock = LeanSocket(self.port, f"/terminal/ws/multi?token={self.token}")
        sock.send_json({"type": "create_session", "data": {"sessionId": session_id, "rows": 24, "cols": 80}})
        term = VmAgentTerm(None, session_id)  # type: ignore[arg-type]
        return LeanTerm(sock, term.encode_input, term.texts)

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        ws = await self._socket()
        base = self._count = self._count + 1
        for i in range(count):
            create = {"sessionId": f"many-{base}-{i}", "rows": 24, "cols": 80}
            await ws.send_str(json.dumps({"type": "create_session", "data": create}))
        await _count_messages(ws, "session_created", count)

        async def close() -> None:
            for i in range(count):
                await ws.send_str(json.dumps({"type": "close_session", "data": {"sessionId": f"many-{base}-{i}"}}))
            await _count_messages(ws, "session_closed", count)
            await ws.close()

        return close

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        first = await self.open(name)
        await prepare(first)
        await first.ws.close()
        return await asyncio.to_thread(self._timed_reattach, name)

    def _timed_reattach(self, name: str) -> tuple[float, int, float]:
        """Connect, reattach and receive the whole scrollback frame through the lean client
        (the frame is not parsed as JSON: a 1 MiB json.loads would be the client's time)."""
        started = time.perf_counter()
        sock = LeanSocket(self.port, f"/terminal/ws/multi?token={self.token}")
        connected = time.perf_counter()
        sock.send_json({"type": "reattach_session", "data": {"sessionId": name, "rows": 24, "cols": 80}})
        while True:
            payload = sock.receive()
            if payload.startswith(b'{"type":"scrollback"'):
                done = time.perf_counter()
                sock.close()
                return done - started, len(payload), done - connected

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        create = {"type": "create_session", "data": {"sessionId": "stalled", "rows": 24, "cols": 80}}
        typed = {"type": "input", "sessionId": "stalled", "data": {"data": command + "\r"}}
        return await raw_stalled_client(self.port, f"/terminal/ws/multi?token={self.token}", [create, typed])


class Terminado(Peer):
    name = "terminado"

    async def open(self) -> TerminadoTerm:
        ws = await self.http.ws_connect(f"wss://127.0.0.1:{self.port}/websocket", max_msg_size=0)
        return TerminadoTerm(ws)

    def open_lean(self) -> LeanTerm:
        term = TerminadoTerm(None)  # type: ignore[arg-type]
        return LeanTerm(LeanSocket(self.port, "/websocket"), term.encode_input, term.texts)

    async def open_many(self, count: int) -> Callable[[], Awaitable[None]]:
        gate = asyncio.Semaphore(64)  # tornado's accept backlog is 128

        async def one() -> aiohttp.ClientWebSocketResponse:
            async with gate:
                ws = await self.http.ws_connect(f"wss://127.0.0.1:{self.port}/websocket", max_msg_size=0)
                while json.loads((await ws.receive()).data)[0] != "setup":
                    pass
                return ws

        sockets = await asyncio.gather(*(one() for _ in range(count)))

        async def close() -> None:
            await asyncio.gather(*(ws.close() for ws in sockets))

        return close

    async def reattach_elapsed(
        self, name: str, prepare: Callable[[Term], Awaitable[None]]
    ) -> tuple[float, int, float | None]:
        url = f"wss://127.0.0.1:{self.port}/named/{name}"
        first = TerminadoTerm(await self.http.ws_connect(url, max_msg_size=0))
        await prepare(first)
        await first.ws.close()
        return await asyncio.to_thread(self._timed_reattach, name)

    def _timed_reattach(self, name: str) -> tuple[float, int, None]:
        started = time.perf_counter()
        sock = LeanSocket(self.port, f"/named/{name}")
        while True:
            payload = sock.receive()
            if payload.startswith(b'["stdout"'):
                elapsed = time.perf_counter() - started
                sock.close()
                return elapsed, len(payload), None  # terminado replays during the handshake

    async def stalled(self, command: str) -> asyncio.StreamWriter:
        return await raw_stalled_client(self.port, "/websocket", [["stdin", command + "\r"]])


class FloorRelay(Peer):
    """bench/floor_relay.py: the least a Python asyncio relay does (echo and throughput only)."""

    name = "asyncio floor"
    measures = frozenset({"throughput", "echo"})

    def open_lean(self) -> LeanTerm:
        self._count += 1
        session_id = f"floor-{self._count}"
        sock = LeanSocket(self.port, "/")
        sock.send_json({"type": "create_session", "data": {"sessionId": session_id, "rows": 24, "cols": 80}})
        term = VmAgentTerm(None, session_id)  # type: ignore[arg-type]
        return LeanTerm(sock, term.encode_input, term.texts)


async def _count_messages(ws: aiohttp.ClientWebSocketResponse, kind: str, count: int) -> None:
    seen = 0
    while seen < count:
        message = json.loads((await ws.receive()).data)
        if message["type"] == kind:
            seen += 1
        elif message["type"] == "error":
            raise RuntimeError(message)


def _frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + struct.pack("!H", len(payload))
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_stalled_client(port: int, path: str, messages: list) -> asyncio.StreamWriter:
    """A WebSocket client that sends `messages` and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="127.0.0.1", limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.5)  # let the session come up before typing
    for message in messages:
        writer.write(_frame(json.dumps(message)))
    await writer.drain()
    return writer


# ---------------------------------------------------------------------- servers
TERMINADO_SERVER = textwrap.dedent(
    """
    import sys, ssl, tornado.ioloop, tornado.web, terminado
    port, cert, key, shell = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    unique = terminado.UniqueTermManager(shell_command=[shell, "-l"])
    named = terminado.NamedTermManager(shell_command=[shell, "-l"])
    app = tornado.web.Application([
        (r"/websocket", terminado.TermSocket, {"term_manager": unique}),
        (r"/named/(\\w+)", terminado.TermSocket, {"term_manager": named}),
    ])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app.listen(port, "127.0.0.1", ssl_options=context)
    print("ready", flush=True)
    tornado.ioloop.IOLoop.current().start()
    """
)


async def start_server(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """A peer server (`python *args`), once it has printed its ready line."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert server.stdout is not None
    await server.stdout.readline()
    return server


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- measurements
async def ready(term: Term) -> None:
    await term.send("printf '%s%s\\n' RE ADY\r")
    await term.read_until("READY")


def throughput(peer: Peer, command: str, size: int) -> float:
    """Bytes/s of `command`'s output (`size` bytes, as the raw PTY run counted) through `peer`.

    Frames are only scanned for the end marker, never decoded: the client must not be what is
    measured. Blocking; run in a worker thread.
    """
    term = peer.open_lean()
    term.ready()
    started = time.perf_counter()
    term.send(f"{command}; {DONE_CMD}\r")
    term.sock.read_until(DONE.encode())
    rate = size / (time.perf_counter() - started)
    term.sock.close()
    return rate


def echo_latency(peer: Peer, keys: int) -> tuple[float, float, float]:
    """Keystroke to echo, p50 and p99 seconds, over `keys` keys into `cat`, and the server's
    CPU seconds per key. Blocking."""
    term = peer.open_lean()
    term.ready()
    term.send("cat\r")
    term.send("x")
    term.read_text_until("x")
    samples = []
    cpu = cpu_seconds(peer.pid)
    for i in range(keys):
        key = "ab"[i % 2]
        started = time.perf_counter()
        term.send(key)
        term.read_text_until(key, timeout=10)
        samples.append(time.perf_counter() - started)
    cpu = cpu_seconds(peer.pid) - cpu
    term.sock.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)], cpu / keys


async def open_sessions(peer: Peer, count: int) -> tuple[float, float, float]:
    """Seconds to open `count` sessions, daemon RSS bytes per open idle session, and daemon
    CPU seconds per session opened."""
    before = rss_bytes(peer.pid)
    cpu = cpu_seconds(peer.pid)
    started = time.perf_counter()
    close = await peer.open_many(count)
    elapsed = time.perf_counter() - started
    cpu = (cpu_seconds(peer.pid) - cpu) / count
    await asyncio.sleep(1.0)  # shells print their prompt and go idle
    per_session = (rss_bytes(peer.pid) - before) / count
    await close()
    return elapsed, per_session, cpu


async def stalled_client(peer: Peer, data: Path, work: Path) -> tuple[float, float, bool]:
    """RSS growth (bytes) and program run time (s) while a client that never reads is attached."""
    done = work / f"stall-{peer.name}"
    before = rss_bytes(peer.pid)
    peak = before
    started = time.perf_counter()
    writer = await peer.stalled(f"base64 -w 100 {data}; touch {done}")
    finished = True
    try:
        async with asyncio.timeout(180):
            while not done.exists():
                peak = max(peak, rss_bytes(peer.pid))
                await asyncio.sleep(0.05)
    except TimeoutError:
        finished = False
    elapsed = time.perf_counter() - started
    peak = max(peak, rss_bytes(peer.pid))
    writer.close()
    return peak - before, elapsed, finished


async def replay(peer: Peer, data_1m: Path) -> tuple[float, int, float | None]:
    async def prepare(term: Term) -> None:
        await ready(term)
        await term.send(f"base64 -w 100 {data_1m}; {DONE_CMD}\r")
        await term.read_until(DONE)

    return await peer.reattach_elapsed(f"replay{peer.name.replace('-', '')}", prepare)


# ---------------------------------------------------------------------- main
async def main(quick: bool, only: set[str], peer_names: set[str]) -> None:
    size = 15 * MB if quick else int(67.5 * MB)  # base64 makes it 4/3 larger: ~20 / ~90 MB
    keys = 500 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        data = tmp / "data.bin"
        data.write_bytes(os.urandom(size))
        data_1m = tmp / "data1m.bin"
        data_1m.write_bytes(os.urandom(800_000))  # ~1.08 MB of base64 lines on the terminal

        key = DevKey.load_or_create(tmp / "key")
        jwks_runner, jwks_url = await serve_jwks(key)
        agent_port = free_port()
        state = tmp / "state"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "VM_AGENT_STATE_DIR": str(state),
            "VM_AGENT_HOST": "127.0.0.1",
            "VM_AGENT_PORT": str(agent_port),
            "JWKS_ENDPOINT": jwks_url,
            "JWT_ISSUER": DEV_ISSUER,
            "NODE_ID": "bench",
            "DEFAULT_SHELL": SHELL,
            "HOST_WORKSPACE_DIR": str(home),
            # the echo run sends 2,000 keys as fast as they come back: above the default inbound
            # rate limit meant for people (500/s), which would close the socket with 1008
            "TERMINAL_WS_MESSAGE_RATE": "100000",
            "LOG_LEVEL": "warn",
            "PTY_MAX_SESSIONS_PER_USER": "2000",
        }
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        agent = await asyncio.create_subprocess_exec(
            sys.executable, *profile, "-m", "vm_agent", "serve", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        results: dict[str, dict[str, str]] = {}
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, limit=0))
        try:
            await wait_ready(http, f"https://127.0.0.1:{agent_port}/health")
            cert, cert_key = state / "tls" / "cert.pem", state / "tls" / "key.pem"
            tls_and_shell = (str(cert), str(cert_key), SHELL)
            tornado_port, floor_port = free_port(), free_port()
            tornado = await start_server(env, "-c", TERMINADO_SERVER, str(tornado_port), *tls_and_shell)
            floor_script = str(Path(__file__).with_name("floor_relay.py"))
            floor = await start_server(env, floor_script, str(floor_port), *tls_and_shell)
            vm = VmAgent(http, agent_port, key.mint(kind="user", workspace="host", user="bench"))
            vm.pid = agent.pid
            td = Terminado(http, tornado_port)
            td.pid = tornado.pid
            fl = FloorRelay(http, floor_port)
            fl.pid = floor.pid
            peers: list[Peer] = [peer for peer in (td, fl, vm) if not peer_names or peer.name in peer_names]
            results = await measure(peers, data, size, data_1m, tmp, keys, quick, only)
            for server in (tornado, floor):
                server.terminate()
                await server.wait()
        finally:
            await http.close()
            agent.terminate()
            await agent.wait()
            await jwks_runner.cleanup()
    print_table(results, size * 4 // 3 / MB)


async def measure(
    peers: list[Peer], data: Path, data_bytes: int, data_1m: Path, tmp: Path, keys: int, quick: bool,
    only: set[str],
) -> dict:
    rows: dict[str, dict[str, str]] = {}
    lines_cmd, one_cmd = f"base64 -w 100 {data}", f"base64 -w 0 {data}"
    raw_rates: dict[str, list[float]] = {"text lines": [], "one long line": []}
    floors: dict[int, list[float]] = {200: [], 1000: []}
    home = tmp / "home"
    _, lines_size = await asyncio.to_thread(raw_pty_rate, SHELL, lines_cmd, tmp)
    _, one_size = await asyncio.to_thread(raw_pty_rate, SHELL, one_cmd, tmp)
    for peer in peers:
        lines, one = (lines_cmd, lines_size), (one_cmd, one_size)
        wanted = (only or {"throughput", "echo", "open", "stall", "replay"}) & peer.measures
        if "throughput" in wanted:
            await _guard(rows, peer.name, "throughput", _throughputs(rows, peer, lines, one, tmp, raw_rates))
        if "echo" in wanted:
            await _guard(rows, peer.name, "echo", _echo(rows, peer, keys))
        if "open" in wanted:
            # Idle RSS before the big-buffer runs, whose memory is being returned meanwhile.
            await _guard(rows, peer.name, "open 200", _open(rows, peer, 200, home, floors))
            await asyncio.sleep(2)  # let the closed terminals' processes go
        if "stall" in wanted:
            await _guard(rows, peer.name, "stall", _stall(rows, peer, data, tmp))
        if "replay" in wanted:
            await _guard(rows, peer.name, "replay", _replay(rows, peer, data_1m))
        # Last: closing 1,000 terminals keeps a server busy for a while.
        if "open" in wanted and not quick:
            await _guard(rows, peer.name, "open 1,000", _open(rows, peer, 1000, home, floors))
    for row, rates in raw_rates.items():
        if rates:
            rows[f"throughput, {row} (MB/s)"]["raw PTY"] = f"{statistics.mean(rates) / MB:.1f}"
    for count, seconds in floors.items():
        if seconds:
            rows[f"open {count:,} sessions (s)"]["raw PTY"] = f"{statistics.mean(seconds):.2f}"
    return rows


async def _guard(rows: dict, peer: str, what: str, run: Awaitable[None]) -> None:
    """One measurement failing (a peer that cannot do it) must not lose the others."""
    try:
        await run
    except Exception as exc:
        rows.setdefault(f"{what}: failed", {})[peer] = f"{type(exc).__name__}"[:28]


async def _throughputs(
    rows: dict, peer: Peer, lines: tuple[str, int], one: tuple[str, int], tmp: Path, raw_rates: dict[str, list[float]]
) -> None:
    """Each run sits between two raw PTY runs of the same command, and its ratio is taken
    against their mean: on a shared machine the ceiling itself moves from minute to minute."""
    steal = StealMeter()
    for row, (command, size) in (("text lines", lines), ("one long line", one)):
        before, _ = await asyncio.to_thread(raw_pty_rate, SHELL, command, tmp)
        cpu = cpu_seconds(peer.pid)
        rate = await asyncio.to_thread(throughput, peer, command, size)
        cpu = cpu_seconds(peer.pid) - cpu
        after, _ = await asyncio.to_thread(raw_pty_rate, SHELL, command, tmp)
        raw_rates[row] += [before, after]
        ceiling = (before + after) / 2
        rows.setdefault(f"throughput, {row} (MB/s)", {})[peer.name] = f"{rate / MB:.1f} ({rate / ceiling:.0%} of raw)"
        rows.setdefault(f"  server CPU per MB, {row} (ms)", {})[peer.name] = f"{cpu * 1000 / (size / MB):.1f}"
    rows.setdefault("  CPU stolen by hypervisor, throughput (%)", {})[peer.name] = f"{steal.percent():.1f}"


async def _echo(rows: dict, peer: Peer, keys: int) -> None:
    steal = StealMeter()
    p50, p99, cpu = await asyncio.to_thread(echo_latency, peer, keys)
    rows.setdefault(f"echo latency p50 / p99 over {keys} keys (us)", {})[peer.name] = (
        f"{p50 * 1e6:.0f} / {p99 * 1e6:.0f}"
    )
    rows.setdefault("  server CPU per key (us)", {})[peer.name] = f"{cpu * 1e6:.0f}"
    rows.setdefault("  CPU stolen by hypervisor, echo (%)", {})[peer.name] = f"{steal.percent():.1f}"


async def _open(rows: dict, peer: Peer, count: int, home: Path, floors: dict[int, list[float]]) -> None:
    """Like throughput, the run sits between two runs of its floor (the same shells started by a
    plain loop) and its ratio is taken against their mean: most of the time is the shells'."""
    steal = StealMeter()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    before = await asyncio.to_thread(raw_spawn_seconds, SHELL, count, env)
    seconds, per_session, cpu = await open_sessions(peer, count)
    after = await asyncio.to_thread(raw_spawn_seconds, SHELL, count, env)
    floors[count] += [before, after]
    floor = (before + after) / 2
    rows.setdefault(f"open {count:,} sessions (s)", {})[peer.name] = f"{seconds:.2f} ({seconds / floor:.2f}x floor)"
    rows.setdefault(f"  server CPU per session opened, {count:,} (ms)", {})[peer.name] = f"{cpu * 1000:.2f}"
    stolen = f"{steal.percent():.1f}"
    rows.setdefault(f"  CPU stolen by hypervisor, open {count:,} (%)", {})[peer.name] = stolen
    if count == 200:
        rows.setdefault("daemon RSS per idle session (KB)", {})[peer.name] = f"{per_session / 1000:.1f}"


async def _stall(rows: dict, peer: Peer, data: Path, tmp: Path) -> None:
    growth, elapsed, finished = await stalled_client(peer, data, tmp)
    held = "not held" if finished else "HELD at 180 s"
    rows.setdefault("stalled client: daemon RSS growth, program time", {})[peer.name] = (
        f"+{growth / MB:.1f} MB, {elapsed:.1f} s, {held}"
    )


async def _replay(rows: dict, peer: Peer, data_1m: Path) -> None:
    seconds, replayed, replay_only = await replay(peer, data_1m)
    rows.setdefault("reconnect and catch up on ~1 MiB: ms / bytes", {})[peer.name] = (
        f"{seconds * 1000:.1f} / {replayed / 1024:.0f} KiB"
    )
    if replay_only is not None:
        rows.setdefault("reattach replay of 1 MiB, socket open (ms)", {})[peer.name] = f"{replay_only * 1000:.1f}"


def print_table(rows: dict[str, dict[str, str]], megabytes: float) -> None:
    columns = ["raw PTY", "terminado", "asyncio floor", "vm-agent"]
    print(f"terminal benchmark: {megabytes:.0f} MB of output per throughput run, shell {SHELL}, TLS for every server")
    print(f"{'metric':<48}" + "".join(f"{c:>28}" for c in columns))
    for metric, values in rows.items():
        print(f"{metric:<48}" + "".join(f"{values.get(c, '-'):>28}" for c in columns))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~20 MB runs, 500 keys, no 1,000-session row")
    parser.add_argument("--only", default="", help="comma-separated rows: throughput,echo,open,stall,replay")
    parser.add_argument("--peers", default="", help="comma-separated peers: terminado,asyncio floor,vm-agent")
    args = parser.parse_args()
    split = lambda text: {item for item in text.split(",") if item}  # noqa: E731
    asyncio.run(main(args.quick, split(args.only), split(args.peers)))
