"""A user's chat rooms: creating one (once per trigger) and re-binding one to a fresh chat.

Both keep the room's face up to date (topic, the bot under its agent's name:
tasks/room_face.py).

What `!new`, `!clear` and `!agent` change, and the first chat of onboarding.

A user's record is changed only under that user's lock (`user_lock`), read
afresh inside it, and written a column at a time (`add_new_chat_room`,
`set_selected_agent`): an `!agent` waiting on the homeserver cannot undo a
concurrent `!new`. A creation whose answer was lost is looked for before it is
tried again (tasks/rooms.py, `find_created_room`); at most `max_chats` chats
that are not archived per user.
"""

from __future__ import annotations

import json

import anyio
import structlog

from contracts.markers import ROOM_MARKER_TYPE
from contracts.matrix import MatrixPort
from contracts.platform import PlatformClient, PlatformError
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord, UserRecord, chat_index
from contracts.store import Store
from tasks.catalogue import Catalogue
from tasks.room_face import RoomFace
from tasks.room_state import room_from_state
from tasks.rooms import (
    create_chat_room,
    find_created_room,
    link_child,
    new_chat_record,
    write_room_marker,
    write_space_marker,
)
from tasks.sequence import PlatformChatSequence

log = structlog.get_logger(__name__)

# Meta key (+ user id): the user's latest room creations (a JSON object, trigger ->
# the chat index it took, 0 for a Space; at most ATTEMPTS_KEPT, oldest dropped). A
# retry of one of them first looks for the room a lost answer would have named, and
# when there is none creates it with the index it took before.
CREATING_CHAT_KEY = "creating:chat:"
ATTEMPTS_KEPT = 32


def attempted(store: Store, key: str, trigger: str) -> int | None:
    """The index noted for a creation tried for `trigger` under `key`; None if none was."""
    return _attempts(store, key).get(trigger)


def note_attempt(store: Store, key: str, trigger: str, index: int = 0) -> None:
    """Remember, before creating, that a room is being created for `trigger`."""
    kept = [(t, i) for t, i in _attempts(store, key).items() if t != trigger]
    store.set_meta(key, json.dumps(dict([*kept[-(ATTEMPTS_KEPT - 1) :], (trigger, index)])))


