"""Paging back through a room's history, for the sync task (tasks/sync.py).

Two reasons to page back, both bounded by MAX_BACKFILL_PAGES (a truncation is
logged with counts):

- a gap: an incremental sync's timeline was limited, so events were skipped; page
  back until an event already recorded or the bot's own join (`fill_gap`);
- catch-up after a loss of local state: in a managed chat room, page back until the
  unanswered messages are anchored (`catch_up_unanswered`, tasks/catchup.py decides).

Messages from before the bot joined a room are never returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import structlog

from contracts.matrix import JoinedRoom, MatrixEvent, MatrixPort
from contracts.state import RoomType
from contracts.store import Store
from tasks.catchup import find_unanswered
from tasks.recorded_events import is_own_join, is_recorded

log = structlog.get_logger(__name__)

MAX_BACKFILL_PAGES = 20


async def catch_up_unanswered(
    store: Store, matrix: MatrixPort, room_id: str, room: JoinedRoom
) -> list[MatrixEvent]:
    """After local state loss: the messages of a managed chat nobody answered yet."""
    record = store.get_room(room_id)
    if record is None or record.room_type is not RoomType.CHAT:
        return []
    events = list(room.timeline)
    result = find_unanswered(events, matrix.user_id)
    token = room.prev_batch if room.limited else None
    pages = 0
    while not result.anchored and token and pages < MAX_BACKFILL_PAGES:
        page = await matrix.room_messages(room_id, token, backwards=True, limit=100)
        events = [*reversed(page.events), *events]
        token = page.end
        pages += 1
        result = find_unanswered(events, matrix.user_id)
    if not result.anchored and token and pages >= MAX_BACKFILL_PAGES:
        log.warning(
            "sync.backfill_truncated",
            room_id=room_id,
            purpose="catch-up",
            pages=pages,
            events=len(events),
            unanswered=len(result.unanswered),
        )
    if result.unanswered:
        log.info("catchup.unanswered", room_id=room_id, count=len(result.unanswered))
    return result.unanswered


async def fill_gap(
    store: Store, matrix: MatrixPort, room: JoinedRoom, messages: list[MatrixEvent]
) -> list[MatrixEvent]:
    """A limited timeline skipped events: page back until an event we already know.

    Never past the bot's own join: what was said before it is not for the bot.
    """
    bot = matrix.user_id
    older: list[MatrixEvent] = []
    token = room.prev_batch
    pages = 0
    while token and pages < MAX_BACKFILL_PAGES:
        page = await matrix.room_messages(room.room_id, token, backwards=True, limit=100)
        fresh = list(_until_known_or_joined(page.events, store, bot))
        older = [*reversed(fresh), *older]
        pages += 1
        if len(fresh) < len(page.events) or page.end is None:
            token = None
            break
        token = page.end
    if token:
        log.warning(
            "sync.backfill_truncated",
            room_id=room.room_id,
            purpose="gap",
            pages=pages,
            events=len(older),
        )
    return [*(e for e in older if is_recorded(e, bot)), *messages]


def _until_known_or_joined(
    events: Sequence[MatrixEvent], store: Store, bot_user_id: str
) -> Iterable[MatrixEvent]:
    """Newest first: the events up to one already recorded or the bot's own join."""
    for event in events:
        if store.is_known(event.event_id) or is_own_join(event, bot_user_id):
            return
        yield event
