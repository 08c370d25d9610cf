"""When a streamed answer is shown: the held first message and the edit budget. Pure.

One notification per answer, carrying its start (see the README, "Streamed answers
and notifications"): push rules never notify for an edit (`.m.rule.suppress_edits`),
so whatever the answer's first message holds when it is sent is all a notification
will ever show. The first message is therefore held back (typing is shown meanwhile)
until the answer is complete, or has `first_message_chars` characters, or
`first_message_wait` seconds have passed; a short answer is one message sent once.
Later progress is shown by edits, which notify nobody and leave nothing else behind.

Edit budget: a message gets at most `max_edits` edits, the final one included (one
is always kept for it), and the interval between progress edits doubles each time
another fifth of the budget is used, so a long stream slows down rather than stops
(clients choke on messages with hundreds of edits).

tasks/turns.py streams the answer by these rules.
"""

from __future__ import annotations

from tasks.answer_state import AnswerState, fits_message

# What the first message waits for (see above): characters, seconds.
FIRST_MESSAGE_CHARS = 300
FIRST_MESSAGE_WAIT = 15.0
# Edits per message, the final one included.
MAX_EDITS = 50


def holds_first_message(answer: AnswerState, rest: str, *, first_chars: int, now: float) -> bool:
    """Is the answer's first message still held back (too little to notify with)?

    `rest`: the answer's text not yet finished in a part; `now`: the clock's time.
    """
    return (
        answer.part == 0
        and answer.event_id is None
        and len(rest) < first_chars
        and now < answer.hold_until
        and fits_message(answer, rest)
    )


def may_edit(answer: AnswerState, max_edits: int) -> bool:
    """May the current part have a progress edit? (One edit is kept for its final text.)"""
    return answer.event_id is None or answer.edits < max_edits - 1


def progress_interval(base: float, edits: int, max_edits: int) -> float:
    """Seconds before the next progress edit of a message that has had `edits` edits.

    `base` for the first fifth of the budget, then twice that, and so on: with the
    defaults (1 s, 50 edits) a message keeps showing progress for about five minutes.
    """
    step = max(1, max_edits // 5)
    return base * 2.0 ** (edits // step)
