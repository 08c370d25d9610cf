"""Edited questions: the user edits their last message, the bot answers the new text.

When the user edits the message the bot last answered in a chat, before the answer
was complete or within `edit_window` seconds after its last change, the agent is
asked again with the new text and the bot edits its own answer. One turn per edit,
exactly once: the edit is its own ledger entry (tasks/sync.py), so its transaction
ids and the platform's idempotency key derive from the edit event's id, and a
restart between the edit and the answer handles it once after the restart.

Everything is read back from the room's history, from what stays in the clear in
an encrypted room (relations): the bot's answer is its first message answering the
original (a rich reply / `lambda.surface.reply_to`, see tasks/catchup.py); its later
changes are edits (`m.replace`) of that message. Since a room's events are handled
in order, an edit made while the answer was still streaming is handled right after
the answer completed: the window then counts from the edit, which came first.

Not an edited question: an edit of an older message (the user wrote another one
since), of a command, or into a command; an edit of a message nobody answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from contracts.matrix import MatrixEvent, MatrixPort
from tasks.catchup import answered_event_id
from tasks.relations import annotation, new_text, replaced, replied_to, thread_root

log = structlog.get_logger(__name__)

EDIT_WINDOW = 600.0  # seconds after the answer's last change (SURFACE_EDIT_WINDOW)
# How far back the original is looked for; an edit of an older message is no question.
SEARCH_PAGES = 3
SEARCH_PAGE_SIZE = 100
MESSAGE_TYPES = frozenset({"m.room.message", "m.room.encrypted"})
TEXT_MSGTYPES = frozenset({"m.text", "m.emote"})


@dataclass(frozen=True, slots=True)
class EditedQuestion:
    """What an edit asks for: the new text, where the answer is, in which thread."""

    original: MatrixEvent  # the user's message as first sent
    answer_id: str  # the bot's message to edit
    text: str
    thread: str | None
    quoted: str | None  # the event the original replies to, if any


def is_new_message(event: MatrixEvent) -> bool:
    """A message of its own: not an edit, not a reaction (also when encrypted)."""
    return (
        event.type in MESSAGE_TYPES
        and not event.is_state
        and replaced(event.content) is None
        and annotation(event.content) is None
    )


def find_answer(
    events: Sequence[MatrixEvent],
    *,
    edit: MatrixEvent,
    bot_user_id: str,
    window_ms: int,
) -> str | None:
    """The bot's answer `edit` may change, or None when it is no edited question. Pure.

    `events` are the room's events oldest first, starting with the edited message.
    """
    original = events[0]
    if original.sender != edit.sender:
        return None
    triggers = {original.event_id}  # the original and its earlier edits
    answer: str | None = None
    last_change = 0
    edit_seen = False
    for event in events[1:]:
        if event.event_id == edit.event_id:
            edit_seen = True
            continue
        if event.sender == bot_user_id:
            if answer is not None and replaced(event.content) == answer:
                last_change = max(last_change, event.origin_server_ts)
            elif answered_event_id(event) in triggers:
                if answer is None and replaced(event.content) is None:
                    answer = event.event_id
                last_change = max(last_change, event.origin_server_ts)
        elif event.sender == edit.sender:
            if replaced(event.content) == original.event_id:
                triggers.add(event.event_id)
            elif is_new_message(event) and not edit_seen:
                return None  # the user wrote another message before editing this one
    if answer is None:
        return None
    if edit.origin_server_ts - last_change > window_ms:
        return None
    return answer


async def find_original(
    matrix: MatrixPort, room_id: str, original_id: str
) -> list[MatrixEvent] | None:
    """The room's events from `original_id` to the end, oldest first; None if not near the end."""
    newest_first: list[MatrixEvent] = []
    token: str | None = None
    for _ in range(SEARCH_PAGES):
        page = await matrix.room_messages(room_id, token, backwards=True, limit=SEARCH_PAGE_SIZE)
        for event in page.events:
            newest_first.append(event)
            if event.event_id == original_id:
                return list(reversed(newest_first))
        if page.end is None or not page.events:
            return None
        token = page.end
    return None


async def edited_question(
    matrix: MatrixPort,
    edit: MatrixEvent,
    *,
    is_command: Callable[[str], bool],
    window: float = EDIT_WINDOW,
) -> EditedQuestion | None:
    """What the edit `edit` asks the agent, or None when it is no edited question."""
    original_id = replaced(edit.content)
    text = new_text(edit.content)
    new_content = edit.content.get("m.new_content")
    if not isinstance(new_content, dict) or new_content.get("msgtype") not in TEXT_MSGTYPES:
        return None
    if original_id is None or text is None or not text.strip() or is_command(text):
        return None
    events = await find_original(matrix, edit.room_id, original_id)
    if events is None:
        log.info("edit.original_not_near", room_id=edit.room_id, event_id=edit.event_id)
        return None
    original = events[0]
    body = original.content.get("body")
    if isinstance(body, str) and is_command(body):
        return None
    answer = find_answer(
        events, edit=edit, bot_user_id=matrix.user_id, window_ms=int(window * 1000)
    )
    if answer is None:
        log.info("edit.not_a_question", room_id=edit.room_id, event_id=edit.event_id)
        return None
    return EditedQuestion(
        original=original,
        answer_id=answer,
        text=text,
        thread=thread_root(original.content),
        quoted=replied_to(original.content),
    )
