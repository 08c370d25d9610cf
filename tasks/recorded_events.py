"""Which events of a /sync the bot records in its ledger, and where the bot joined.

Recorded (`is_recorded`): a user's message (an edit is one too) and a user's
reaction; invites (`invite_entries`). Nothing from before the bot's own join to a
room (`is_own_join`, `own_join_index`, `live_messages`). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.matrix import JoinedRoom, MatrixEvent, SyncBatch
from contracts.store import LedgerEntry
from tasks.catchup import is_user_message


def invite_entries(batch: SyncBatch) -> list[LedgerEntry]:
    return [
        LedgerEntry.invite(room.room_id, inviter=room.inviter, is_direct=room.is_direct)
        for room in batch.invited.values()
        if room.inviter
    ]


def is_own_join(event: MatrixEvent, bot_user_id: str) -> bool:
    """The bot's own membership turning into `join` (not a profile change while joined)."""
    if not (
        event.type == "m.room.member"
        and event.state_key == bot_user_id
        and event.content.get("membership") == "join"
    ):
        return False
    prev = event.unsigned.get("prev_content")
    return not (isinstance(prev, dict) and prev.get("membership") == "join")


def own_join_index(events: Sequence[MatrixEvent], bot_user_id: str) -> int | None:
    """Where in `events` the bot last joined the room, or None when it is not there."""
    for index in range(len(events) - 1, -1, -1):
        if is_own_join(events[index], bot_user_id):
            return index
    return None


def is_recorded(event: MatrixEvent, bot_user_id: str) -> bool:
    """An event the bot acts on, so the ledger records it: a user's message (an edit is
    one too) or a user's reaction (it may answer a question, tasks/bot/surface.py).

    Catch-up after a loss of local state looks for unanswered messages only: the
    questions reactions answer are not durable (tasks/bot/pending.py).
    """
    if is_user_message(event, bot_user_id):
        return True
    return event.type == "m.reaction" and event.sender != bot_user_id and not event.is_state


def live_messages(room: JoinedRoom, bot_user_id: str) -> list[MatrixEvent]:
    """Recorded events of an incremental sync, skipping those before the bot's own join."""
    events = list(room.timeline)
    joined_at = own_join_index(events, bot_user_id)
    if joined_at is not None:
        events = events[joined_at + 1 :]
    return [e for e in events if is_recorded(e, bot_user_id)]