def _attempts(store: Store, key: str) -> dict[str, int]:
    try:
        value = json.loads(store.get_meta(key) or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {t: i for t, i in value.items() if isinstance(t, str) and isinstance(i, int)}


class ChatLimitReached(Exception):
    """The user has as many open chats as allowed (`SURFACE_MAX_CHATS_PER_USER`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} open chats per user")
        self.limit = limit


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
        max_chats: int | None = None,
        encrypt_rooms: bool = True,
    ) -> None:
        self.store = store
        self.max_chats = max_chats
        self.encrypt_rooms = encrypt_rooms
        self.matrix = matrix
        self.platform = platform
        self.registry = registry
        self.sequence = sequence
        self.t = catalogue
        self.face = RoomFace(matrix, registry, catalogue)
        self._user_locks: dict[str, anyio.Lock] = {}

    def user_lock(self, matrix_user_id: str) -> anyio.Lock:
        """The lock every read-modify-write of this user's record happens under."""
        return self._user_locks.setdefault(matrix_user_id, anyio.Lock())

    async def create(self, user: UserRecord, *, name: str | None, trigger: str) -> RoomRecord:
        """Create a chat room for `trigger` unless one was already created for it.

        Serialised per user: rooms run concurrently, and two `!new` in two rooms of
        one user must not both take the same chat index. Raises `ChatLimitReached`
        when the user already has `max_chats` chats that are not archived.
        """
        async with self.user_lock(user.matrix_user_id):
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
        attempt_key = CREATING_CHAT_KEY + user.matrix_user_id
        room = None
        index = attempted(self.store, attempt_key, trigger)
        if index is not None:
            # Tried before for this trigger and its answer was lost: the room may exist.
            room = await self._find_created(trigger)
        if room is None:
            self._check_limit(user)
            if index is None:
                # Taken before the room exists: a lost answer must not leave it free.
                index = user.next_chat_index
                note_attempt(self.store, attempt_key, trigger, index)
                self.store.reserve_chat_index(
                    user.model_copy(update={"next_chat_index": index + 1})
                )
            room = await self._create_new(user, index=index, name=name, trigger=trigger)
        # The origin first: a crash before the room is recorded then finds it again.
        self.store.set_room_origin(trigger, room.room_id)
        following = (chat_index(room.chat_id or "") or 0) + 1
        advanced = user.model_copy(update={"next_chat_index": max(user.next_chat_index, following)})
        self.store.add_new_chat_room(advanced, room)
        # Linked only after it is recorded: a retry of a failed link reuses this room.
        assert room.space_id is not None
        await link_child(self.matrix, room.space_id, room.room_id, order=room.chat_id)
        await self.face.show(room, topic=False)  # the topic came with the room
        log.info(
            "chat.created",
            user=user.matrix_user_id,
            room_id=room.room_id,
            chat_id=room.chat_id,
            agent_id=room.agent_id,
            platform_chat_id=room.platform_chat_id,
        )
        return room

    async def _create_new(
        self, user: UserRecord, *, index: int, name: str | None, trigger: str
    ) -> RoomRecord:
        """Create chat `C<index>` (an index this trigger took) for `trigger`."""
        agent = self.selected_agent(user)
        display_name = name or self.t("chat_name", index=index)
        platform_chat_id = await self.sequence.allocate()
        draft = new_chat_record(
            user.model_copy(update={"next_chat_index": index}),
            room_id="",
            display_name=display_name,
            agent_id=agent.id if agent else None,
            platform_chat_id=platform_chat_id,
        )
        room_id = await create_chat_room(
            self.matrix,
            draft,
            origin_event_id=trigger,
            encrypted=self.encrypt_rooms,
            topic=self.face.topic_for(draft),
        )
        return draft.model_copy(update={"room_id": room_id})

    async def _find_created(self, trigger: str) -> RoomRecord | None:
        found = await find_created_room(
            self.matrix,
            marker_type=ROOM_MARKER_TYPE,
            origin_event_id=trigger,
            known=lambda room_id: self.store.get_room(room_id) is not None,
        )
        if found is None:
            return None
        room_id, state = found
        return room_from_state(room_id, state, bot_user_id=self.matrix.user_id)

    def _check_limit(self, user: UserRecord) -> None:
        if self.max_chats is None:
            return
        open_chats = sum(1 for c in self.store.list_chats(user.matrix_user_id) if not c.archived)
        if open_chats >= self.max_chats:
            log.info("chat.limit_reached", user=user.matrix_user_id, limit=self.max_chats)
            raise ChatLimitReached(self.max_chats)

    async def select_agent(self, user: UserRecord, agent_id: str) -> None:
        """Make `agent_id` the user's choice for new chats (the Space marker, then the store).

        Under the user's lock, on a fresh read: only `selected_agent_id` changes, so a
        concurrent `!new` keeps its chat index.
        """
        async with self.user_lock(user.matrix_user_id):
            current = self.store.get_user(user.matrix_user_id) or user
            if current.selected_agent_id == agent_id:
                return
            selected = current.model_copy(update={"selected_agent_id": agent_id})
            await write_space_marker(self.matrix, selected)
            self.store.set_selected_agent(selected)

    async def rotate(self, room: RoomRecord, *, agent_id: str | None) -> RoomRecord:
        """Give the room a fresh platform chat (and maybe agent); disconnect the old one."""
        old_agent, old_chat = room.agent_id, room.platform_chat_id
        rotated = room.model_copy(
            update={"agent_id": agent_id, "platform_chat_id": await self.sequence.allocate()}
        )
        await write_room_marker(self.matrix, rotated)
        self.store.put_room(rotated)
        await self.face.show(rotated, member=agent_id != old_agent)
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
