"""Onboarding: an invite from an allowed user becomes their Space and first chat.

Safe to repeat: each step is skipped when already done, and a re-handled invite
(same trigger) finds the chat it created instead of making another. A Space
whose createRoom answer was lost is found (by the trigger in its marker) and
used, not created twice.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from contracts.markers import SPACE_MARKER_TYPE
from contracts.matrix import MatrixError, MatrixPort
from contracts.registry import AgentRegistry
from contracts.state import RoomRecord, RoomType, UserRecord
from contracts.store import LedgerEntry, Store
from tasks.bot.chats import ChatRooms, attempted, note_attempt
from tasks.catalogue import Catalogue
from tasks.replies import Replier
from tasks.rooms import create_space, find_created_room

log = structlog.get_logger(__name__)

# Meta key (+ user id): the triggers the user's Space was being created for (see
# tasks/bot/chats.py, `note_attempt`). A retry of one first looks for the Space a
# lost createRoom answer would have named.
CREATING_SPACE_KEY = "creating:space:"


def space_name_of(store: Store, user: UserRecord | None) -> str:
    """The name of the user's Space, for pointing them to it."""
    if user is None or user.space_id is None:
        return "Lambda"
    space = store.get_room(user.space_id)
    return (space.display_name if space else None) or "Lambda"


class Onboarding:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixPort,
        registry: AgentRegistry,
        catalogue: Catalogue,
        replier: Replier,
        chats: ChatRooms,
        is_allowed: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.matrix = matrix
        self.registry = registry
        self.t = catalogue
        self.replier = replier
        self.chats = chats
        self.is_allowed = is_allowed
        self._locks: dict[str, anyio.Lock] = {}

    async def handle_invite(self, entry: LedgerEntry) -> None:
        """Join and onboard the inviter, or leave when they are not allowed."""
        inviter = entry.sender
        room_id = entry.room_id
        if not self.is_allowed(inviter):
            log.info("invite.declined", room_id=room_id, inviter=inviter)
            await self.matrix.leave(room_id, reason="not on this bot's allow list")
            return
        await self.matrix.join(room_id)
        await self.onboard(inviter, trigger=entry.event_id, dm_room_id=room_id)

    async def onboard(self, user_id: str, *, trigger: str, dm_room_id: str | None) -> None:
        """Create the user's Space and first chat (each step skipped when already done).

        Serialised per user, so two invites at once cannot make two Spaces.
        """
        lock = self._locks.setdefault(user_id, anyio.Lock())
        async with lock:
            await self._onboard_locked(user_id, trigger=trigger, dm_room_id=dm_room_id)

    async def _onboard_locked(self, user_id: str, *, trigger: str, dm_room_id: str | None) -> None:
        known = self.store.get_user(user_id)
        resumed = self.store.room_origin(trigger) is not None  # same invite, re-handled
        if known is not None and known.space_id and self.store.list_chats(user_id) and not resumed:
            log.info("invite.already_onboarded", user=user_id, space_id=known.space_id)
            await self._invite_quietly(known.space_id, user_id)
            if dm_room_id is not None:
                await self.replier.say(
                    dm_room_id,
                    self.t("unmanaged_room", space=space_name_of(self.store, known)),
                    reply_to=trigger,
                )
            return
        display = await self._display_name(user_id)
        user = self.store.get_user(user_id) or UserRecord(
            matrix_user_id=user_id, selected_agent_id=self.registry.default.id
        )
        space_name = self.t("space_name", name=display)
        if user.space_id is None:
            async with self.chats.user_lock(user_id):
                space_id = await self._create_space(user, space_name, trigger)
                # Read afresh after the awaits: only the Space id is this step's to change.
                current = self.store.get_user(user_id) or user
                user = current.model_copy(update={"space_id": space_id})
                self.store.put_user(user)
            self.store.put_room(
                RoomRecord(
                    room_id=space_id,
                    room_type=RoomType.SPACE,
                    matrix_user_id=user_id,
                    display_name=space_name,
                )
            )
            log.info("onboarding.space_created", user=user_id, space_id=space_id)
        room = await self.chats.create(user, name=None, trigger=trigger)
        agent = self.registry.get(room.agent_id) or self.registry.default
        await self.replier.say(
            room.room_id,
            self.t("welcome", name=display, agent=agent.name, space=space_name),
            reply_to=trigger,
            purpose="welcome",
        )
        gone = self.chats.missing_selection(user)
        if gone is not None:  # the chat got the default: say so, and how to choose
            await self.replier.say(
                room.room_id,
                self.t("selected_missing_default", id=gone, name=agent.name),
                reply_to=trigger,
                purpose="selected-missing",
            )
        if dm_room_id is not None:
            await self.replier.say(
                dm_room_id, self.t("unmanaged_room", space=space_name), reply_to=trigger
            )

    async def _create_space(self, user: UserRecord, name: str, trigger: str) -> str:
        """Create the user's Space for `trigger`, or find the one a lost answer named."""
        attempt_key = CREATING_SPACE_KEY + user.matrix_user_id
        if attempted(self.store, attempt_key, trigger) is not None:
            found = await find_created_room(
                self.matrix,
                marker_type=SPACE_MARKER_TYPE,
                origin_event_id=trigger,
                known=lambda room_id: self.store.get_room(room_id) is not None,
            )
            if found is not None:
                return found[0]
        note_attempt(self.store, attempt_key, trigger)
        return await create_space(self.matrix, user, name, origin_event_id=trigger)

    async def _display_name(self, user_id: str) -> str:
        try:
            name = await self.matrix.display_name(user_id)
        except MatrixError:
            name = None
        return name or user_id.split(":", 1)[0].lstrip("@")

    async def _invite_quietly(self, room_id: str, user_id: str) -> None:
        try:
            await self.matrix.invite(room_id, user_id)
        except MatrixError as exc:  # already joined or invited: nothing to do
            log.debug("invite.skipped", room_id=room_id, error=str(exc))
