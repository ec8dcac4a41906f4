async def test_health_answers_without_auth(daemon):
    async with daemon.client() as http, http.get(f"{daemon.url}/health") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "healthy"
    assert body["nodeId"] == "test-node"
    assert body["checks"]["store"] == {"status": "ok"}
