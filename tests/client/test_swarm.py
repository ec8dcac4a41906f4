"""A swarm of real daemons: one task fanned out, some VMs die mid-run, the rest finish."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pexpect

from vm_agent.client import AgentStatus, Swarm, is_idle

from .conftest import agent_env, cli_env, client_for, fingerprint_of, run_cli, stop_agents

WAIT = 60


async def start_daemons(make_daemon, tmp_path, count: int) -> list:
    daemons = []
    for i in range(count):
        directory = tmp_path / f"vm{i:02d}"
        directory.mkdir()
        daemons.append(await make_daemon(**agent_env(directory)))
    return daemons


async def stop_all(daemons) -> None:
    await asyncio.gather(*(stop_agents(d) for d in daemons), return_exceptions=True)
    await asyncio.gather(*(d.stop() for d in daemons))


async def test_twenty_vms_three_killed_mid_run_the_rest_complete(make_daemon, tmp_path, relay_to):
    daemons = await start_daemons(make_daemon, tmp_path, 20)
    doomed = {"vm03", "vm11", "vm17"}
    # The doomed VMs are reached through relays: stopping a relay makes its VM vanish from the
    # network at once (connections cut, new ones refused), as a VM that dies does.
    relays = {name: await relay_to(daemons[int(name[2:])]) for name in doomed}
    clients = [
        client_for(
            d, name=f"vm{i:02d}", reconnect_attempts=2, url=relays[f"vm{i:02d}"].url if f"vm{i:02d}" in doomed else None
        )
        for i, d in enumerate(daemons)
    ]
    tasks = {c.name: ("sleep 30" if c.name in doomed else "echo finished by " + c.name) for c in clients}
    doomed_working = asyncio.Event()
    changes: list[tuple[str, AgentStatus]] = []

    def on_change(run) -> None:
        changes.append((run.name, run.status))
        working = {name for name, status in changes if status is AgentStatus.WORKING}
        if doomed <= working:
            doomed_working.set()

    try:
        async with Swarm(clients, concurrency=8, on_change=on_change) as swarm:
            running = asyncio.create_task(swarm.run(tasks, timeout_s=WAIT))
            await asyncio.wait_for(doomed_working.wait(), WAIT)
            # Three VMs vanish while their agents are in the middle of a prompt.
            await asyncio.gather(*(relay.stop() for relay in relays.values()))
            runs = await asyncio.wait_for(running, WAIT)
    finally:
        await stop_all(daemons)

    by_name = {r.name: r for r in runs}
    assert {r.name for r in swarm.failures} == doomed
    for name in doomed:
        assert by_name[name].error and "127.0.0.1" in by_name[name].error
    finished = {name: r.text for name, r in by_name.items() if name not in doomed}
    assert finished == {name: f"finished by {name}" for name in finished}
    assert all(by_name[name].status is AgentStatus.DONE for name in finished)
    assert swarm.texts == finished


async def test_swarm_cli_prints_progress_and_fails_when_a_host_fails(make_daemon, tmp_path):
    daemons = await start_daemons(make_daemon, tmp_path, 3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    lines = [f"vm{i}={d.url} fingerprint={fingerprint_of(d)}" for i, d in enumerate(daemons[:2])]
    spec = {"name": "vm2", "url": daemons[2].url, "fingerprint": fingerprint_of(daemons[2]), "task": "echo own task"}
    lines.append(json.dumps(spec))
    lines.append(f"dead=https://127.0.0.1:{dead_port}")
    hosts = tmp_path / "hosts"
    hosts.write_text("# the workers\n" + "\n".join(lines) + "\n")
    env = cli_env(daemons[0])  # one token: the test daemons share their signing key and node id
    try:
        human = await run_cli("swarm", "--hosts-file", str(hosts), "--task", "echo all good", "--retries", "1", env=env)
        tasks = tmp_path / "tasks.json"
        tasks.write_text(json.dumps({f"vm{i}": f"echo task {i}" for i in range(3)} | {"dead": "echo never"}))
        machine = await run_cli(
            "swarm", "--hosts-file", str(hosts), "--tasks-file", str(tasks), "--json", "--retries", "1", env=env
        )
    finally:
        await stop_all(daemons)

    assert human.code == 1
    assert "swarm: 3/4 done, 1 failed" in human.out
    for i in range(3):
        assert f"vm{i}: done" in human.out
    assert "== vm0 ==\nall good" in human.out and "== vm1 ==\nall good" in human.out
    assert "== vm2 ==\nown task" in human.out  # a task on the host's line beats --task
    assert human.err == f"vmagent: dead: cannot connect to https://127.0.0.1:{dead_port}: connection refused\n"
    assert machine.code == 1
    summary = json.loads(machine.out)
    assert summary["done"] == 3 and summary["failed"] == 1
    texts = {a["name"]: a["text"] for a in summary["agents"] if a["status"] == "done"}
    assert texts == {"vm0": "task 0", "vm1": "task 1", "vm2": "own task"}


async def test_swarm_on_a_terminal_draws_a_live_table(make_daemon, tmp_path):
    daemons = await start_daemons(make_daemon, tmp_path, 2)
    env = {**os.environ, **cli_env(daemons[0]), "TERM": "xterm"}
    hosts = [f"a={daemons[0].url}", f"b={daemons[1].url} fingerprint={fingerprint_of(daemons[1])}"]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "vm_agent.client.cli", "swarm", *hosts, "--task", "sleep 0.5"],
        env=env,
        dimensions=(24, 100),
        timeout=WAIT,
    )
    try:
        await asyncio.to_thread(child.expect, r"a\s+working")  # a row redrawn in place while it works
        await asyncio.to_thread(child.expect, "swarm: 2/2 done, 0 failed")
        await asyncio.to_thread(child.expect, pexpect.EOF)
        child.wait()
    finally:
        child.close(force=True)
        await stop_all(daemons)
    assert child.exitstatus == 0


async def test_broadcast_abort_then_wait_for_all(make_daemon, tmp_path):
    daemons = await start_daemons(make_daemon, tmp_path, 3)
    clients = [client_for(d, name=f"vm{i}") for i, d in enumerate(daemons)]
    try:
        async with Swarm(clients) as swarm:
            await asyncio.gather(*(c.send_prompt("sleep 30") for c in clients))
            busy = await swarm.states()
            assert all(not is_idle(state) for state in busy.values())
            answers = await swarm.broadcast("abort")
            assert all(answer["success"] for answer in answers.values())
            settled = await swarm.wait_all(WAIT)
    finally:
        await stop_all(daemons)
    assert {name: state["lastStopReason"] for name, state in settled.items()} == {
        "vm0": "cancelled",
        "vm1": "cancelled",
        "vm2": "cancelled",
    }


async def test_broadcast_steer_during_run_gives_every_row_the_steered_reply(agent_daemon):
    # `pi` has no native steering: each running prompt is cancelled and the steer runs instead.
    clients = [client_for(agent_daemon, name=f"w{i}", session=f"w{i}") for i in range(3)]
    sleeping = {c.name: asyncio.Event() for c in clients}
    for client in clients:  # each client's own hook, which Swarm keeps calling during a run
        client.on_event = lambda e, started=sleeping[client.name]: e.text() == "sleeping" and started.set()
    async with Swarm(clients) as swarm:
        job = asyncio.create_task(swarm.run("sleep 30", timeout_s=WAIT))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in sleeping.values())), WAIT)
        answers = await swarm.broadcast("steer", "echo use SQLite instead")
        await job
    assert {name: answer.get("status") for name, answer in answers.items()} == dict.fromkeys(sleeping, "queued")
    rows = {run.name: (run.status, run.error, run.text, run.stop_reason) for run in swarm.runs}
    assert rows == dict.fromkeys(sleeping, (AgentStatus.DONE, None, "use SQLite instead", "end_turn"))
