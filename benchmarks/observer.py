"""A measuring Matrix user: sends messages and timestamps every event it receives.

One long-poll `/sync` loop records each timeline event with the CLOCK_MONOTONIC time
its sync response arrived; waiters look for the event they need among those
arrivals. The filter drops typing, receipts and presence so that only timeline
events wake the loop: the bot's typing notice would otherwise cost the measuring
client an extra sync round trip that the raw echo client never causes.

The same filter is used by the raw echo client (benchmarks/raw_echo.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import nio

from benchmarks.raw_echo import SYNC_FILTER
from contracts.markers import REPLY_TO_FIELD

MEASURE_FILTER: dict[str, Any] = {
    **SYNC_FILTER,
    "room": {**SYNC_FILTER["room"], "timeline": {"limit": 500}},
}


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.monotonic() when the sync response carrying the event arrived
    room_id: str
    event: dict[str, Any]

    @property
    def sender(self) -> str:
        return str(self.event.get("sender", ""))

    @property
    def content(self) -> dict[str, Any]:
        content = self.event.get("content")
        return content if isinstance(content, dict) else {}


Match = Callable[[Arrival], bool]


class ObserverError(Exception):
    """The homeserver refused one of the measuring user's calls."""


def answers(event_id: str, expected: str, bot_user_id: str) -> Match:
    """The bot's complete answer to `event_id`: a message with `expected`, or an edit to it."""

    def match(arrival: Arrival) -> bool:
        content = arrival.content
        if arrival.sender != bot_user_id or content.get(REPLY_TO_FIELD) != event_id:
            return False
        new_content = content.get("m.new_content")
        if isinstance(new_content, dict):
            return new_content.get("body") == expected
        return content.get("body") == expected

    return match


def echoes(room_id: str, text: str, sender: str) -> Match:
    """The raw echo client's copy of `text` in `room_id`."""

    def match(arrival: Arrival) -> bool:
        return (
            arrival.room_id == room_id
            and arrival.sender == sender
            and arrival.event.get("type") == "m.room.message"
            and arrival.content.get("body") == text
        )

    return match


class Observer:
    """Drives `client` (logged in) from one sync loop; see the module docstring."""

    def __init__(
        self,
        client: nio.AsyncClient,
        *,
        after_sync: Callable[[nio.AsyncClient], Awaitable[None]] | None = None,
    ) -> None:
        """`after_sync` runs after each sync's events are recorded (crypto housekeeping)."""
        self.client = client
        self._after_sync = after_sync
        self.arrivals: list[Arrival] = []
        self.invites: list[str] = []
        self._changed = anyio.Event()
        self._since: str | None = None
        self.syncs = 0

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sync forever; started() after the first (catch-up) sync, whose events are kept."""
        started = False
        while True:
            response = await self.client.sync(
                timeout=30_000 if started else 0, since=self._since, sync_filter=MEASURE_FILTER
            )
            now = time.monotonic()
            if not isinstance(response, nio.SyncResponse):
                raise ObserverError(f"observer sync failed: {response}")
            self._since = response.next_batch
            self.syncs += 1
            for room_id, room in response.rooms.join.items():
                for event in room.timeline.events:
                    self.arrivals.append(Arrival(now, room_id, event.source))
            self.invites.extend(response.rooms.invite)
            self._changed.set()
            self._changed = anyio.Event()
            if self._after_sync is not None:
                await self._after_sync(self.client)
            if not started:
                started = True
                task_status.started()

    async def wait_for(
        self, match: Match, *, within: float, start: int = 0, what: str = ""
    ) -> Arrival:
        """The first arrival from index `start` on that matches; TimeoutError after `within` s."""
        index = start
        with anyio.fail_after(within):
            while True:
                while index < len(self.arrivals):
                    arrival = self.arrivals[index]
                    index += 1
                    if match(arrival):
                        return arrival
                await self._changed.wait()
        raise AssertionError(what)  # pragma: no cover - fail_after raises first

    async def wait_invites(self, count: int, *, within: float) -> list[str]:
        with anyio.fail_after(within):
            while len(self.invites) < count:
                await self._changed.wait()
        return list(self.invites)

    async def send(self, room_id: str, text: str) -> tuple[str, float]:
        """Send a text message; returns its event id and the time just before sending."""
        sent_at = time.monotonic()
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": text},
            ignore_unverified_devices=True,  # in an encrypted room; nothing in a plain one
        )
        if not isinstance(response, nio.RoomSendResponse):
            raise ObserverError(f"send failed: {response}")
        return str(response.event_id), sent_at

    async def join(self, room_id: str) -> None:
        response = await self.client.join(room_id)
        if not isinstance(response, nio.JoinResponse):
            raise ObserverError(f"join failed: {response}")
