from __future__ import annotations


async def test_health_reports_version_uptime_and_each_check(daemon):
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"]
        body = await response.json()
    assert body["status"] == "healthy"
    assert body["version"]
    assert body["uptimeSeconds"] >= 0
    assert body["nodeId"] == "test-node"
    assert body["checks"]["jwks"] == {"status": "ok"}
    assert body["checks"]["store"] == {"status": "ok"}


async def test_system_info_has_the_contract_shape(daemon):
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/system-info", headers=daemon.auth_headers()) as response:
            body = await response.json()
    assert set(body["cpu"]) == {"loadAvg1", "loadAvg5", "loadAvg15", "numCpu"}
    assert body["memory"]["totalBytes"] > body["memory"]["availableBytes"] > 0
    assert 0 <= body["disk"]["usedPercent"] <= 100
    assert body["uptime"]["seconds"] > 0
    assert body["agent"]["rssBytes"] > 10_000_000
    assert "docker" in body


async def test_unknown_route_and_method_are_json_errors(daemon):
    async with daemon.client() as http:
        async with http.get(f"{daemon.url}/no/such/route") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"
        async with http.delete(f"{daemon.url}/health") as response:
            assert response.status == 405
            assert (await response.json())["error"] == "method_not_allowed"
