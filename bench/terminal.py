"""Terminal benchmark: vm-agent beside terminado, the asyncio floor and the raw PTY rate, in one run.

    .venv/bin/python bench/terminal.py [--quick] [--repeat N] [--only throughput,echo,open,stall,replay]
                                       [--peers vm-agent]

Every server runs as its own process, over TLS with the same certificate, serving the same
shell (/bin/sh, empty HOME) to the same client code in this process. The raw PTY figure is the
same command read straight from a PTY by a minimal reader: the ceiling; for opening sessions,
the same login shells started on PTYs by a plain loop (bench/_raw_pty.py). The asyncio floor
(bench/_floor_relay.py) is the least a Python relay can do, measured for echo and throughput:
what vm-agent costs beyond it is the price of its features. Prints a table; no assertions.
The "CPU stolen by hypervisor" rows tell a calm run (near 0%) from one a noisy neighbour slowed;
the "host CPU idle" rows tell a relay short of CPU (near 0%) from one that waits on the PTY.
`--repeat N` runs the throughput and open-200 rows N times, peers taking turns, and shows the
median of the calm runs with their count and range (bench/_repeats.py): on a shared 2-vCPU VM a
single run of a row near its target passes or misses depending on the minute.
`--quick` uses ~20 MB instead of ~90 MB and skips the 1,000-session row.
BENCH_PROFILE=/tmp/terminal.prof runs vm-agent under cProfile (written when it stops).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._procstat import HostCpuMeter, cpu_seconds, free_port, rss_bytes
from bench._raw_pty import raw_pty_rate, raw_spawn_seconds
from bench._repeats import Repeats, Run
from bench._terminal_peers import (
    TERMINADO_SERVER,
    FloorRelay,
    Peer,
    Term,
    Terminado,
    VmAgent,
    start_server,
    wait_ready,
)
from vm_agent.devkeys import DEV_ISSUER, DevKey, serve_jwks

SHELL = "/bin/sh"
DONE = "__BENCH" + "DONE__"
DONE_CMD = "printf '%s%s\\n' __BENCH DONE__"
MB = 1_000_000


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
async def main(quick: bool, only: set[str], peer_names: set[str], repeat: int) -> None:
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
            floor_script = str(Path(__file__).with_name("_floor_relay.py"))
            floor = await start_server(env, floor_script, str(floor_port), *tls_and_shell)
            vm = VmAgent(http, agent_port, key.mint(kind="user", workspace="host", user="bench"))
            vm.pid = agent.pid
            td = Terminado(http, tornado_port)
            td.pid = tornado.pid
            fl = FloorRelay(http, floor_port)
            fl.pid = floor.pid
            peers: list[Peer] = [peer for peer in (td, fl, vm) if not peer_names or peer.name in peer_names]
            results = await measure(peers, data, size, data_1m, tmp, keys, quick, only, repeat)
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
    only: set[str], repeat: int,
) -> dict:
    """Throughput and opening 200 sessions, the rows that sit near their targets, run `repeat`
    times with the peers taking turns; the other rows once per peer."""
    rows: dict[str, dict[str, str]] = {}
    runs = Repeats()
    lines_cmd, one_cmd = f"base64 -w 100 {data}", f"base64 -w 0 {data}"
    # Each raw PTY run of a row: (bytes/s, host CPU idle %).
    raw_runs: dict[str, list[tuple[float, float]]] = {"text lines": [], "one long line": []}
    floors: dict[int, list[float]] = {200: [], 1000: []}
    idle_rss: dict[str, float] = {}
    home = tmp / "home"
    lines_run = await asyncio.to_thread(raw_pty_rate, SHELL, lines_cmd, tmp)
    one_run = await asyncio.to_thread(raw_pty_rate, SHELL, one_cmd, tmp)
    lines, one = (lines_cmd, lines_run.size), (one_cmd, one_run.size)

    def wanted(peer: Peer) -> set[str]:
        return (only or {"throughput", "echo", "open", "stall", "replay"}) & peer.measures

    for _ in range(repeat):
        for peer in peers:
            if "throughput" in wanted(peer):
                await _guard(rows, peer.name, "throughput", _throughputs(runs, peer, lines, one, tmp, raw_runs))
            if "open" in wanted(peer):
                # Idle RSS before the big-buffer runs, whose memory is being returned meanwhile.
                await _guard(rows, peer.name, "open 200", _open(runs, peer, 200, home, floors, idle_rss))
                await asyncio.sleep(2)  # let the closed terminals' processes go
    _summarise(rows, runs, repeat)
    for peer_name, size in idle_rss.items():
        rows.setdefault("daemon RSS per idle session (KB)", {})[peer_name] = f"{size / 1000:.1f}"
    for peer in peers:
        if "echo" in wanted(peer):
            await _guard(rows, peer.name, "echo", _echo(rows, peer, keys))
        if "stall" in wanted(peer):
            await _guard(rows, peer.name, "stall", _stall(rows, peer, data, tmp))
        if "replay" in wanted(peer):
            await _guard(rows, peer.name, "replay", _replay(rows, peer, data_1m))
        # Last: closing 1,000 terminals keeps a server busy for a while.
        if "open" in wanted(peer) and not quick:
            thousand = Repeats()
            await _guard(rows, peer.name, "open 1,000", _open(thousand, peer, 1000, home, floors))
            _summarise(rows, thousand, 1)
    for row, raw in raw_runs.items():
        if raw:
            rate, idle = (statistics.mean(column) for column in zip(*raw, strict=True))
            rows.setdefault(f"throughput, {row} (MB/s)", {})["raw PTY"] = f"{rate / MB:.1f}"
            rows.setdefault(f"  host CPU idle, {row} (%)", {})["raw PTY"] = f"{idle:.0f}"
    for count, seconds in floors.items():
        if seconds:
            rows[f"open {count:,} sessions (s)"]["raw PTY"] = f"{statistics.mean(seconds):.2f}"
    return rows


def _summarise(rows: dict[str, dict[str, str]], runs: Repeats, repeat: int) -> None:
    """Table cells for the repeated rows: each the median of its calm runs (bench/_repeats.py)."""
    for row in runs.rows():
        opening = row.startswith("open")
        for peer in runs.peers(row):
            got = runs.summary(row, peer)
            if opening:
                figure = f"{got.value:.2f} ({got.ratio:.2f}x floor)"
                spread = f"{got.low:.2f}-{got.high:.2f}x"
                cpu_row, cpu = f"  server CPU per session opened, {row.split()[1]} (ms)", f"{got.cpu * 1000:.2f}"
            else:
                figure = f"{got.value / MB:.1f} ({got.ratio:.0%} of raw)"
                spread = f"{got.low:.0%}-{got.high:.0%}"
                cpu_row, cpu = f"  server CPU per MB, {row} (ms)", f"{got.cpu * 1000:.1f}"
            rows.setdefault(f"{row} (s)" if opening else f"throughput, {row} (MB/s)", {})[peer] = figure
            if repeat > 1:
                rows.setdefault(f"  {row}: calm runs, range", {})[peer] = f"{got.calm} of {got.runs}, {spread}"
            rows.setdefault(cpu_row, {})[peer] = cpu
            if got.idle is not None:
                rows.setdefault(f"  host CPU idle, {row} (%)", {})[peer] = f"{got.idle:.0f}"
            rows.setdefault(f"  CPU stolen by hypervisor, {row} (%)", {})[peer] = f"{got.steal:.1f}"


async def _guard(rows: dict, peer: str, what: str, run: Awaitable[None]) -> None:
    """One measurement failing (a peer that cannot do it) must not lose the others."""
    try:
        await run
    except Exception as exc:
        rows.setdefault(f"{what}: failed", {})[peer] = f"{type(exc).__name__}"[:28]


async def _throughputs(
    runs: Repeats, peer: Peer, lines: tuple[str, int], one: tuple[str, int], tmp: Path,
    raw_runs: dict[str, list[tuple[float, float]]],
) -> None:
    """Each run sits between two raw PTY runs of the same command, and its ratio is taken
    against their mean: on a shared machine the ceiling itself moves from minute to minute."""
    for row, (command, size) in (("text lines", lines), ("one long line", one)):
        host = HostCpuMeter()
        before = await _raw_rate(command, tmp)
        relaying = HostCpuMeter()
        cpu = cpu_seconds(peer.pid)
        rate = await asyncio.to_thread(throughput, peer, command, size)
        cpu = cpu_seconds(peer.pid) - cpu
        idle = relaying.idle()
        after = await _raw_rate(command, tmp)
        raw_runs[row] += [before, after]
        ratio = rate / ((before[0] + after[0]) / 2)
        runs.add(row, peer.name, Run(rate, ratio, host.stolen(), cpu / (size / MB), idle))


async def _raw_rate(command: str, tmp: Path) -> tuple[float, float]:
    """The raw PTY rate of `command`, and the host's idle share (%) while it ran."""
    host = HostCpuMeter()
    run = await asyncio.to_thread(raw_pty_rate, SHELL, command, tmp)
    return run.rate, host.idle()


