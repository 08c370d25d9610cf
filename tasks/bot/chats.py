"""A user's chat rooms: creating one (once per trigger) and re-binding one to a fresh chat.

What `!new`, `!clear` and `!agent` change, and the first chat of onboarding.
"""

from __future__ import annotations

import anyio
import structlog

from contracts.matrix import MatrixPort
from contracts.platform import PlatformClient, PlatformError
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord, UserRecord
from contracts.store import Store
from tasks.catalogue import Catalogue
from tasks.rooms import create_chat_room, link_child, new_chat_record, write_room_marker
from tasks.sequence import PlatformChatSequence

log = structlog.get_logger(__name__)


class ChatRooms:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixPort,
        platform: PlatformClient,
        registry: AgentRegistry,
        sequence: PlatformChatSequence,
        catalogue: Catalogue,
    ) -> None:
        self.store = store
        self.matrix = matrix
        self.platform = platform
        self.registry = registry
        self.sequence = sequence
        self.t = catalogue
        self._user_locks: dict[str, anyio.Lock] = {}

    async def create(self, user: UserRecord, *, name: str | None, trigger: str) -> RoomRecord:
        """Create a chat room for `trigger` unless one was already created for it.

        Serialised per user: rooms run concurrently, and two `!new` in two rooms of
        one user must not both take the same chat index.
        """
        lock = self._user_locks.setdefault(user.matrix_user_id, anyio.Lock())
        async with lock:
            return await self._create_locked(user, name=name, trigger=trigger)

    async def _create_locked(
        self, user: UserRecord, *, name: str | None, trigger: str
    ) -> RoomRecord:
        existing = self.store.room_origin(trigger)
        if existing and (room := self.store.get_room(existing)) is not None:
            # Handled before a crash: the room exists; the link may not (idempotent).
            if room.space_id is not None:
                await link_child(self.matrix, room.space_id, room.room_id, order=room.chat_id)
            return room
        user = self.store.get_user(user.matrix_user_id) or user
        agent = self.selected_agent(user)
        display_name = name or self.t("chat_name", index=user.next_chat_index)
        platform_chat_id = await self.sequence.allocate()
        draft = new_chat_record(
            user,
            room_id="",
            display_name=display_name,
            agent_id=agent.id if agent else None,
            platform_chat_id=platform_chat_id,
        )
        room_id = await create_chat_room(self.matrix, draft, origin_event_id=trigger)
        room = draft.model_copy(update={"room_id": room_id})
        advanced = user.model_copy(update={"next_chat_index": user.next_chat_index + 1})
        self.store.add_chat_room(advanced, room)
        self.store.set_room_origin(trigger, room_id)
        # Linked only after it is recorded: a retry of a failed link reuses this room.
        assert room.space_id is not None
        await link_child(self.matrix, room.space_id, room_id, order=room.chat_id)
        log.info(
            "chat.created",
            user=user.matrix_user_id,
            room_id=room_id,
            chat_id=room.chat_id,
            agent_id=room.agent_id,
            platform_chat_id=platform_chat_id,
        )
        return room

    async def rotate(self, room: RoomRecord, *, agent_id: str | None) -> RoomRecord:
        """Give the room a fresh platform chat (and maybe agent); disconnect the old one."""
        old_agent, old_chat = room.agent_id, room.platform_chat_id
        rotated = room.model_copy(
            update={"agent_id": agent_id, "platform_chat_id": await self.sequence.allocate()}
        )
        await write_room_marker(self.matrix, rotated)
        self.store.put_room(rotated)
        if old_agent is not None and old_chat is not None and old_agent in self.registry:
            try:
                await self.platform.disconnect(old_agent, old_chat)
            except PlatformError as exc:
                log.warning("platform.disconnect_failed", agent_id=old_agent, error=str(exc))
        log.info(
            "chat.rotated",
            room_id=room.room_id,
            agent_id=agent_id,
            old_platform_chat_id=old_chat,
            platform_chat_id=rotated.platform_chat_id,
        )
        return rotated

    def selected_agent(self, user: UserRecord) -> AgentEntry | None:
        """The user's agent; the default when none is selected or the selection is gone
        (callers tell the user about the latter: see `missing_selection`)."""
        return self.registry.get(user.selected_agent_id) or self.registry.default

    def missing_selection(self, user: UserRecord) -> str | None:
        """The user's selected agent id when it is no longer in the registry, else None."""
        selected = user.selected_agent_id
        return selected if selected is not None and selected not in self.registry else None

    def user_of(self, room: RoomRecord) -> UserRecord:
        """The room owner's record (made up from the room when the store has none)."""
        return self.store.get_user(room.matrix_user_id) or UserRecord(
            matrix_user_id=room.matrix_user_id,
            space_id=room.space_id,
            selected_agent_id=room.agent_id,
        )
