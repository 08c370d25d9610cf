"""What in a room's history is still unanswered: Matrix itself is the record.

Every message the bot sends because of a user event names that event: as a rich
reply (`m.relates_to.m.in_reply_to`), which stays in the clear in encrypted rooms,
and in `lambda.surface.reply_to` (older bots wrote only this one; in an encrypted
room it is inside the ciphertext). A room is handled in order, so every user message
before the newest answered one was handled too. After a loss of local state
(database, even the crypto store, so old encrypted history cannot be read) the bot
answers exactly the messages after that point, never one it answered before, and
never by a wall-clock guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import MatrixEvent


@dataclass(frozen=True)
class CatchUp:
    unanswered: list[MatrixEvent]
    anchored: bool  # False: the window holds no known point; older history may matter


USER_MESSAGE_TYPES = frozenset({"m.room.message", "m.room.encrypted"})


def is_user_message(event: MatrixEvent, bot_user_id: str) -> bool:
    """A message (plain or encrypted) someone other than the bot sent."""
    return event.type in USER_MESSAGE_TYPES and event.sender != bot_user_id and not event.is_state


def answered_event_id(event: MatrixEvent) -> str | None:
    """The user event a bot message answers, read from what stays in the clear first."""
    relates = event.content.get("m.relates_to")
    in_reply_to = relates.get("m.in_reply_to") if isinstance(relates, dict) else None
    target = in_reply_to.get("event_id") if isinstance(in_reply_to, dict) else None
    if isinstance(target, str):
        return target
    legacy = event.content.get(REPLY_TO_FIELD)
    return legacy if isinstance(legacy, str) else None


def find_unanswered(events: Sequence[MatrixEvent], bot_user_id: str) -> CatchUp:
    """User messages after the last point known to be handled, oldest first. Pure.

    Known points: a user message some bot message refers to, the bot's own join,
    the room's creation.
    """
    answered = {
        target
        for e in events
        if e.sender == bot_user_id and (target := answered_event_id(e)) is not None
    }
    anchor = -1
    anchored = False
    for index, event in enumerate(events):
        if (
            (is_user_message(event, bot_user_id) and event.event_id in answered)
            or (
                event.type == "m.room.member"
                and event.state_key == bot_user_id
                and event.content.get("membership") == "join"
            )
            or event.type == "m.room.create"
        ):
            anchor, anchored = index, True
    pending = [
        e
        for e in events[anchor + 1 :]
        if is_user_message(e, bot_user_id) and e.event_id not in answered
    ]
    return CatchUp(unanswered=pending, anchored=anchored)