async def _echo(rows: dict, peer: Peer, keys: int) -> None:
    host = HostCpuMeter()
    p50, p99, cpu = await asyncio.to_thread(echo_latency, peer, keys)
    rows.setdefault(f"echo latency p50 / p99 over {keys} keys (us)", {})[peer.name] = (
        f"{p50 * 1e6:.0f} / {p99 * 1e6:.0f}"
    )
    rows.setdefault("  server CPU per key (us)", {})[peer.name] = f"{cpu * 1e6:.0f}"
    rows.setdefault("  CPU stolen by hypervisor, echo (%)", {})[peer.name] = f"{host.stolen():.1f}"


async def _open(
    runs: Repeats, peer: Peer, count: int, home: Path, floors: dict[int, list[float]],
    idle_rss: dict[str, float] | None = None,
) -> None:
    """Like throughput, the run sits between two runs of its floor (the same shells started by a
    plain loop) and its ratio is taken against their mean: most of the time is the shells'.
    The daemon's RSS per idle session goes to `idle_rss` when given, from the first run only:
    later runs reuse the memory earlier sessions gave back, and read low."""
    host = HostCpuMeter()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm-256color"}
    before = await asyncio.to_thread(raw_spawn_seconds, SHELL, count, env)
    seconds, per_session, cpu = await open_sessions(peer, count)
    after = await asyncio.to_thread(raw_spawn_seconds, SHELL, count, env)
    floors[count] += [before, after]
    ratio = seconds / ((before + after) / 2)
    runs.add(f"open {count:,} sessions", peer.name, Run(seconds, ratio, host.stolen(), cpu))
    if idle_rss is not None:
        idle_rss.setdefault(peer.name, per_session)


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
    parser.add_argument("--repeat", type=int, default=1, help="runs of the throughput and open-200 rows (median shown)")
    parser.add_argument("--peers", default="", help="comma-separated peers: terminado,asyncio floor,vm-agent")
    args = parser.parse_args()
    split = lambda text: {item for item in text.split(",") if item}  # noqa: E731
    asyncio.run(main(args.quick, split(args.only), split(args.peers), max(args.repeat, 1)))
