"""HttpPlatform: against the reference service in-process, against scripted transports, and
against the service as a real process over real HTTP."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from contracts.platform import (
    EmittedFile,
    PlatformClient,
    PlatformEvent,
    PlatformRejected,
    PlatformTimeout,
    PlatformUnavailable,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from contracts.registry import AgentBackend, AgentEntry
from contracts.wire import WIRE_VERSION_HEADER, TurnRequest
from platform_agent import AgentServiceConfig, create_app
from runtime.platforms.http import HttpPlatform, RetryPolicy
from tasks.platform_pool import PlatformPool
from tasks.retry import Backoff

FAST = RetryPolicy(attempts=3, backoff=Backoff(initial=0.001, max=0.002, jitter=0.0))
ROOT = Path(__file__).resolve().parents[2]


def _agent(url: str = "http://platform-agent:8090", **fields: Any) -> AgentEntry:
    return AgentEntry(id="helper", name="Helper", backend=AgentBackend.HTTP, url=url, **fields)


def _turn(text: str = "hi", key: str = "$e1", **fields: Any) -> UserTurn:
    return UserTurn(
        agent_id="helper",
        platform_chat_id="7",
        text=text,
        idempotency_key=key,
        sender="@alice:example.org",
        **fields,
    )


async def _collect(client: PlatformClient, turn: UserTurn) -> list[PlatformEvent]:
    return [event async for event in client.send_turn(turn)]


def _text(events: list[PlatformEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- against the reference service, in-process -------------------------------------------------


@asynccontextmanager
async def reference(
    tmp_path: Path,
    *,
    token: str | None = None,
    agent: AgentEntry | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[HttpPlatform]:
    config = AgentServiceConfig(
        db_path=tmp_path / "agent.db",
        workspace=tmp_path / "ws",
        token=SecretStr(token) if token else None,
    )
    app = create_app(config)
    platform = HttpPlatform(
        agent or _agent(), env=env or {}, transport=httpx.ASGITransport(app=app), retry=FAST
    )
    try:
        yield platform
    finally:
        await platform.aclose()
        await app.state.service.aclose()


async def test_turn_round_trip_against_the_reference_service(tmp_path: Path) -> None:
    async with reference(tmp_path) as platform:
        events = await _collect(platform, _turn("hello", attachments=("inbox/a.txt",)))

    assert _text(events) == "echo: hello\n\nattachments: inbox/a.txt"
    assert events[-1] == TurnDone(text=_text(events))


async def test_a_resent_turn_is_answered_from_the_record(tmp_path: Path) -> None:
    async with reference(tmp_path) as platform:
        first = await _collect(platform, _turn("once"))
        again = await _collect(platform, _turn("once"))
        info = await platform.context_info("helper", "7")

    assert again == first
    assert info.turns == 1


async def test_emitted_files_arrive_as_relative_paths(tmp_path: Path) -> None:
    async with reference(tmp_path) as platform:
        events = await _collect(platform, _turn("!emit out.csv"))

    assert EmittedFile(path="agent-out/out.csv", mimetype="text/csv") in events
    assert (tmp_path / "ws" / "agent-out" / "out.csv").is_file()


async def test_snapshots_and_context_through_the_adapter(tmp_path: Path) -> None:
    owner = "@alice:example.org"
    async with reference(tmp_path) as platform:
        await _collect(platform, _turn("one"))
        snapshot = await platform.save_snapshot("helper", "7", owner=owner, name="first")
        listed = await platform.list_snapshots("helper", owner=owner)
        loaded = await platform.load_snapshot("helper", "8", owner=owner, snapshot_id="1")
        await platform.disconnect("helper", "7")
        health = await platform.health()

    assert listed == [snapshot]
    assert (snapshot.name, snapshot.turns) == ("first", 1)
    assert (loaded.platform_chat_id, loaded.turns, loaded.snapshots) == ("8", 1, 0)
    assert health.ok
    assert health.version is not None
    assert "platform-agent" in health.version


async def test_a_missing_snapshot_is_rejected_with_the_servers_reason(tmp_path: Path) -> None:
    async with reference(tmp_path) as platform:
        with pytest.raises(PlatformRejected, match="snapshot_not_found"):
            await platform.load_snapshot("helper", "7", owner="@a:x", snapshot_id="99")


async def test_the_token_comes_from_the_env_var_the_registry_names(tmp_path: Path) -> None:
    agent = _agent(auth_token_env="HELPER_TOKEN")
    async with reference(
        tmp_path, token="s3cret", agent=agent, env={"HELPER_TOKEN": "s3cret"}
    ) as platform:
        events = await _collect(platform, _turn())

    assert isinstance(events[-1], TurnDone)


async def test_a_wrong_token_is_rejected_naming_the_env_var_not_the_token(tmp_path: Path) -> None:
    agent = _agent(auth_token_env="HELPER_TOKEN")
    async with reference(
        tmp_path, token="s3cret", agent=agent, env={"HELPER_TOKEN": "guess"}
    ) as platform:
        with pytest.raises(PlatformRejected) as caught:
            await _collect(platform, _turn())

    assert "HELPER_TOKEN" in str(caught.value)
    assert "unauthorized" in str(caught.value)
    assert "guess" not in str(caught.value)
    assert "s3cret" not in str(caught.value)


# -- against scripted transports ----------------------------------------------------------------


@dataclass
class Script:
    """A MockTransport handler that answers each request with the next scripted reply."""

    replies: list[Callable[[httpx.Request], httpx.Response]]

    def __post_init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(anyio.current_time())
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        return reply(request)

    def platform(self, retry: RetryPolicy = FAST, **fields: Any) -> HttpPlatform:
        return HttpPlatform(
            _agent(**fields), env={}, transport=httpx.MockTransport(self), retry=retry
        )


def ndjson(*events: PlatformEvent) -> Callable[[httpx.Request], httpx.Response]:
    body = b"".join(e.model_dump_json().encode() + b"\n" for e in events)
    return lambda request: httpx.Response(200, content=body)


def status(
    http_status: int, code: str | None = None, message: str = ""
) -> Callable[[httpx.Request], httpx.Response]:
    body = {"code": code, "message": message} if code else None
    return lambda request: httpx.Response(http_status, json=body)


def raises(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc("scripted failure", request=request)

    return reply


class _BreaksAfterFirstLine(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield TextDelta(text="partial").model_dump_json().encode() + b"\n"
        raise httpx.ReadError("connection reset by peer")


GOOD = ndjson(TextDelta(text="ok"), TurnDone(text="ok"))


async def test_the_request_speaks_wire_v1() -> None:
    script = Script([GOOD])
    async with script.platform() as platform:
        await _collect(platform, _turn("hi", attachments=("inbox/a.txt",)))

    (request,) = script.requests
    assert request.url == "http://platform-agent:8090/v1/turns"
    assert request.headers[WIRE_VERSION_HEADER] == "1"
    body = TurnRequest.model_validate_json(request.content)
    assert (body.idempotency_key, body.attachments) == ("$e1", ["inbox/a.txt"])


async def test_a_url_with_a_path_prefix_keeps_it() -> None:
    script = Script([GOOD])
    async with HttpPlatform(
        _agent("http://gw.example/agents/helper"), transport=httpx.MockTransport(script)
    ) as platform:
        await _collect(platform, _turn())

    assert script.requests[0].url == "http://gw.example/agents/helper/v1/turns"


async def test_a_turn_is_retried_on_5xx_before_any_event() -> None:
    script = Script([status(503, code="busy", message="warming up"), status(502), GOOD])
    async with script.platform() as platform:
        events = await _collect(platform, _turn())

    assert len(script.requests) == 3
    assert {r.content for r in script.requests} == {script.requests[0].content}
    assert events == [TextDelta(text="ok"), TurnDone(text="ok")]


async def test_a_turn_is_retried_after_a_connect_error_then_gives_up_clearly() -> None:
    script = Script([raises(httpx.ConnectError)])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="unreachable") as caught:
            await _collect(platform, _turn())

    assert len(script.requests) == FAST.attempts
    assert "helper" in str(caught.value)


@pytest.mark.trio_only
@pytest.mark.virtual_time
async def test_a_dead_agent_gets_a_bounded_number_of_posts_on_one_schedule() -> None:
    """Through the pool, as the bot runs it: the adapter's attempts, its backoff, nothing more."""
    policy = RetryPolicy()  # the production default
    script = Script([raises(httpx.ConnectError)])
    async with script.platform(retry=policy) as platform:
        pool = PlatformPool(platform)
        with pytest.raises(PlatformUnavailable, match="unreachable"):
            await _collect(pool, _turn(key="$dead"))

    assert len(script.requests) == policy.attempts
    assert {
        TurnRequest.model_validate_json(r.content).idempotency_key for r in script.requests
    } == {"$dead"}
    waits = [later - earlier for earlier, later in itertools.pairwise(script.times)]
    backoff = policy.backoff
    for retry_number, waited in enumerate(waits, start=1):
        nominal = min(backoff.initial * backoff.factor ** (retry_number - 1), backoff.max)
        assert nominal * (1 - backoff.jitter) <= waited <= nominal * (1 + backoff.jitter)
    assert pool.statistics().errors == 1


