"""Rooms the store does not know: rebuild a managed one from its marker, answer any other.

A managed room can be missing from the store (the database was lost or is older
than the room); its marker in Matrix state says everything needed to rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from contracts.matrix import MatrixError, MatrixPort
from contracts.state import RoomRecord, UserRecord, chat_index
from contracts.store import LedgerEntry, Store
from tasks.bot.onboarding import space_name_of
from tasks.catalogue import Catalogue
from tasks.rebuild import room_from_state
from tasks.replies import Replier

log = structlog.get_logger(__name__)


class RoomRepair:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixPort,
        catalogue: Catalogue,
        replier: Replier,
        is_allowed: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.matrix = matrix
        self.t = catalogue
        self.replier = replier
        self.is_allowed = is_allowed

    async def repair_room(self, room_id: str) -> RoomRecord | None:
        """Rebuild one room's record from its Matrix state (a managed room we forgot)."""
        try:
            state = await self.matrix.room_state(room_id)
        except MatrixError as exc:
            log.info("repair.no_state", room_id=room_id, error=str(exc))
            return None
        room = room_from_state(room_id, state, bot_user_id=self.matrix.user_id)
        if room is None:
            return None
        self.store.put_room(room)
        user = self.store.get_user(room.matrix_user_id)
        # The next `!new` must not take this room's chat id again.
        next_index = (chat_index(room.chat_id or "") or 0) + 1
        if user is None:
            self.store.put_user(
                UserRecord(
                    matrix_user_id=room.matrix_user_id,
                    space_id=room.space_id,
                    selected_agent_id=room.agent_id,
                    next_chat_index=next_index,
                )
            )
        elif user.next_chat_index < next_index:
            self.store.put_user(user.model_copy(update={"next_chat_index": next_index}))
        log.warning("repair.room_restored", room_id=room_id, chat_id=room.chat_id)
        return room

    async def answer_unmanaged(self, entry: LedgerEntry) -> None:
        """Tell an allowed user that this room is not one of their chats (and where those are)."""
        if entry.sender == self.matrix.user_id or not self.is_allowed(entry.sender):
            return
        body = entry.content.get("body")
        if not isinstance(body, str):
            return
        user = self.store.get_user(entry.sender)
        text = (
            self.t("unmanaged_room", space=space_name_of(self.store, user))
            if user is not None and user.space_id
            else self.t("unmanaged_room_no_space")
        )
        await self.replier.say(entry.room_id, text, reply_to=entry.event_id)
