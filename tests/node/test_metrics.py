"""/metrics: Prometheus text an operator can scrape, with management auth or on loopback."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(daemon) -> dict[str, list]:
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/metrics", headers=daemon.auth_headers()) as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sample(families: dict, family: str, sample_name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families.get(family, [])
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_count_requests_and_auth_failures_by_reason(daemon):
    before = await scrape(daemon)
    async with daemon.client() as http:
        for _ in range(3):
            async with http.get(f"{daemon.url}/system-info", headers={"Authorization": "Bearer garbage"}):
                pass
        async with http.get(f"{daemon.url}/health"):
            pass
    after = await scrape(daemon)
    failures = "vm_agent_auth_failures"
    assert (
        sample(after, failures, f"{failures}_total", reason="malformed")
        - sample(before, failures, f"{failures}_total", reason="malformed")
        == 3
    )
    latency = "vm_agent_http_request_duration_seconds"
    assert sample(after, latency, f"{latency}_count", route="/health", status="200") >= 1
    assert sample(after, latency, f"{latency}_count", route="/system-info", status="401") >= 3
    assert "vm_agent_event_loop_lag_seconds" in after
    assert "vm_agent_sessions" in after


async def test_metrics_count_terminal_bytes_both_ways(make_daemon, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # a login shell without the machine's own profile
    daemon = await make_daemon(DEFAULT_SHELL="/bin/bash", HOST_WORKSPACE_DIR=str(home))
    before = await scrape(daemon)
    async with daemon.client() as http:
        url = f"{daemon.ws_url}/terminal/ws/multi"
        async with http.ws_connect(url, params={"token": daemon.token()}) as ws:
            await ws.send_json({"type": "create_session", "data": {"sessionId": "m"}})
            typed = "printf '%s%s' 12345 67890\r"
            await ws.send_json({"type": "input", "sessionId": "m", "data": {"data": typed}})
            seen = ""
            while "1234567890" not in seen:
                message = await ws.receive_json(timeout=15)
                if message["type"] == "output":
                    seen += message["data"]["data"]
    after = await scrape(daemon)
    name = "vm_agent_terminal_bytes"
    grew = {
        direction: sample(after, name, f"{name}_total", direction=direction)
        - sample(before, name, f"{name}_total", direction=direction)
        for direction in ("in", "out")
    }
    assert grew["in"] == len(typed)
    assert grew["out"] >= len(seen.encode())


async def test_metrics_need_management_auth(daemon):
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/metrics") as response:
            assert response.status == 401
        async with http.get(f"{daemon.url}/metrics", headers=daemon.auth_headers("user")) as response:
            assert response.status == 403


async def test_loopback_metrics_listener_needs_no_token(make_daemon):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await make_daemon(METRICS_ADDRESS=f"127.0.0.1:{port}")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert "vm_agent_http_request_duration_seconds" in await response.text()