async def test_a_turn_is_not_retried_once_an_event_arrived() -> None:
    script = Script([lambda request: httpx.Response(200, stream=_BreaksAfterFirstLine()), GOOD])
    seen: list[PlatformEvent] = []

    async def consume(platform: HttpPlatform) -> None:
        async for event in platform.send_turn(_turn()):
            seen.append(event)

    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="connection failed"):
            await consume(platform)

    assert seen == [TextDelta(text="partial")]
    assert len(script.requests) == 1


async def test_a_stream_without_a_terminal_line_is_unavailable() -> None:
    script = Script([ndjson(TextDelta(text="half"))])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="without a done or error line"):
            await _collect(platform, _turn())

    assert len(script.requests) == 1  # an event had arrived: no resend


async def test_an_empty_stream_is_retried() -> None:
    script = Script([ndjson(), GOOD])
    async with script.platform() as platform:
        events = await _collect(platform, _turn())

    assert len(script.requests) == 2
    assert events[-1] == TurnDone(text="ok")


async def test_a_turn_failed_line_ends_the_stream() -> None:
    failed = TurnFailed(code="agent_error", message="boom")
    script = Script([ndjson(failed)])
    async with script.platform() as platform:
        events = await _collect(platform, _turn())

    assert events == [failed]


async def test_a_read_timeout_is_platform_timeout_and_not_retried() -> None:
    script = Script([raises(httpx.ReadTimeout)])
    async with script.platform(timeout_seconds=7) as platform:
        with pytest.raises(PlatformTimeout, match="within 7 s"):
            await _collect(platform, _turn())

    assert len(script.requests) == 1


