"""Waiting on an agent across long silences: streams that keep ending, and VMs that go silent."""

from __future__ import annotations

import asyncio

from vm_agent.client import AgentStatus, Swarm

from .conftest import client_for
from .proxy import StreamEndingProxy

WAIT = 30


async def test_a_quiet_agent_is_waited_for_however_often_its_stream_ends(agent_daemon):
    # The agent works for a long time without an event (a test suite inside one tool call), and
    # every stream the client opens ends right after its preamble. Each reconnect succeeds, so
    # none of them may count towards giving up; the run must end with the agent's reply.
    proxy = await StreamEndingProxy(agent_daemon.url).start()
    try:
        async with client_for(agent_daemon, url=proxy.url, reconnect_attempts=1) as client:
            await client.ensure_session(agent_type="fake-steer")
            waiting = asyncio.create_task(client.run("sleep 60", timeout_s=WAIT))
            streams = asyncio.create_task(proxy.wait_ended(6))  # three times what the limit allows
            done, _ = await asyncio.wait({waiting, streams}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
            streams.cancel()
            assert waiting not in done, f"gave up after {proxy.ended_streams} ended streams: {waiting.exception()!r}"
            assert streams in done, "the event streams did not keep ending"
            await client.steer("that is enough")  # ends the long prompt with a reply
            result = await waiting
    finally:
        await proxy.stop()
    assert (result.text, result.failure) == ("sleepingsteered: that is enough", None)


async def test_a_vm_that_goes_silent_becomes_one_failed_row_not_a_hung_swarm(agent_daemon, relay_to):
    # One VM's packets start being dropped mid-prompt (paused, deleted, cut off by a firewall):
    # no FIN, no RST, just silence. Its row must fail once a few keepalives are missing, and
    # the swarm finish, while the other agent's result comes back as usual.
    relay = await relay_to(agent_daemon)
    healthy = client_for(agent_daemon, name="healthy", session="a")
    silent = client_for(
        agent_daemon, url=relay.url, name="silent", session="b", keepalive_interval=0.5, reconnect_attempts=1, timeout=2
    )

    def cut_off_once_working(event) -> None:
        if event.text() == "sleeping":  # the prompt runs and its events arrive over the relay
            relay.black_hole()

    silent.on_event = cut_off_once_working
    async with Swarm([healthy, silent]) as swarm:
        async with asyncio.timeout(WAIT):
            runs = await swarm.run({"healthy": "echo all fine", "silent": "sleep 60"})
    by_name = {run.name: run for run in runs}
    assert relay.silent
    assert (by_name["healthy"].status, by_name["healthy"].text) == (AgentStatus.DONE, "all fine")
    assert by_name["silent"].status is AgentStatus.ERROR
    assert "127.0.0.1" in (by_name["silent"].error or "")
    assert by_name["silent"].elapsed < 15
