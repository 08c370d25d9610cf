"""What in a room's history is still unanswered: Matrix itself is the record.

Every message the bot sends because of a user event names that event
(`lambda.surface.reply_to`). A room is handled in order, so every user message
before the newest answered one was handled too. After a loss of local state
(database, even the nio store) the bot answers exactly the messages after that
point, never one it answered before, and never by a wall-clock guess.
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


def is_user_message(event: MatrixEvent, bot_user_id: str) -> bool:
    return event.type == "m.room.message" and event.sender != bot_user_id and not event.is_state


def find_unanswered(events: Sequence[MatrixEvent], bot_user_id: str) -> CatchUp:
    """User messages after the last point known to be handled, oldest first. Pure.

    Known points: a user message some bot message refers to, the bot's own join,
    the room's creation.
    """
    answered = {
        e.content.get(REPLY_TO_FIELD)
        for e in events
        if e.sender == bot_user_id and isinstance(e.content.get(REPLY_TO_FIELD), str)
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
