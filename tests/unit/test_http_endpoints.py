"""HealthServer: /health, /ready and /metrics over a real socket on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from runtime.http import HealthServer
from runtime.metrics import PrometheusMetrics


class Probe:
    def __init__(self) -> None:
        self.ready = False
        self.metrics = PrometheusMetrics()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def client(probe: Probe) -> AsyncIterator[httpx.AsyncClient]:
    server = HealthServer("127.0.0.1", 0, ready=lambda: probe.ready, metrics=probe.metrics.render)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.bound_port}", timeout=10
        ) as http:
            yield http
        tg.cancel_scope.cancel()


async def test_health_answers_alive(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_ready_is_503_until_ready_then_200(client: httpx.AsyncClient, probe: Probe) -> None:
    before = await client.get("/ready")
    probe.ready = True
    after = await client.get("/ready")

    assert (before.status_code, before.json()) == (503, {"ready": False})
    assert (after.status_code, after.json()) == (200, {"ready": True})


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient, probe: Probe) -> None:
    probe.metrics.event_handled("m.room.message", "ok")
    probe.metrics.platform_error("timeout")
    probe.metrics.set_ready(True)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'surface_events_handled_total{kind="m.room.message",outcome="ok"} 1.0' in text
    assert 'surface_platform_errors_total{code="timeout"} 1.0' in text
    assert "surface_ready 1.0" in text
    assert "# TYPE surface_reply_latency_seconds histogram" in text


async def test_the_query_string_is_ignored(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health?verbose=1")).status_code == 200


async def test_an_unknown_path_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/admin")).status_code == 404


async def test_only_get_is_allowed(client: httpx.AsyncClient) -> None:
    assert (await client.post("/ready")).status_code == 405


async def test_a_garbled_request_line_is_400(client: httpx.AsyncClient) -> None:
    port = client.base_url.port
    assert port is not None
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"NONSENSE\r\n\r\n")
        answer = await stream.receive()

    assert answer.startswith(b"HTTP/1.1 400 ")


def test_respond_is_pure() -> None:
    server = HealthServer("127.0.0.1", 0, ready=lambda: False, metrics=lambda: b"")

    assert server.respond(b"GET /ready HTTP/1.1\r\n\r\n")[0] == "503 Service Unavailable"
    assert server.respond(b"HEAD /health HTTP/1.1\r\n\r\n")[0] == "200 OK"
