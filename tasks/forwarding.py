"""A PlatformClient that passes every call on to another one.

The platform wrappers (the connection pool, the turn bounds) each change one or
two calls; they subclass this and override only those, so the calls they leave
alone cannot drift from the protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from contracts.platform import (
    ContextInfo,
    PlatformClient,
    PlatformEvent,
    PlatformHealth,
    Snapshot,
    UserTurn,
)

__all__ = ["ForwardingPlatform"]


class ForwardingPlatform:
    """Every PlatformClient call goes to `inner` unchanged."""

    def __init__(self, inner: PlatformClient) -> None:
        self._inner = inner

    def send_turn(self, turn: UserTurn) -> AsyncIterator[PlatformEvent]:
        return self._inner.send_turn(turn)

    async def disconnect(self, agent_id: str, platform_chat_id: str) -> None:
        await self._inner.disconnect(agent_id, platform_chat_id)

    async def save_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, name: str
    ) -> Snapshot:
        return await self._inner.save_snapshot(agent_id, platform_chat_id, owner=owner, name=name)

    async def list_snapshots(self, agent_id: str, *, owner: str) -> list[Snapshot]:
        return await self._inner.list_snapshots(agent_id, owner=owner)

    async def load_snapshot(
        self, agent_id: str, platform_chat_id: str, *, owner: str, snapshot_id: str
    ) -> ContextInfo:
        return await self._inner.load_snapshot(
            agent_id, platform_chat_id, owner=owner, snapshot_id=snapshot_id
        )

    async def context_info(self, agent_id: str, platform_chat_id: str) -> ContextInfo:
        return await self._inner.context_info(agent_id, platform_chat_id)

    async def health(self) -> PlatformHealth:
        return await self._inner.health()
