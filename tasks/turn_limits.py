"""Bounds on one agent turn: its total time and the total size of its answer.

An agent that keeps streaming would otherwise hold its room forever (the HTTP
adapter's timeout runs between bytes, not over the turn). `BoundedTurns` wraps the
platform the turn streamer talks to: at the deadline, or once the answer reached
`max_chars`, it stops reading, closes the agent's stream and ends the turn with a
`TurnFailed` of a local code (`turn_timeout`, `answer_too_long`). The streamer then
shows the text so far as the final answer, and the user a clear message
(tasks/failures.py). Every other call goes through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import structlog

from contracts.platform import (
    PlatformClient,
    PlatformEvent,
    TextDelta,
    TurnDone,
    TurnFailed,
    UserTurn,
)
from tasks.forwarding import ForwardingPlatform

__all__ = ["DEFAULT_MAX_CHARS", "DEFAULT_MAX_SECONDS", "BoundedTurns"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_CHARS = 100_000
CLOSE_TIMEOUT = 5.0  # seconds for the agent's stream to close after a cut-off


class BoundedTurns(ForwardingPlatform):
    """A PlatformClient whose turns end after `max_seconds` or `max_chars` of answer."""

    def __init__(
        self,
        inner: PlatformClient,
        *,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if not max_seconds > 0 or max_chars < 1:
            raise ValueError("max_seconds must be > 0 and max_chars >= 1")
        super().__init__(inner)
        self.max_seconds = max_seconds
        self.max_chars = max_chars

    async def send_turn(self, turn: UserTurn) -> AsyncGenerator[PlatformEvent, None]:
        """The inner platform's events, cut off at the deadline or the size limit."""
        deadline = anyio.current_time() + self.max_seconds
        chars = 0
        events = self._inner.send_turn(turn)
        try:
            while True:
                event: PlatformEvent | None = None
                with anyio.move_on_at(deadline):
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                if event is None:
                    log.warning(
                        "turn.cut_off",
                        reason="turn_timeout",
                        trigger=turn.idempotency_key,
                        seconds=self.max_seconds,
                        chars=chars,
                    )
                    yield TurnFailed(
                        code="turn_timeout", message=f"no end after {self.max_seconds:g} s"
                    )
                    return
                text = _text_of(event, shown=chars)
                if text is not None and chars + len(text) > self.max_chars:
                    kept = text[: self.max_chars - chars]
                    if kept:
                        yield TextDelta(text=kept)
                    log.warning(
                        "turn.cut_off",
                        reason="answer_too_long",
                        trigger=turn.idempotency_key,
                        chars=self.max_chars,
                    )
                    yield TurnFailed(
                        code="answer_too_long", message=f"longer than {self.max_chars} characters"
                    )
                    return
                if isinstance(event, TextDelta):
                    chars += len(event.text)
                yield event
                if isinstance(event, TurnDone | TurnFailed):
                    return
        finally:
            await _close(events)


def _text_of(event: PlatformEvent, *, shown: int) -> str | None:
    """The answer text an event adds: a delta's; a done event's only if no delta came
    (the streamer shows a done event's full text only then)."""
    if isinstance(event, TextDelta):
        return event.text
    if isinstance(event, TurnDone) and shown == 0:
        return event.text
    return None


async def _close(events: AsyncIterator[PlatformEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await aclose()
