"""The daemon as the agent benchmarks run it: in a child process of its own, so that its CPU and
memory are read apart from the client's, started through the script's own `--serve STATE` mode,
which writes the port it listens on into STATE."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench._procstat import cpu_seconds


class ServedDaemon:
    def __init__(self, script: str, state: Path, env: dict[str, str] | None = None) -> None:
        self.script = script
        self.state = state
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> ServedDaemon:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, self.script, "--serve", str(self.state), env=self.env
        )
        async with asyncio.timeout(30):
            while not (self.state / "port").exists():
                if self.proc.returncode is not None:
                    raise RuntimeError("the daemon process exited; see its stderr above")
                await asyncio.sleep(0.05)
        self.port = int((self.state / "port").read_text())
        from vm_agent.devkeys import DevKey

        self.key = DevKey.load_or_create(self.state / "key")
        return self

    def token(self, kind: str = "user") -> str:
        node = "bench" if kind == "management" else None
        return self.key.mint(kind=kind, workspace="host", node=node, user="bench")

    def cpu_seconds(self) -> float:
        """CPU time the daemon (all its threads) has used so far, to the nanosecond: utime and
        stime count 10 ms ticks, too coarse for the few milliseconds of one prompt."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
