"""Agent tabs in a real browser, against the fake ACP agent: streamed replies, the prompt queue,
abort, retries, permission requests, and a second viewer joining late.

Screenshots of each state go to .artifacts/console/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.browser


async def start_fake_agent(console: Any) -> Any:
    """Open a new agent tab running the fake agent; return its pane."""
    from playwright.async_api import expect

    page = console.page
    await page.get_by_role("button", name="+ Agent").click()
    await page.get_by_label("Agent type").fill("fake")
    await page.get_by_role("button", name="Start").click()
    pane = page.locator(".agent-pane:not([hidden])")
    await expect(pane.locator(".agent-type")).to_have_text("fake")
    await expect(page.locator(".tab-chat[aria-selected=true] .tab-label")).to_have_text("fake")
    return pane


async def send(pane: Any, text: str, button: str = "Send") -> None:
    await pane.get_by_label("Prompt").fill(text)
    await pane.get_by_role("button", name=button, exact=True).click()


async def test_reply_streams_in_order_and_a_late_viewer_sees_the_same_history(
    console_daemon: Any, relay: Any, open_console: Any
) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    pane = await start_fake_agent(console)

    await send(pane, "chunks 300")
    expected = "".join(f"c{i} " for i in range(300)).strip()
    await expect(pane.locator(".msg.agent").last).to_have_text(expected)
    await expect(pane.locator(".msg.user").last).to_have_text("chunks 300")
    await expect(pane.locator(".pill")).to_have_text(re.compile("ready|idle"))
    await console.shot("streamed")

    # A second browser joins afterwards: the history replays into the same transcript.
    late = await open_console()
    session_id = console.page.url.rsplit("#", 1)[1]
    await late.login(console_daemon.token("user", "host"), fragment=f"#{session_id}")
    late_pane = late.page.locator(".agent-pane:not([hidden])")
    await expect(late_pane.locator(".msg.user")).to_have_text(["chunks 300"])
    await expect(late_pane.locator(".msg.agent")).to_have_text([expected])
    await late.shot("late-join")

    # The connection drops: the tab says so, resumes after the last message it had, and shows
    # nothing twice; the next prompt works on the resumed socket.
    relay.hold()
    assert relay.cut() > 0
    await expect(pane.locator(".term-banner")).to_have_text(re.compile("reconnecting…"))
    relay.release()
    await expect(pane.locator(".term-banner")).to_be_hidden()
    await send(pane, "echo back again")
    await expect(pane.locator(".msg.agent")).to_have_text([expected, "back again"])
    await expect(pane.locator(".msg.user")).to_have_text(["chunks 300", "echo back again"])


async def test_queue_abort_and_retry_are_visible(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    pane = await start_fake_agent(console)

    # The reply is on screen while the prompt still runs: it is rendered as it arrives.
    await send(pane, "sleep 30")
    await expect(pane.locator(".msg.agent").last).to_have_text("sleeping")
    await expect(pane.locator(".pill")).to_have_text("prompting")

    await send(pane, "echo after the nap", "Follow-up")
    queue = pane.locator(".queue")
    await expect(queue).to_contain_text("Queued (1)")
    await expect(queue).to_contain_text("echo after the nap")
    await console.shot("queued")

    await pane.get_by_role("button", name="Abort").click()
    await expect(queue).to_be_hidden()
    await expect(pane.locator(".note").last).to_contain_text("cancelled")
    await expect(pane.locator(".pill")).to_have_text(re.compile("ready|idle"))

    # Steering an agent that cannot be steered natively: the running prompt is cancelled and the
    # steer runs next.
    await send(pane, "sleep 30")
    await expect(pane.locator(".msg.agent").last).to_have_text("sleeping")
    await send(pane, "echo turning left", "Steer")
    await expect(pane.locator(".msg.user.kind-steer")).to_contain_text("turning left")
    await expect(pane.locator(".msg.agent").last).to_have_text("turning left")

    # A transient provider error is retried, and the viewer is told.
    await send(pane, "transient 1")
    await expect(pane.locator(".note.warn")).to_contain_text(re.compile(r"retry 1/2"))
    await expect(pane.locator(".msg.agent").last).to_have_text("succeeded after 1 failures")
    await console.shot("retried")


async def test_permission_request_is_answered_from_the_page(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    pane = await start_fake_agent(console)
    await expect(pane.locator(".policy")).to_have_text("permissions: ask")

    await send(pane, "permission")
    card = pane.locator(".permission")
    await expect(card).to_contain_text("Permission requested: Write file")
    await expect(card.get_by_role("button")).to_have_text(["Allow", "Reject"])
    await console.shot("permission-asked")

    # Another viewer joining now sees the open request and may answer it; both pages see the answer.
    other = await open_console()
    session_id = console.page.url.rsplit("#", 1)[1]
    await other.login(console_daemon.token("user", "host"), fragment=f"#{session_id}")
    other_card = other.page.locator(".agent-pane:not([hidden]) .permission")
    await expect(other_card.locator(".perm-state")).to_have_text("Waiting for your answer")

    await other_card.get_by_role("button", name="Allow").click()
    await expect(other_card.locator(".perm-state")).to_have_text("Answered: Allow")
    await expect(card.locator(".perm-state")).to_have_text("Answered: Allow")
    await expect(card.get_by_role("button", name="Allow")).to_be_disabled()
    await expect(pane.locator(".msg.agent").last).to_have_text("permission: allow")
    await console.shot("permission-answered")


async def test_tool_calls_are_shown_compactly_with_their_status(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    pane = await start_fake_agent(console)

    await send(pane, "tools")
    tools = pane.locator(".tool")
    await expect(tools.locator(".tool-title")).to_have_text(["Read README.md", "Run make test"])
    await expect(tools.locator(".tool-status")).to_have_text(["completed", "failed"])
    await expect(pane.locator(".msg.agent").last).to_have_text("tools done")
    await tools.first.locator("summary").click()
    await expect(tools.first.locator(".tool-detail")).to_contain_text("# vm-agent")
    await expect(tools.first.locator(".tool-detail")).to_contain_text('input: {"path":"README.md"}')
    await console.shot("tool-calls")


async def test_an_unknown_agent_type_is_reported_not_retried_forever(console_daemon: Any, open_console: Any) -> None:
    from playwright.async_api import expect

    console = await open_console()
    await console.login(console_daemon.token("user", "host"))
    await console.page.get_by_role("button", name="+ Agent").click()
    await console.page.get_by_label("Agent type").fill("no-such-agent")
    await console.page.get_by_role("button", name="Start").click()
    pane = console.page.locator(".agent-pane:not([hidden])")
    await expect(pane.locator(".term-banner")).to_contain_text('did not open an agent session of type "no-such-agent"')
    await expect(pane.get_by_role("button", name="Retry")).to_be_visible()
