"""Where a streamed answer stands in the room, and how big its events may be. Pure.

An answer too large for one event continues in further messages (see
tasks/turns.py): :class:`AnswerState` is the part being shown (where it starts in
the answer's text, its message, what it shows, its edits) and the byte budget an
event may have; `fits_message` / `fits_edit` size a part's message or its edit in
bytes (tasks/answer_parts.py cuts the text to fit). `event_budget` is that budget
for a room: less in an encrypted one. :class:`TurnOutcome` is what the turn showed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.answer_parts import Part
from tasks.replies import EVENT_ENVELOPE_BYTES, content_bytes, edit_content, message_content

# An encrypted event's own fields (algorithm, sender key, session and device ids, the
# relation in the clear) and the plaintext's wrapper (type, room id) around the content.
ENCRYPTION_OVERHEAD_BYTES = 1_024
# Below this many bytes of content per event, a refused send is not tried smaller again.
MIN_EVENT_BUDGET = 4_096
# Sizing an edit needs the id of the message it replaces; real ones are 44 characters.
_SOME_EVENT_ID = "$" + "x" * 63


@dataclass
class TurnOutcome:
    """What a turn showed: the answer's text, its messages, files, error, edits."""

    text: str = ""
    message_event_id: str | None = None  # the answer's first message
    message_event_ids: list[str] = field(default_factory=list)  # every part's message
    files: list[str] = field(default_factory=list)
    error: str | None = None
    edits: int = 0


@dataclass
class AnswerState:
    """Where the answer stands in the room: the part being shown, and how big one may be."""

    trigger: str
    budget: int  # bytes of content an event may have
    thread: str | None = None  # the thread the answer goes into (tasks/replies.py)
    start: int = 0  # where the current part begins in the answer's text
    reopen: str = ""  # the fence line the current part reopens
    part: int = 0  # the current part's number (its transaction ids derive from it)
    event_id: str | None = None  # the current part's message, once sent
    shown: str = ""  # what the current part shows now
    edits: int = 0  # edits of the current part so far
    hold_until: float = 0.0  # the first message waits no longer than this (clock time)
    finished: bool = False  # the current part shows its final text (maybe since an earlier run)

    def next_part(self, finished: Part) -> None:
        self.start += len(finished.source)
        self.reopen = finished.reopen
        self.part += 1
        self.event_id = None
        self.shown = ""
        self.edits = 0
        self.finished = False

    def shrink(self) -> bool:
        """The homeserver refused an event as too large: halve the budget if it may."""
        if self.budget // 2 < MIN_EVENT_BUDGET:
            return False
        self.budget //= 2
        return True


def message_sent(answer: AnswerState, outcome: TurnOutcome, event_id: str) -> None:
    """The current part's message is `event_id` (sent now, or by an earlier run)."""
    answer.event_id = event_id
    outcome.message_event_ids.append(event_id)
    if outcome.message_event_id is None:
        outcome.message_event_id = event_id


def fits_message(answer: AnswerState, shown: str) -> bool:
    """Does a part's first message showing `shown` fit the answer's budget?"""
    if len(shown) > answer.budget:  # every character is at least one byte of `body`
        return False
    content = message_content(shown, reply_to=answer.trigger, thread=answer.thread)
    return content_bytes(content) <= answer.budget


def fits_edit(answer: AnswerState, shown: str) -> bool:
    """Does an edit of a part's message to `shown` fit the answer's budget?"""
    if 2 * len(shown) > answer.budget:  # `body` twice, with the new content's
        return False
    content = edit_content(_SOME_EVENT_ID, shown, reply_to=answer.trigger)
    return content_bytes(content) <= answer.budget


def event_budget(max_event_bytes: int, *, encrypted: bool) -> int:
    """Bytes of content one event of the answer may have in a room.

    In an encrypted room the content travels as base64 of its Megolm ciphertext
    (4/3 of the JSON) beside the cipher's own fields, so less of it fits.
    """
    budget = max_event_bytes - EVENT_ENVELOPE_BYTES
    if encrypted:
        budget = budget * 3 // 4 - ENCRYPTION_OVERHEAD_BYTES
    return budget
