"""Rooms the store does not know: rebuild a managed one from its marker, sort out any other.

A managed room can be missing from the store (the database was lost or is older
than the room); its marker in Matrix state says everything needed to rebuild it.

A room without a marker is the user's direct chat with the bot (the bot and one
other member) or a foreign room (anything else: a group room someone invited the
bot to). That verdict is taken once from the room's state and kept in the store's
meta table, so later messages cost no state fetch and a restart does not decide
(or announce) again. In a foreign room the bot says one short notice, durably
once, and then stays silent; it does not leave (whoever invited it may remove it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from contracts.matrix import MatrixEvent, MatrixPort, MatrixRequestError
from contracts.state import RoomRecord, UserRecord, chat_index
from contracts.store import LedgerEntry, Store
from tasks.bot import notices
from tasks.bot.onboarding import space_name_of
from tasks.catalogue import Catalogue
from tasks.replies import Replier
from tasks.room_state import room_from_state

log = structlog.get_logger(__name__)

KIND_KEY = "room.kind:"  # + room id -> "direct <user id>" or "foreign"


class RoomKind(enum.StrEnum):
    DIRECT = "direct"  # the bot and one user: that user's direct chat with the bot
    FOREIGN = "foreign"  # anything else without a marker


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """A room the bot does not manage: what kind, and whose direct chat it is."""

    kind: RoomKind
    owner: str | None = None  # the other member of a direct chat


FOREIGN = Unmanaged(RoomKind.FOREIGN)


def unmanaged_kind(state: Sequence[MatrixEvent], bot_user_id: str) -> Unmanaged:
    """A direct chat when exactly one other user is joined or invited, else foreign. Pure."""
    members = {
        event.state_key
        for event in state
        if event.type == "m.room.member"
        and event.state_key
        and event.state_key != bot_user_id
        and event.content.get("membership") in ("join", "invite")
    }
    if len(members) == 1:
        return Unmanaged(RoomKind.DIRECT, owner=members.pop())
    return FOREIGN


def _encode(verdict: Unmanaged) -> str:
    return f"{verdict.kind} {verdict.owner}" if verdict.owner else str(verdict.kind)


def _decode(value: str | None) -> Unmanaged | None:
    if not value:
        return None
    kind, _, owner = value.partition(" ")
    try:
        return Unmanaged(RoomKind(kind), owner or None)
    except ValueError:
        return None


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

    def known_kind(self, room_id: str) -> Unmanaged | None:
        """The kept verdict on an unmanaged room, without asking the homeserver."""
        return _decode(self.store.get_meta(KIND_KEY + room_id))

    async def sort_out(self, room_id: str) -> RoomRecord | Unmanaged:
        """The room's record (rebuilt from its marker if forgotten), or what kind of room it is.

        At most one state fetch per room: the verdict on an unmanaged room is kept.
        Raises MatrixUnreachable / MatrixRateLimited (retried by the caller).
        """
        room = self.store.get_room(room_id)
        if room is not None:
            return room
        known = self.known_kind(room_id)
        if known is not None:
            return known
        try:
            state = await self.matrix.room_state(room_id)
        except MatrixRequestError as exc:  # not in the room (any more): nothing to keep
            log.info("repair.no_state", room_id=room_id, error=str(exc))
            return FOREIGN
        room = self.restore(room_id, state)
        if room is not None:
            return room
        verdict = unmanaged_kind(state, self.matrix.user_id)
        self.store.set_meta(KIND_KEY + room_id, _encode(verdict))
        log.info("room.unmanaged", room_id=room_id, kind=str(verdict.kind))
        return verdict

    def restore(self, room_id: str, state: Sequence[MatrixEvent]) -> RoomRecord | None:
        """Rebuild one room's record from its Matrix state (a managed room we forgot)."""
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

    async def answer_foreign(self, entry: LedgerEntry) -> None:
        """Tell an allowed user, once per room, that this room is not one of their chats."""
        if entry.sender == self.matrix.user_id or not self.is_allowed(entry.sender):
            return
        if notices.given(self.store, notices.FOREIGN, entry.room_id):
            return
        user = self.store.get_user(entry.sender)
        text = (
            self.t("foreign_room", space=space_name_of(self.store, user))
            if user is not None and user.space_id
            else self.t("foreign_room_no_space")
        )
        await self.replier.say(entry.room_id, text, reply_to=entry.event_id)
        notices.mark_given(self.store, notices.FOREIGN, entry.room_id)
