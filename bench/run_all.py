"""Run every benchmark under bench/ and print one table: each target beside the figure measured.

    .venv/bin/python bench/run_all.py [--full] [--repeat N] [--only NAME ...] [--timeout SECONDS]

Each bench/*.py runs as its own process (one at a time: they measure wall-clock rates on a
shared machine), with `--quick` when it offers that flag unless `--full` is given, and with
`--repeat N` when it offers that (the terminal benchmark, for its rows that sit near their
targets). Its own table is printed as it comes; the combined table at the end picks, for every target of the issues,
the row of that script's output that carries the figure (by the row's label), so the figures
stay exactly as the benchmark printed them, peers and ratios included.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
HEADER = re.compile(r"^(metric|path)\b|^\s+median\b", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    script: str
    what: str
    target: str
    row: str  # regex (case-insensitive) for the output line holding the figure
    rows: int = 1  # how many matching lines to show


TARGETS = [
    # With --repeat, the second row of these says how many runs were calm and their range.
    Target("terminal", "output throughput, text lines", ">= 90% of raw PTY",
           r"throughput, text lines|text lines: calm", rows=2),
    Target("terminal", "output throughput, one long line", ">= 70% of raw PTY",
           r"throughput, one long line|one long line: calm", rows=2),
    Target("terminal", "keystroke echo latency p50 / p99", "<= 250 us / <= 1 ms", r"echo latency"),
    Target("terminal", "daemon RSS per idle session", "<= 40 KB", r"RSS per idle session"),
    Target("terminal", "open 200 sessions", "<= 0.5 s", r"open 200 sessions \(s\)|open 200 sessions: calm", rows=2),
    Target("terminal", "open 1,000 sessions", "<= 3 s", r"open 1,000 sessions"),
    Target("terminal", "client stalls while the program prints", "<= log cap, program not held", r"stalled client",
           rows=2),
    Target("terminal", "reattach replay of 1 MiB", "<= 20 ms", r"replay of", rows=2),
    Target("agents", "notifications/s to one viewer", ">= 50,000/s, 0 reorderings", r"→ 1 viewer\b"),
    Target("agents", "notifications/s to each of 10 viewers", ">= 20,000/s each, 0 reorderings", r"→ 10 viewers"),
    Target("agents", "latency added per prompt", "<= 2 ms", r"added by the gateway", rows=2),
    Target("agents_latency", "latency added per prompt (real pi)", "<= 2 ms", r"added by the gateway"),
    Target("workspaces", "POST /workspaces -> running vs docker run", "<= peer x 1.10 + 100 ms", r"ratio"),
    Target("workspaces", "daemon memory per workspace", "(reported)", r"daemon memory"),
    Target("startup", "start-up to /health answer", "(reported)", r"start-up"),
    Target("startup", "idle RSS", "(reported)", r"idle RSS"),
]


@dataclass
class Run:
    name: str
    status: str
    seconds: float
    output: str


def scripts(only: list[str]) -> list[Path]:
    found = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    return [p for p in found if not only or p.stem in only]


def supports(path: Path, flag: str) -> bool:
    return f'"{flag}"' in path.read_text(errors="replace")


def run(path: Path, quick: bool, repeat: int, timeout: float) -> Run:
    argv = [sys.executable, str(path)] + (["--quick"] if quick and supports(path, "--quick") else [])
    if repeat > 1 and supports(path, "--repeat"):
        argv += ["--repeat", str(repeat)]
    print(f"\n=== {path.stem} ({' '.join(argv[1:])}) ===", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=BENCH.parent, bufsize=1)
        assert proc.stdout is not None
        deadline = started + timeout
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
            if time.monotonic() > deadline:
                proc.kill()
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        status = "ok" if code == 0 else ("timeout" if time.monotonic() > deadline else f"exit {code}")
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = "timeout"
    return Run(path.stem, status, time.monotonic() - started, "\n".join(lines))


def figure(target: Target, runs: dict[str, Run]) -> str:
    result = runs.get(target.script)
    if result is None:
        return "(benchmark not present)" if not (BENCH / f"{target.script}.py").exists() else "(not run)"
    pattern = re.compile(target.row, re.IGNORECASE)
    rows = [line for line in result.output.splitlines()
            if pattern.search(line) and not line.lower().startswith(("targets", "target:"))]
    if not rows:
        return f"(no such row; run {result.status})"
    return " | ".join(" ".join(row.split())[:160] for row in rows[: target.rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="do not pass --quick to the benchmarks")
    parser.add_argument("--repeat", type=int, default=1, help="passed to the benchmarks that repeat rows")
    parser.add_argument("--only", nargs="*", default=[], help="benchmark names (file stems) to run")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed per benchmark")
    args = parser.parse_args()

    runs = {path.stem: run(path, not args.full, args.repeat, args.timeout) for path in scripts(args.only)}

    print("\n=== all benchmarks ===")
    print(f"{'benchmark':<16}{'status':<10}{'seconds':>8}")
    for result in runs.values():
        print(f"{result.name:<16}{result.status:<10}{result.seconds:>8.1f}")
    print()
    what_w = max(len(t.what) for t in TARGETS) + 2
    target_w = max(len(t.target) for t in TARGETS) + 2
    print(f"{'benchmark':<16}{'what':<{what_w}}{'target':<{target_w}}measured (row as printed)")
    for target in TARGETS:
        print(f"{target.script:<16}{target.what:<{what_w}}{target.target:<{target_w}}{figure(target, runs)}")
    print()
    for result in runs.values():  # the column headings of each benchmark's own table
        header = next((line for line in result.output.splitlines() if HEADER.match(line)), None)
        if header:
            print(f"columns of {result.name}: {' '.join(header.split())}")
    print("Rates are wall-clock on this machine, with the peers measured in the same run; compare ratios.")
    return 0 if all(r.status == "ok" for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
