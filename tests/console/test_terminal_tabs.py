"""The console in a real browser: sign in with a token link, use a terminal, resize, resume.

Screenshots of each state go to .artifacts/console/ (checked for visible text, not pixels).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.browser


async def test_token_link_signs_in_and_leaves_the_address_bar(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host", user="ada"))

    assert "token=" not in console.page.url
    cookies = {c["name"]: c for c in await console.page.context.cookies()}
    session = cookies["vm_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert "vm_session_host" in cookies
    await expect(console.page.locator("#who")).to_have_text("ada · host")
    # A workspace without tabs opens a terminal at once: a newcomer lands on a prompt.
    await expect(console.page.locator(".tab-terminal")).to_have_count(1)
    await console.type_in_terminal("echo hello-$((6*7))\n")
    await console.wait_terminal_text(r"hello-42")
    await console.shot("terminal")

    # Reloading keeps the login (cookie) and reattaches to the same terminal with its output.
    await console.page.reload()
    await console.wait_terminal_text(r"hello-42")
    await expect(console.page.locator(".tab-terminal")).to_have_count(1)


async def test_signed_out_page_explains_how_to_sign_in(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.page.goto(f"{console.base_url}/")
    await expect(console.page.locator(".panel")).to_contain_text("Sign in to vm-agent")
    await console.shot("signed-out")
    await console.page.locator("input[name=token]").fill(console_daemon.token("user", "host"))
    await console.page.locator(".login button").click()
    await expect(console.page.locator(".tab-terminal")).to_have_count(1)
    assert "token=" not in console.page.url


async def test_terminal_follows_the_window_size(console_daemon: Any, open_console: Any) -> None:
    console = await open_console(width=1200, height=760)
    await console.login(console_daemon.token("user", "host"))
    await console.type_in_terminal('echo "size=$(stty size)"\n')
    rows, cols = _size(await console.wait_terminal_text(r"^size=\d+\s\d+\s*$"), "size")

    await console.page.set_viewport_size({"width": 700, "height": 480})
    await console.type_in_terminal('echo "resized=$(stty size)"\n')
    new_rows, new_cols = _size(await console.wait_terminal_text(r"^resized=\d+\s\d+\s*$"), "resized")
    assert new_cols < cols and new_rows < rows
    await console.shot("resized")


async def test_terminal_tabs_can_be_created_renamed_and_closed(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    page = console.page
    await console.login(console_daemon.token("user", "host"))
    await expect(page.locator(".tab-terminal")).to_have_count(1)
    await page.get_by_role("button", name="+ Terminal").click()
    await expect(page.locator(".tab-terminal")).to_have_count(2)
    await console.type_in_terminal("echo second-$((1+1))\n")
    await console.wait_terminal_text(r"second-2")

    second = page.locator(".tab-terminal").nth(1)
    await second.locator(".tab-label").dblclick()
    await page.locator(".tab-rename").fill("build logs")
    await page.keyboard.press("Enter")
    await expect(second.locator(".tab-label")).to_have_text("build logs")

    # The name is the daemon's (session_renamed), so a fresh page sees it too.
    other = await open_console()
    await other.login(console_daemon.token("user", "host"))
    await expect(other.page.locator(".tab-terminal .tab-label")).to_have_text(["Terminal 1", "build logs"])
    await console.shot("renamed")

    await second.locator(".tab-close").click()
    await expect(page.locator(".tab-terminal")).to_have_count(1)
    tabs = await _tabs(console_daemon)
    assert [t["label"] for t in tabs if t["type"] == "terminal"] == ["Terminal 1"]


async def test_terminal_resumes_after_the_connection_drops_without_repeating_output(
    console_daemon: Any, relay: Any, open_console: Any
) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    await console.type_in_terminal("for i in $(seq 1 24); do echo line-$i; sleep 0.1; done\n")
    await console.wait_terminal_text(r"^line-4\s*$")

    relay.hold()
    assert relay.cut() > 0
    banner = console.terminal().locator(".term-banner")
    await expect(banner).to_have_text(re.compile("reconnecting…"))
    await expect(console.page.locator(".tab-terminal")).to_have_attribute("data-state", "reconnecting")
    await console.shot("reconnecting")
    relay.release()

    await expect(banner).to_be_hidden()
    lines = await console.wait_terminal_text(r"^line-24\s*$")
    printed = [line for line in lines if re.fullmatch(r"line-\d+", line)]
    assert printed == [f"line-{i}" for i in range(1, 25)], "\n".join(lines)
    await console.shot("resumed")


async def _tabs(daemon: Any) -> list[dict[str, Any]]:
    async with daemon.client() as client:
        response = await client.get(f"{daemon.url}/workspaces/host/tabs", headers=daemon.auth_headers("user"))
        assert response.status == 200
        return (await response.json())["tabs"]


def _size(lines: list[str], label: str) -> tuple[int, int]:
    found = [line for line in lines if line.startswith(f"{label}=")]
    rows, cols = found[-1].removeprefix(f"{label}=").split()
    return int(rows), int(cols)