async def test_a_4xx_is_rejected_with_the_reason_and_not_retried() -> None:
    script = Script([status(400, code="bad_request", message="text: field required")])
    async with script.platform() as platform:
        with pytest.raises(PlatformRejected, match=r"text: field required \(bad_request\)"):
            await _collect(platform, _turn())

    assert len(script.requests) == 1


async def test_errors_never_carry_the_credentials_in_the_agent_url() -> None:
    script = Script([raises(httpx.ReadTimeout)])
    url = "http://svc:hunter2@gw.example/agents?api_key=k3y-secret"
    async with HttpPlatform(_agent(url), transport=httpx.MockTransport(script)) as platform:
        with pytest.raises(PlatformTimeout) as caught:
            await _collect(platform, _turn())

    message = str(caught.value)
    assert "gw.example" in message
    assert "hunter2" not in message and "k3y-secret" not in message


async def test_429_counts_as_unavailable_and_is_retried() -> None:
    script = Script([status(429, code="slow_down", message="too many")])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="429"):
            await platform.context_info("helper", "7")

    assert len(script.requests) == FAST.attempts


async def test_a_line_that_is_not_an_event_is_unavailable() -> None:
    script = Script([lambda request: httpx.Response(200, content=b'{"type": "poem"}\n')])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="not a wire v1 event"):
            await _collect(platform, _turn())


