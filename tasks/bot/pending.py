"""Answers the bot waits for in one room: a `!yes`/`!no` question or a `!load` choice.

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


@dataclass(frozen=True, slots=True)
class Pending:
    """What one room waits for: a question, or a numbered list of snapshots."""

    question: Question | None = None
    snapshots: tuple[Snapshot, ...] = ()
    since: float = 0.0


def parse_choice(text: str) -> int | None:
    """The number a user answered a `!load` list with, or None when the text is not one."""
    stripped = text.strip()
    return int(stripped) if CHOICE_PATTERN.fullmatch(stripped) else None


class PendingAnswers:
    """The pending question or `!load` list of each room (at most one per room)."""

    def __init__(self, ttl: float = PENDING_TTL) -> None:
        self._ttl = ttl
        self._rooms: dict[str, Pending] = {}

    def ask(self, room_id: str, question: Question) -> None:
        self._rooms[room_id] = Pending(question=question, since=anyio.current_time())

    def offer_snapshots(self, room_id: str, snapshots: Sequence[Snapshot]) -> None:
        self._rooms[room_id] = Pending(snapshots=tuple(snapshots), since=anyio.current_time())

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
