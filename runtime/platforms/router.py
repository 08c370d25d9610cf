"""One PlatformClient for the whole registry: each call goes to its agent's adapter.

`backend: mock` agents are answered by the in-process echo platform; every
`backend: http` agent gets its own HttpPlatform (its own url, token and
timeout). An agent id that is not in the registry is refused with
PlatformRejected, so a stale binding degrades into a message, not a crash.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Protocol, runtime_checkable

import anyio
import structlog

from contracts.platform import (
    ContextInfo,
    PlatformClient,
    PlatformError,
    PlatformEvent,
    PlatformHealth,
    PlatformRejected,
    Snapshot,
    UserTurn,
)
from contracts.registry import AgentBackend, AgentEntry, AgentRegistry
from runtime.platforms.echo import EchoPlatform

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds for an adapter's stream to clean up after a turn

HttpFactory = Callable[[AgentEntry], PlatformClient]


@runtime_checkable
class _Closeable(Protocol):
    async def aclose(self) -> None: ...


def default_http_factory(agent: AgentEntry) -> PlatformClient:
    """An HttpPlatform reading the agent's token from the process environment."""
    # Imported here: httpx costs ~0.2 s of start-up, and a bot with only
    # in-process agents never needs it.
    from runtime.platforms.http import HttpPlatform

    return HttpPlatform(agent)


def route(registry: AgentRegistry, agent_id: str) -> AgentEntry:
    """The registry entry for `agent_id`; raises PlatformRejected when there is none."""
    agent = registry.get(agent_id)
    if agent is None:
        raise PlatformRejected(f"agent {agent_id!r} is not in the registry")
    return agent


class AgentRouter:
    """Dispatches PlatformClient calls on agent_id (see the module docstring).

    `echo` answers the mock agents; None creates a private EchoPlatform.
    HTTP adapters are built once, at construction, by `http_factory`; call
    `aclose()` to close them.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        *,
        echo: EchoPlatform | None,
        http_factory: HttpFactory = default_http_factory,
    ) -> None:
        self.registry = registry
        self.echo = echo if echo is not None else EchoPlatform()
        self._http: dict[str, PlatformClient] = {
            agent.id: http_factory(agent)
            for agent in registry
            if agent.backend is AgentBackend.HTTP
        }

    def client_for(self, agent_id: str) -> PlatformClient:
        """The adapter serving `agent_id`; raises PlatformRejected for an unknown agent."""
        agent = route(self.registry, agent_id)
        if agent.backend is AgentBackend.HTTP:
            return self._http[agent.id]
        return self.echo

    async def aclose(self) -> None:
        for client in self._http.values():
            if isinstance(client, _Closeable):
                await client.aclose()

    # -- PlatformClient ------------------------------------------------------------------------

    async def send_turn(self, turn: UserTurn) -> AsyncGenerator[PlatformEvent, None]:
        client = self.client_for(turn.agent_id)
        events = client.send_turn(turn)
        try:
            async for event in events:
                yield event
        finally:
            if isinstance(events, _Closeable):
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await events.aclose()

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        await self.client_for(agent_id).disconnect(agent_id, platform_chat_id)

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        return await self.client_for(agent_id).save_snapshot(
            agent_id, platform_chat_id, owner=owner, name=name
        )

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return await self.client_for(agent_id).list_snapshots(agent_id, owner=owner)

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        return await self.client_for(agent_id).load_snapshot(
            agent_id, platform_chat_id, owner=owner, snapshot_id=snapshot_id
        )

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        return await self.client_for(agent_id).context_info(agent_id, platform_chat_id)

    async def health_of(self, agent_id: str) -> PlatformHealth:
        """Health of the platform serving `agent_id`; a PlatformError becomes ok=False."""
        client = self.client_for(agent_id)
        try:
            return await client.health()
        except PlatformError as exc:
            return PlatformHealth(ok=False, detail=str(exc))

    async def health(self) -> PlatformHealth:
        """All platforms at once: ok only if every one is; `detail` lists the unwell ones."""
        results: dict[str, PlatformHealth] = {}

        async def probe(agent_id: str) -> None:
            results[agent_id] = await self.health_of(agent_id)

        async with anyio.create_task_group() as tg:
            for agent in self.registry:
                tg.start_soon(probe, agent.id)
        bad = [f"{aid}: {h.detail or 'not ok'}" for aid, h in results.items() if not h.ok]
        if bad:
            log.warning(
                "platform.unhealthy", agents=[aid for aid, h in results.items() if not h.ok]
            )
        return PlatformHealth(
            ok=not bad, version="router", detail="; ".join(bad) if bad else f"{len(results)} agents"
        )
