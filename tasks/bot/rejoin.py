"""Letting a user back into the rooms they left: their Space and their chats.

A user who left a chat room (or their Space) has no way back in on their own:
the rooms are invite-only. `reinvite_left` invites them again to every room of
theirs they left, except archived chats (marked, not offered). It runs when the
user invites the bot to a direct chat again and on `!chats`, whose list marks
the rooms they left (`chats_overview`). An invite is the offer: declining it
keeps them out. Membership is read from each room's state (one request per
room of the user; `!chats` and re-invites are rare).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from contracts.matrix import MatrixPort, MatrixRequestError
from contracts.state import RoomRecord
from contracts.store import Store
from tasks.bot.context import Services

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Rejoin:
    left: tuple[RoomRecord, ...]  # the user's rooms (Space and chats) they have left
    invited: tuple[RoomRecord, ...]  # of those, the ones they were invited back to now


async def membership(matrix: MatrixPort, room_id: str, user_id: str) -> str | None:
    """The user's membership in a room the bot is in; None when unknown."""
    try:
        state = await matrix.room_state(room_id)
    except MatrixRequestError as exc:  # the bot is not in the room (any more)
        log.info("rejoin.no_state", room_id=room_id, error=str(exc))
        return None
    for event in state:
        if event.type == "m.room.member" and event.state_key == user_id:
            value = event.content.get("membership")
            return value if isinstance(value, str) else None
    return None


async def reinvite_left(store: Store, matrix: MatrixPort, user_id: str) -> Rejoin:
    """Invite the user again to each of their rooms they left (archived chats excepted)."""
    left: list[RoomRecord] = []
    invited: list[RoomRecord] = []
    for room in store.list_rooms(user_id):
        if await membership(matrix, room.room_id, user_id) != "leave":
            continue
        left.append(room)
        if room.archived:
            continue
        try:
            await matrix.invite(room.room_id, user_id)
        except MatrixRequestError as exc:  # banned, or invited meanwhile
            log.info("rejoin.invite_refused", room_id=room.room_id, error=str(exc))
            continue
        invited.append(room)
    if left:
        log.info("rejoin.done", user=user_id, left=len(left), invited=len(invited))
    return Rejoin(tuple(left), tuple(invited))


async def chats_overview(bot: Services, user_id: str, *, here: str | None) -> str:
    """The `!chats` answer: every chat, marked archived / left / this room; re-invites sent."""
    t = bot.t
    chats = bot.store.list_chats(user_id)
    if not chats:
        return t("chats_empty")
    rejoin = await reinvite_left(bot.store, bot.matrix, user_id)
    left = {room.room_id for room in rejoin.left}
    lines = [t("chats_header"), ""]
    for chat in chats:
        lines.append(
            t(
                "chats_line",
                chat_id=chat.chat_id,
                name=chat.display_name,
                archived=t("chats_archived") if chat.archived else "",
                left=t("chats_left") if chat.room_id in left else "",
                here=t("chats_here") if chat.room_id == here else "",
            )
        )
    if rejoin.invited:
        lines.extend(["", t("chats_reinvited", count=len(rejoin.invited))])
    return "\n".join(lines)
