"""Prompts, messages and terminal bytes show up in /metrics as an operator would scrape them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.agents.conftest import is_result
from tests.agents.test_agent_ws import create_session


async def scrape(daemon) -> dict[tuple[str, tuple], float]:
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/metrics", headers=daemon.auth_headers()) as response:
            text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_prompt_outcomes_messages_and_sessions_are_counted(agent_daemon, viewers):
    before = await scrape(agent_daemon)
    await create_session(agent_daemon, "counted")
    viewer = await viewers(agent_daemon, "counted")
    await viewer.until(lambda m: m.get("type") == "session_replay_complete")
    await viewer.prompt("chunks 5", request_id="r1")
    await viewer.until(is_result("r1"))
    after = await scrape(agent_daemon)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("vm_agent_prompts_total", outcome="end_turn") == 1
    assert delta("vm_agent_agent_messages_total") >= 5
    assert sum(v for (name, labels), v in after.items() if name == "vm_agent_sessions"
               and ("kind", "agent") in labels) >= 1
