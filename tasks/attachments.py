"""Files a user uploaded, waiting for that user's next text message in the room.

Deliberately not durable: after a restart nothing is staged, and the files
stay in the inbox where the user (or the agent) can still find them. Staged
paths also expire, so a photo sent yesterday does not ride along with
today's first question: every call drops what expired, and the materializer
task calls :meth:`AttachmentStaging.expire` now and then for rooms nobody
writes in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog

__all__ = ["DEFAULT_STAGING_TTL", "AttachmentStaging", "StagingStatistics"]

DEFAULT_STAGING_TTL = 30 * 60.0

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Staged:
    path: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class StagingStatistics:
    rooms: int
    paths: int


class AttachmentStaging:
    """Per-room staged workspace-relative paths, in staging order, each with a TTL.

    `clock` defaults to ``anyio.current_time`` (so trio's MockClock drives
    expiry in tests); with the default, call the methods inside the event loop.
    At most `max_per_room` paths are kept per room: staging more drops the oldest.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_STAGING_TTL,
        max_per_room: int = 32,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if max_per_room < 1:
            raise ValueError("max_per_room must be at least 1")
        self._ttl = ttl
        self._max_per_room = max_per_room
        self._clock = clock
        self._rooms: dict[str, list[_Staged]] = {}

    def stage(self, room_id: str, path: str) -> None:
        """Stage `path` for the room's next message; staging it again renews its TTL."""
        now = self._clock()
        self._sweep(now)
        entries = [entry for entry in self._rooms.get(room_id, []) if entry.path != path]
        entries.append(_Staged(path, now + self._ttl))
        if len(entries) > self._max_per_room:
            dropped = len(entries) - self._max_per_room
            log.info("attachments.dropped_oldest", room_id=room_id, dropped=dropped)
            entries = entries[dropped:]
        self._rooms[room_id] = entries

    def peek(self, room_id: str) -> tuple[str, ...]:
        """The room's live staged paths, oldest first, without taking them."""
        self._sweep(self._clock())
        return tuple(entry.path for entry in self._rooms.get(room_id, ()))

    def take(self, room_id: str) -> tuple[str, ...]:
        """The room's live staged paths, oldest first; the room is empty afterwards."""
        self._sweep(self._clock())
        return tuple(entry.path for entry in self._rooms.pop(room_id, ()))

    def clear(self, room_id: str) -> int:
        """Forget the room's staged paths; returns how many were live."""
        self._sweep(self._clock())
        return len(self._rooms.pop(room_id, ()))

    def expire(self) -> int:
        """Drop every room's expired paths; returns how many were dropped."""
        before = sum(len(entries) for entries in self._rooms.values())
        self._sweep(self._clock())
        return before - sum(len(entries) for entries in self._rooms.values())

    def statistics(self) -> StagingStatistics:
        self._sweep(self._clock())
        return StagingStatistics(
            rooms=len(self._rooms), paths=sum(len(v) for v in self._rooms.values())
        )

    def _sweep(self, now: float) -> None:
        """Drop expired paths in every room, so rooms nobody writes in do not pile up."""
        for room_id in list(self._rooms):
            live = [entry for entry in self._rooms[room_id] if entry.expires_at > now]
            if live:
                self._rooms[room_id] = live
            else:
                del self._rooms[room_id]
