"""Many chat rooms, fast: created as the bot's account exactly as the bot creates them.

The bot's own `!new` goes through the sync loop and the ledger and costs about a
second per room; here the same helpers the bot uses (tasks/rooms.py:
`create_space`, `create_chat_room` with the `lambda.surface.room` marker and
`m.space.parent` in `initial_state`, then `link_child` for the Space's
`m.space.child`, as tasks/bot/chats.py does) run directly on a NioMatrix session of the
bot's account, several at a time. The owners are real
registered users; they are invited, as the bot invites them, and do not join
(their membership event is in the room state either way).

The sequence high-water mark in the bot's account data is raised above every
platform_chat_id handed out here, as the bot would have done.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from contracts.markers import SEQUENCE_ACCOUNT_DATA_TYPE, SequenceHighWater
from contracts.state import RoomRecord, RoomType, UserRecord
from runtime.dev.accounts import RegisteredUser
from runtime.matrix.nio_adapter import NioMatrix
from tasks.rooms import create_chat_room, create_space, link_child

AGENT_ID = "echo"


@dataclass
class _Owner:
    user: UserRecord
    chats: int = 0


@dataclass
class BulkRooms:
    """Grows the bot's set of chat rooms; `ensure(n)` creates what is missing up to n."""

    matrix: NioMatrix
    register: Callable[[str], RegisteredUser]
    rooms_per_owner: int
    concurrency: int
    owners: list[_Owner] = field(default_factory=list)
    chat_rooms: int = 0
    spaces: int = 0
    seconds: float = 0.0
    _next_platform_chat: int = 0

    @classmethod
    async def open(
        cls,
        *,
        homeserver: str,
        bot: RegisteredUser,
        store_path: Path,
        register: Callable[[str], RegisteredUser],
        rooms_per_owner: int,
        concurrency: int,
    ) -> BulkRooms:
        matrix = await NioMatrix.connect(
            homeserver=homeserver,
            user_id=bot.user_id,
            password=bot.password,
            access_token=None,
            store_path=store_path,
            device_name="benchmark-bulk-rooms",
        )
        return cls(matrix, register, rooms_per_owner, concurrency)

    async def close(self) -> None:
        await self.matrix.close()

    async def ensure(self, total: int) -> float:
        """Create chat rooms (and new owners' Spaces) until there are `total`; returns seconds."""
        if total <= self.chat_rooms:
            return 0.0
        started = time.monotonic()
        content = await self.matrix.get_account_data(SEQUENCE_ACCOUNT_DATA_TYPE) or {}
        high_water = int(content.get("reserved_through", 0))
        self._next_platform_chat = max(self._next_platform_chat, high_water + 1)
        first_id = self._next_platform_chat
        plan: list[tuple[_Owner, int, int]] = []  # owner, chat index, platform chat id
        while self.chat_rooms + len(plan) < total:
            owner = self._owner_with_room()
            owner.chats += 1
            plan.append((owner, owner.chats, self._next_platform_chat))
            self._next_platform_chat += 1
        limiter = anyio.CapacityLimiter(self.concurrency)
        await self._register_owners(limiter)
        # Reserve first, as the bot's PlatformChatSequence does: Matrix before use.
        await self.matrix.set_account_data(
            SEQUENCE_ACCOUNT_DATA_TYPE,
            SequenceHighWater(reserved_through=self._next_platform_chat - 1).model_dump(),
        )
        await self._create_spaces(limiter)
        by_owner: dict[str, list[tuple[_Owner, int, int]]] = {}
        for item in plan:
            by_owner.setdefault(item[0].user.matrix_user_id, []).append(item)

        async def create_for_owner(items: list[tuple[_Owner, int, int]]) -> None:
            # One owner's chats in index order, as the bot's per-user lock does.
            for owner, index, platform_chat_id in items:
                async with limiter:
                    await self._create_chat(owner, index, platform_chat_id)

        async with anyio.create_task_group() as tg:
            for items in by_owner.values():
                tg.start_soon(create_for_owner, items)
        assert self._next_platform_chat - first_id == len(plan)
        elapsed = time.monotonic() - started
        self.seconds += elapsed
        return elapsed

    def _owner_with_room(self) -> _Owner:
        if self.owners and self.owners[-1].chats < self.rooms_per_owner:
            return self.owners[-1]
        owner = _Owner(UserRecord(matrix_user_id="", selected_agent_id=AGENT_ID))
        self.owners.append(owner)
        return owner

    async def _register_owners(self, limiter: anyio.CapacityLimiter) -> None:
        """Register the owners planned but not yet registered, several at a time."""

        async def register(number: int, owner: _Owner) -> None:
            name = f"bulk-owner-{number}-{secrets.token_hex(3)}"
            registered = await anyio.to_thread.run_sync(self.register, name, limiter=limiter)
            owner.user = owner.user.model_copy(update={"matrix_user_id": registered.user_id})

        async with anyio.create_task_group() as tg:
            for number, owner in enumerate(self.owners, start=1):
                if not owner.user.matrix_user_id:
                    tg.start_soon(register, number, owner)

    async def _create_spaces(self, limiter: anyio.CapacityLimiter) -> None:
        async def create(owner: _Owner) -> None:
            async with limiter:
                name = f"Lambda — {owner.user.matrix_user_id}"
                space_id = await create_space(self.matrix, owner.user, name)
            owner.user = owner.user.model_copy(update={"space_id": space_id})
            self.spaces += 1

        async with anyio.create_task_group() as tg:
            for owner in self.owners:
                if owner.user.space_id is None:
                    tg.start_soon(create, owner)

    async def _create_chat(self, owner: _Owner, index: int, platform_chat_id: int) -> None:
        record = RoomRecord(
            room_id="",
            room_type=RoomType.CHAT,
            matrix_user_id=owner.user.matrix_user_id,
            space_id=owner.user.space_id,
            chat_id=f"C{index}",
            display_name=f"Chat {index}",
            agent_id=AGENT_ID,
            platform_chat_id=str(platform_chat_id),
        )
        room_id = await create_chat_room(self.matrix, record)
        assert owner.user.space_id is not None
        await link_child(self.matrix, owner.user.space_id, room_id, order=record.chat_id)
        self.chat_rooms += 1
