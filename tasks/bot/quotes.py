"""The quoted message of a rich reply, as context for the agent.

Recent texts are at hand (the user messages the bot handled and the answers it gave,
a bounded memory, lost on restart); any other quoted event is fetched from the
homeserver, with its latest edit (a streamed answer's first message holds only the
start of the answer; its last edit holds all of it).
"""

from __future__ import annotations

from collections import OrderedDict

import structlog

from contracts.matrix import MatrixPort, MatrixRequestError
from contracts.platform import QuotedMessage
from tasks.relations import current_text

log = structlog.get_logger(__name__)

RECENT_TEXTS = 256
# A quote is context, not the question: a long one is cut (the agent can ask for more).
MAX_QUOTE_CHARS = 4_000


def shorten(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Quotes:
    def __init__(self, matrix: MatrixPort, *, capacity: int = RECENT_TEXTS) -> None:
        self._matrix = matrix
        self._capacity = capacity
        self._recent: OrderedDict[str, QuotedMessage] = OrderedDict()

    def remember(self, event_id: str, sender: str, text: str) -> None:
        """Keep a message's current text at hand (the newest `capacity` are kept)."""
        self._recent[event_id] = QuotedMessage(event_id=event_id, sender=sender, text=shorten(text))
        self._recent.move_to_end(event_id)
        while len(self._recent) > self._capacity:
            self._recent.popitem(last=False)

    async def quoted(self, room_id: str, event_id: str) -> QuotedMessage | None:
        """The quoted message, or None when the bot cannot see it or it has no text.

        Raises MatrixError subclasses worth a retry (unreachable, rate limited).
        """
        if (known := self._recent.get(event_id)) is not None:
            return known
        try:
            event = await self._matrix.get_event(room_id, event_id)
        except MatrixRequestError as exc:  # gone, redacted, before the bot joined
            log.info("quote.unavailable", room_id=room_id, event_id=event_id, status=exc.status)
            return None
        text = current_text(event)
        if text is None:
            return None
        return QuotedMessage(event_id=event_id, sender=event.sender, text=shorten(text))
