"""Fixtures for the console's end-to-end tests: system Chromium driven by Playwright, a daemon
that knows the fake ACP agent, and a TCP relay in front of the daemon that can drop connections.

Browser tests need three things this machine may lack; each missing one skips the test with the
command that provides it, unless VM_AGENT_REQUIRE_BROWSER=1 (CI) turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vm_agent.console.http import assets_built

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts" / "console"
FAKE_AGENT = REPO / "tests" / "console" / "tool_agent.py"  # the fake ACP agent + scripted tool calls
CHROMIUM = os.environ.get("VM_AGENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 15_000


def missing_requirement() -> str | None:
    if not assets_built():
        return "console assets are not built: run scripts/build-console.sh"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}: run scripts/install-browser.sh"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


def require_browser() -> None:
    reason = missing_requirement()
    if reason is None:
        return
    if os.environ.get("VM_AGENT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"VM_AGENT_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class Relay:
    """A TCP relay in front of the daemon: `cut()` drops every open connection (what a network
    blip does to a browser), `hold()` refuses new ones until `release()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.holding = False

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.holding:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(dst)
            dst.transport.abort()

    def cut(self) -> int:
        links = list(self._links)
        for writer in links:
            writer.transport.abort()
        self._links.clear()
        return len(links)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
def agent_settings(tmp_path: Path) -> dict[str, str]:
    """The fake ACP agent as agent type `fake`; permission requests go to the viewers (`ask`);
    provider errors are retried after a fraction of a second."""
    state = tmp_path / "fake-agent-state"
    state.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = tmp_path / "agents.json"
    config.write_text(json.dumps({"agents": {"fake": {
        "command": [sys.executable, str(FAKE_AGENT)], "env": {"FAKE_ACP_STATE": str(state)},
    }}}))
    return {
        "AGENTS_CONFIG": str(config),
        "HOST_WORKSPACE_DIR": str(workdir),
        "ACP_PERMISSION_POLICY": "ask",
        "ACP_STOP_GRACE_PERIOD": "0.5s",
        "ACP_PROMPT_RETRY_INITIAL_BACKOFF": "0.3s",
        "ACP_PROMPT_RETRY_MAX_BACKOFF": "0.5s",
    }


@pytest.fixture
async def console_daemon(
    make_daemon: Any, agent_settings: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The daemon under test. Its shells get an empty HOME: a login shell then reads only the
    system profile, so what the terminal shows does not depend on this machine's dotfiles (a
    slow or stuck ~/.bashrc would otherwise hold up every prompt)."""
    require_browser()
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return await make_daemon(**agent_settings)


@pytest.fixture
async def relay(console_daemon: Any) -> AsyncIterator[Relay]:
    relay = await Relay(console_daemon.port).start()
    yield relay
    await relay.stop()


class ConsolePage:
    """A browser tab on the console, with what the page reported (console errors, CSP refusals)."""

    def __init__(self, page: Any, base_url: str, name: str) -> None:
        self.page = page
        self.base_url = base_url
        self.name = name
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

    def _console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" or "Content Security Policy" in text:
            # A dropped WebSocket during the resume test is expected noise, not a page defect.
            if re.search(r"WebSocket connection to .* failed|ERR_CONNECTION|Failed to load resource", text):
                return
            self.problems.append(f"console {message.type}: {text}")

    async def shot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        await self.page.screenshot(path=str(path))
        return path

    async def login(self, token: str, fragment: str = "") -> None:
        from playwright.async_api import Error as PlaywrightError

        for attempt in range(3):
            try:
                await self.page.goto(f"{self.base_url}/?token={token}{fragment}", wait_until="domcontentloaded")
                break
            except PlaywrightError as exc:
                # Chromium aborts navigations when the host's interfaces change (Docker creating a
                # bridge next door); a person would press reload, and so do we.
                network_changed = "ERR_NETWORK_CHANGED" in str(exc) or "chrome-error://" in str(exc)
                if not network_changed or attempt == 2:
                    raise
        await self.page.wait_for_url(re.compile(r"^[^?]*/(#.*)?$"))

    def terminal(self, nth: int = 0) -> Any:
        return self.page.locator(".term-pane:not([hidden])").nth(nth)

    async def terminal_lines(self) -> list[str]:
        """The visible rows of the active terminal, as the user reads them."""
        rows = await self.terminal().locator(".xterm-rows > div").all_inner_texts()
        return [row.replace("\u00a0", " ").rstrip() for row in rows]

    async def wait_terminal_text(self, pattern: str) -> list[str]:
        """Wait until the active terminal shows `pattern` (within one row); return its rows."""
        from playwright.async_api import expect

        row = self.terminal().locator(".xterm-rows > div").filter(has_text=re.compile(pattern))
        await expect(row.first).to_be_visible()
        return await self.terminal_lines()

    async def type_in_terminal(self, text: str) -> None:
        """Type as a user would, key by key."""
        await self.terminal().locator(".xterm-helper-textarea").focus()
        await self.page.keyboard.type(text)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_browser()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                await browser.close()


@pytest.fixture
async def open_console(browser: Any, relay: Relay, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """`await open_console()` → a ConsolePage in a fresh browser context (its own cookies)."""
    pages: list[ConsolePage] = []

    async def open_page(width: int = 1100, height: int = 700) -> ConsolePage:
        context = await browser.new_context(ignore_https_errors=True, viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        page = ConsolePage(await context.new_page(), f"https://127.0.0.1:{relay.port}",
                           f"{request.node.name}-{len(pages)}")
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        with contextlib.suppress(Exception):
            await page.page.context.close()
    problems = [p for page in pages for p in page.problems]
    assert not problems, "the page reported problems:\n" + "\n".join(problems)
