"""AgentRouter dispatch, and the registry checks behind `surface check-config`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts.platform import (
    ContextInfo,
    PlatformClient,
    PlatformEvent,
    PlatformHealth,
    PlatformRejected,
    PlatformUnavailable,
    Snapshot,
    TextDelta,
    TurnDone,
    UserTurn,
)
from contracts.registry import AgentBackend, AgentEntry, AgentRegistry
from platform_agent import AgentServiceConfig, create_app
from runtime.platforms.check import check_agents, probe_agents
from runtime.platforms.echo import EchoPlatform
from runtime.platforms.http import HttpPlatform
from runtime.platforms.router import AgentRouter

ECHO = AgentEntry(id="echo", name="Echo", backend=AgentBackend.MOCK, default=True)
HELPER = AgentEntry(id="helper", name="Helper", backend=AgentBackend.HTTP, url="http://helper:8090")
OTHER = AgentEntry(id="other", name="Other", backend=AgentBackend.HTTP, url="http://other:8090")


class RecordingPlatform:
    """A fake HTTP agent: answers `<agent id>: <text>` and records every call."""

    def __init__(self, agent: AgentEntry) -> None:
        self.agent = agent
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    async def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        self.calls.append(("turn", turn.agent_id, turn.text))
        yield TextDelta(text=f"{self.agent.id}: {turn.text}")
        yield TurnDone()

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        self.calls.append(("disconnect", agent_id, platform_chat_id))

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        self.calls.append(("save", agent_id, platform_chat_id, owner, name))
        return Snapshot(snapshot_id="1", name=name, created_at="now")

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        self.calls.append(("list", agent_id, owner))
        return []

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        self.calls.append(("load", agent_id, platform_chat_id, owner, snapshot_id))
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id)

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        self.calls.append(("context", agent_id, platform_chat_id))
        return ContextInfo(agent_id=agent_id, platform_chat_id=platform_chat_id)

    async def health(self) -> PlatformHealth:
        if self.agent.id == "other":
            raise PlatformUnavailable("agent 'other' is unreachable")
        return PlatformHealth(ok=True)

    async def aclose(self) -> None:
        self.closed = True


def _turn(agent_id: str, text: str = "hi") -> UserTurn:
    return UserTurn(agent_id=agent_id, platform_chat_id="1", text=text, idempotency_key="$e")


class Fakes:
    def __init__(self) -> None:
        self.made: dict[str, RecordingPlatform] = {}

    def __call__(self, agent: AgentEntry) -> PlatformClient:
        self.made[agent.id] = RecordingPlatform(agent)
        return self.made[agent.id]


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def router(fakes: Fakes) -> AgentRouter:
    return AgentRouter(
        AgentRegistry([ECHO, HELPER, OTHER]), echo=EchoPlatform(), http_factory=fakes
    )


def test_router_is_a_platform_client(router: AgentRouter) -> None:
    assert isinstance(router, PlatformClient)


def test_one_http_adapter_per_http_agent(router: AgentRouter, fakes: Fakes) -> None:
    assert sorted(fakes.made) == ["helper", "other"]
    assert router.client_for("echo") is router.echo
    assert router.client_for("helper") is fakes.made["helper"]


async def test_mock_agents_go_to_the_echo_platform(router: AgentRouter, fakes: Fakes) -> None:
    events = [e async for e in router.send_turn(_turn("echo", "ping"))]

    assert events[-1] == TurnDone(text="echo: ping")
    assert [t.text for t in router.echo.turns_seen] == ["ping"]
    assert all(not f.calls for f in fakes.made.values())


async def test_http_agents_go_to_their_own_adapter(router: AgentRouter, fakes: Fakes) -> None:
    events = [e async for e in router.send_turn(_turn("helper"))]
    await router.disconnect("other", "5")
    await router.save_snapshot("helper", "1", owner="@a:x", name="n")
    await router.list_snapshots("helper", owner="@a:x")
    await router.load_snapshot("other", "2", owner="@a:x", snapshot_id="1")
    await router.context_info("helper", "1")

    assert events[0] == TextDelta(text="helper: hi")
    assert [c[0] for c in fakes.made["helper"].calls] == ["turn", "save", "list", "context"]
    assert [c[0] for c in fakes.made["other"].calls] == ["disconnect", "load"]
    assert router.echo.disconnected == []


async def test_an_unknown_agent_is_rejected(router: AgentRouter) -> None:
    with pytest.raises(PlatformRejected, match="agent 'gone' is not in the registry"):
        await router.context_info("gone", "1")
    with pytest.raises(PlatformRejected, match="agent 'gone' is not in the registry"):
        _ = [e async for e in router.send_turn(_turn("gone"))]


async def test_without_an_echo_platform_one_is_created() -> None:
    router = AgentRouter(AgentRegistry([ECHO]), echo=None)

    events = [e async for e in router.send_turn(_turn("echo", "x"))]

    assert events[-1] == TurnDone(text="echo: x")


async def test_health_lists_the_unwell_agents(router: AgentRouter) -> None:
    health = await router.health()
    helper = await router.health_of("helper")

    assert not health.ok
    assert health.detail is not None
    assert "other" in health.detail
    assert "helper" not in health.detail
    assert helper.ok


async def test_aclose_closes_every_http_adapter(router: AgentRouter, fakes: Fakes) -> None:
    await router.aclose()

    assert all(f.closed for f in fakes.made.values())


async def test_router_with_real_http_adapters_reaches_the_reference_service(
    tmp_path: Path,
) -> None:
    app = create_app(AgentServiceConfig(db_path=tmp_path / "a.db", workspace=tmp_path / "ws"))
    transport = httpx.ASGITransport(app=app)
    router = AgentRouter(
        AgentRegistry([ECHO, HELPER]),
        echo=None,
        http_factory=lambda agent: HttpPlatform(agent, env={}, transport=transport),
    )
    try:
        events = [e async for e in router.send_turn(_turn("helper", "via http"))]
        info = await router.context_info("helper", "1")
    finally:
        await router.aclose()
        await app.state.service.aclose()

    assert events[-1] == TurnDone(text="echo: via http")
    assert info.turns == 1


# -- check-config helpers -----------------------------------------------------------------------


def test_a_good_registry_has_no_problems() -> None:
    helper = HELPER.model_copy(update={"auth_token_env": "HELPER_TOKEN"})

    assert check_agents(AgentRegistry([ECHO, helper]), {"HELPER_TOKEN": "t"}) == []


def test_a_missing_token_env_var_is_named_with_the_fix() -> None:
    helper = HELPER.model_copy(update={"auth_token_env": "HELPER_TOKEN"})

    (problem,) = check_agents(AgentRegistry([ECHO, helper]), {"HELPER_TOKEN": " "})

    assert "'helper'" in problem
    assert "auth_token_env" in problem
    assert "set HELPER_TOKEN" in problem


@pytest.mark.parametrize(
    "url", ["http://host:99999", "http://exa mple.org", "http://host:port", "http://h/?q=1"]
)
def test_an_unusable_url_is_named_with_the_fix(url: str) -> None:
    # model_copy skips validation, as a registry built in code could.
    helper = HELPER.model_copy(update={"url": url})

    (problem,) = check_agents(AgentRegistry([helper]), {})

    assert "'helper'" in problem
    assert "field 'url'" in problem
    assert "http://platform-agent:8090" in problem


async def test_probe_reports_unreachable_agents_only(tmp_path: Path) -> None:
    app = create_app(AgentServiceConfig(db_path=tmp_path / "a.db", workspace=tmp_path / "ws"))
    asgi = httpx.ASGITransport(app=app)

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "other":
            raise httpx.ConnectError("connection refused", request=request)
        return await asgi.handle_async_request(request)

    try:
        problems = await probe_agents(
            AgentRegistry([ECHO, HELPER, OTHER]), env={}, transport=httpx.MockTransport(route)
        )
    finally:
        await app.state.service.aclose()

    (problem,) = problems
    assert problem.startswith("agent 'other', field 'url'")
    assert "unreachable" in problem


async def test_probe_with_no_http_agents_is_quiet() -> None:
    assert await probe_agents(AgentRegistry([ECHO])) == []
