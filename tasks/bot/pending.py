"""Answers the bot waits for in one room: a `!yes`/`!no` question or a `!load` choice.

Each remembers the bot's message that asked (`message_id`): the bot puts ✅ / ❌ (or
1️⃣ … 🔟 on a `!load` list) on it as reactions, and the user's reaction with one of
those keys on that message answers like `!yes` / `!no` / the number.

Not durable on purpose: it is short-lived conversation state; after a restart the
user simply asks again. An unanswered question expires after `PENDING_TTL` seconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio

from contracts.platform import Snapshot

PENDING_TTL = 600.0

# A `!load` choice: one to four ASCII digits, nothing else (not "²", not 5000 digits).
CHOICE_PATTERN = re.compile(r"[0-9]{1,4}", re.ASCII)

Question = Literal["archive", "clear"]

YES_KEY = "✅"
NO_KEY = "❌"
# 1️⃣ … 9️⃣ are keycaps (digit, VS16, U+20E3); 🔟 is one code point. Keys as sent, with VS16.
NUMBER_KEYS = (*(f"{n}\ufe0f\u20e3" for n in range(1, 10)), "\U0001f51f")


@dataclass(frozen=True, slots=True)
class Pending:
    """What one room waits for: a question, or a numbered list of snapshots."""

    question: Question | None = None
    snapshots: tuple[Snapshot, ...] = ()
    since: float = 0.0
    message_id: str | None = None  # the bot's message that asked


def reaction_choice(key: str) -> int | None:
    """The number a reaction key stands for (1️⃣ is 1, 🔟 is 10), with or without VS16."""
    bare = key.replace("\ufe0f", "")
    for n, number_key in enumerate(NUMBER_KEYS, start=1):
        if bare == number_key.replace("\ufe0f", ""):
            return n
    return None


def reaction_answer(key: str) -> bool | None:
    """True for ✅, False for ❌ (with or without VS16), None for any other key."""
    bare = key.replace("\ufe0f", "")
    return {YES_KEY: True, NO_KEY: False}.get(bare)


def parse_choice(text: str) -> int | None:
    """The number a user answered a `!load` list with, or None when the text is not one."""
    stripped = text.strip()
    return int(stripped) if CHOICE_PATTERN.fullmatch(stripped) else None


class PendingAnswers:
    """The pending question or `!load` list of each room (at most one per room)."""

    def __init__(self, ttl: float = PENDING_TTL) -> None:
        self._ttl = ttl
        self._rooms: dict[str, Pending] = {}

    def ask(self, room_id: str, question: Question, *, message_id: str | None = None) -> None:
        self._rooms[room_id] = Pending(
            question=question, since=anyio.current_time(), message_id=message_id
        )

    def offer_snapshots(
        self, room_id: str, snapshots: Sequence[Snapshot], *, message_id: str | None = None
    ) -> None:
        self._rooms[room_id] = Pending(
            snapshots=tuple(snapshots), since=anyio.current_time(), message_id=message_id
        )

    def get(self, room_id: str) -> Pending | None:
        """The room's pending answer, unless it expired (an expired one is dropped)."""
        pending = self._rooms.get(room_id)
        if pending is not None and anyio.current_time() - pending.since > self._ttl:
            del self._rooms[room_id]
            return None
        return pending

    def take(self, room_id: str) -> Pending | None:
        """Like `get`, and the room no longer waits."""
        pending = self.get(room_id)
        self._rooms.pop(room_id, None)
        return pending

    def discard(self, room_id: str) -> bool:
        """Stop waiting; True if the room was waiting (expired or not)."""
        return self._rooms.pop(room_id, None) is not None
