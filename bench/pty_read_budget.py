"""How much work a PTY reader can do per read before the program's output rate drops.

    .venv/bin/python bench/pty_read_budget.py [--quick] [--megabytes 60] [--repeat 3]

A PTY hands its output over at most ~4 KiB per read, and each 4 KiB has to be moved into the
read buffer by the kernel's flip-buffer worker (a kworker) after the previous read emptied it;
a read that finds the buffer empty waits for that worker. A reader that spends W µs on each
read before reading again (a server framing, encrypting and sending the bytes) delays that
hand-over. This prints the raw PTY rate of the terminal benchmark's commands with a reader that
spins W µs after every read, W from 0 up. Up to some W the worker refills the buffer while the
reader works, so the rate holds (a little work even raises it: the next read no longer waits
for the worker); beyond it every µs of work is lost to the program. Compare W with a server's
own CPU per read: the terminal benchmark's "server CPU per MB" (ms) times 4.1 is µs per 4 KiB
read, of which ~15 µs is the read itself. This reader spreads its work evenly; a server that
works in bursts (a 64 KiB frame encrypted and sent in one go) leaves the PTY unread for a whole
burst, which this table does not measure.
Prints a table; no assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._procstat import HostCpuMeter
from bench._raw_pty import raw_pty_rate

SHELL = "/bin/sh"
WORK_US = (0, 10, 20, 30, 40, 50, 60, 80)
MB = 1_000_000


def measure(command: str, cwd: Path, repeat: int) -> dict[int, tuple[float, float, float]]:
    """Per W: (median MB/s, median bytes per read, highest CPU steal %) over `repeat` rounds,
    every W taking its turn in each round so that a noisy minute hits them all alike."""
    rates: dict[int, list[float]] = {work: [] for work in WORK_US}
    sizes: dict[int, list[float]] = {work: [] for work in WORK_US}
    steal: dict[int, float] = dict.fromkeys(WORK_US, 0.0)
    for _ in range(repeat):
        for work in WORK_US:
            host = HostCpuMeter()
            run = raw_pty_rate(SHELL, command, cwd, work / 1e6)
            rates[work].append(run.rate)
            sizes[work].append(run.size / max(run.reads, 1))
            steal[work] = max(steal[work], host.stolen())
    return {
        work: (statistics.median(rates[work]) / MB, statistics.median(sizes[work]), steal[work]) for work in WORK_US
    }


def main(megabytes: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data.bin"
        data.write_bytes(os.urandom(megabytes * MB * 3 // 4))
        print(f"PTY read budget: ~{megabytes} MB of base64 per run, median of {repeat} runs, shell {SHELL}")
        print(f"{'work per read (us)':<22}" + "".join(f"{work:>9}" for work in WORK_US))
        for name, command in (("text lines", f"base64 -w 100 {data}"), ("one long line", f"base64 -w 0 {data}")):
            got = measure(command, tmp, repeat)
            zero = got[0][0]
            print(f"{name + ' (MB/s)':<22}" + "".join(f"{got[work][0]:>9.1f}" for work in WORK_US))
            print(f"{'  % of no work':<22}" + "".join(f"{got[work][0] / zero:>9.0%}" for work in WORK_US))
            print(f"{'  bytes per read':<22}" + "".join(f"{got[work][1]:>9.0f}" for work in WORK_US))
            print(f"{'  CPU stolen (%)':<22}" + "".join(f"{got[work][2]:>9.1f}" for work in WORK_US))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 MB per run")
    parser.add_argument("--megabytes", type=int, default=60, help="output per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every work size (median shown)")
    args = parser.parse_args()
    main(20 if args.quick else args.megabytes, max(args.repeat, 1))