async def test_saving_a_snapshot_is_never_retried() -> None:
    script = Script([status(503)])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable):
            await platform.save_snapshot("helper", "7", owner="@a:x", name="n")

    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: p.disconnect("helper", "7"), id="disconnect"),
        pytest.param(lambda p: p.list_snapshots("helper", owner="@a:x"), id="list"),
        pytest.param(
            lambda p: p.load_snapshot("helper", "7", owner="@a:x", snapshot_id="1"), id="load"
        ),
        pytest.param(lambda p: p.context_info("helper", "7"), id="context"),
    ],
)
async def test_idempotent_calls_are_retried(call: Callable[[HttpPlatform], Any]) -> None:
    answers = {
        "/v1/chats/disconnect": {"disconnected": True},
        "/v1/snapshots/list": {"snapshots": []},
        "/v1/snapshots/load": {"agent_id": "helper", "platform_chat_id": "7"},
        "/v1/context": {"agent_id": "helper", "platform_chat_id": "7"},
    }
    script = Script(
        [raises(httpx.ConnectError), lambda r: httpx.Response(200, json=answers[r.url.path])]
    )
    async with script.platform() as platform:
        await call(platform)

    assert len(script.requests) == 2


async def test_health_reports_a_wire_version_mismatch_as_not_ok() -> None:
    health = {"ok": True, "wire_version": "2", "service": "future-agent"}
    script = Script([lambda request: httpx.Response(200, json=health)])
    async with script.platform() as platform:
        answer = await platform.health()

    assert not answer.ok
    assert answer.detail is not None
    assert "wire v2" in answer.detail


async def test_health_of_something_that_is_not_a_platform_agent() -> None:
    script = Script([lambda request: httpx.Response(200, text="<html>nginx</html>")])
    async with script.platform() as platform:
        with pytest.raises(PlatformUnavailable, match="not a HealthResponse"):
            await platform.health()


# -- the service as a real process --------------------------------------------------------------


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[RunningAgent]:
    port = _free_port()
    env = {
        **os.environ,
        "PLATFORM_AGENT_HOST": "127.0.0.1",
        "PLATFORM_AGENT_PORT": str(port),
        "PLATFORM_AGENT_DB": str(tmp_path / "agent.db"),
        "PLATFORM_AGENT_WORKSPACE": str(tmp_path / "ws"),
        "PLATFORM_AGENT_BACKEND": "echo",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PLATFORM_AGENT_TOKEN", None)
    log = tmp_path / "platform-agent.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "platform_agent"], cwd=ROOT, env=env, stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"platform-agent exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"platform-agent not ready:\n{log.read_text()}"
            time.sleep(0.05)
        yield RunningAgent(process, url, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_real_process_turn_timeout_and_death(agent_process: RunningAgent) -> None:
    agent = _agent(agent_process.url, timeout_seconds=1)
    async with HttpPlatform(agent, env={}, retry=FAST) as platform:
        events = await _collect(platform, _turn("over the wire !emit real.txt"))
        assert _text(events) == "echo: over the wire !emit real.txt"
        assert EmittedFile(path="agent-out/real.txt", mimetype="text/plain") in events
        assert (await platform.health()).ok

        with pytest.raises(PlatformTimeout, match="within 1 s"):
            await _collect(platform, _turn("!slow 5", key="$slow"))

        agent_process.process.kill()
        agent_process.process.wait(timeout=10)

        with pytest.raises(PlatformUnavailable) as caught:
            await _collect(platform, _turn("anyone?", key="$e2"))

    message = str(caught.value)
    assert "'helper'" in message
    assert agent_process.url in message
    assert "unreachable" in message
    assert "is the platform running?" in message


def test_the_process_refuses_a_bad_configuration(tmp_path: Path) -> None:
    env = {**os.environ, "PLATFORM_AGENT_PORT": "eighty", "PLATFORM_AGENT_DB": str(tmp_path / "a")}
    done = subprocess.run(
        [sys.executable, "-m", "platform_agent"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert b"PLATFORM_AGENT_PORT" in done.stderr
