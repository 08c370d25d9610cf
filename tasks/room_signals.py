"""Typing notices and read receipts, sent in the background, off the answers' path.

Both are cosmetic, and both cost the homeserver a request plus a wake-up of every
client syncing the room (the bot's own long poll too). Sent from inside a turn, a
receipt lands beside the delivery of the answer it follows, and 50 rooms' typing-off
requests compete with the other rooms' answers on a busy homeserver. So turns only
*note* what they want (`typing`, `read`, both non-blocking) and one task (`run`)
sends it:

- Typing, per room, the latest wanted state: a change is sent promptly, at most
  `concurrency` requests at a time; an "on" and an "off" noted before the first was
  sent cancel out (a turn over before its typing notice went out shows none). A
  typing-off waits while a turn is being handled (`handling`) so that answers go
  first, at most `typing_off_delay` seconds.
- Receipts, per room, only the latest message (a receipt covers everything before
  it): sent once the bot is quiet, meaning no event is being handled and a sync
  came back after the handling of the message began (the sync that brought the
  bot's own answer back, so the answer is delivered), or at the latest
  `receipt_delay` seconds after it was noted.

Failures are logged at debug and dropped (the next turn sends again); what is noted
but unsent when the task stops is sent on the way out if the homeserver answers
within a second, otherwise lost: cosmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog

from contracts.matrix import MatrixPort

log = structlog.get_logger(__name__)

TYPING_TIMEOUT_MS = 30_000
FLUSH_ON_EXIT_S = 1.0

# In the task handling an event: how many syncs had come back when its handling began.
_SYNCS_AT_START: ContextVar[int | None] = ContextVar("syncs_at_start", default=None)


@dataclass(frozen=True, slots=True)
class SignalStatistics:
    typing_sent: int
    typing_skipped: int  # on/off pairs that cancelled out before being sent
    receipts_sent: int
    receipts_coalesced: int  # receipts replaced by a later one in the same room
    failures: int


class RoomSignals:
    """What turns want shown (typing, read), sent by `run` without holding the turns."""

    def __init__(
        self,
        matrix: MatrixPort,
        *,
        concurrency: int = 4,
        typing_off_delay: float = 1.0,
        receipt_delay: float = 2.0,
    ) -> None:
        self._matrix = matrix
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._typing_off_delay = typing_off_delay
        self._receipt_delay = receipt_delay
        self._typing_wanted: dict[str, tuple[bool, float]] = {}  # room -> (on, noted at)
        self._typing_shown: set[str] = set()  # rooms where typing was sent on
        # room -> (event id, noted at, due after this many syncs came back)
        self._receipts: dict[str, tuple[str, float, int]] = {}
        self._sending: set[str] = set()  # rooms with a request in flight
        self._handling = 0
        self._syncs = 0
        self._changed: anyio.Event | None = None
        self._typing_sent = self._typing_skipped = 0
        self._receipts_sent = self._receipts_coalesced = self._failures = 0

    # -- what turns note (never blocks) -------------------------------------------------

    def typing(self, room_id: str, on: bool) -> None:
        """Want typing shown (or not) in the room; the latest call wins."""
        if not on and room_id not in self._typing_shown and room_id not in self._sending:
            if self._typing_wanted.pop(room_id, None) is not None:
                self._typing_skipped += 1  # its "on" was never sent: nothing to turn off
            return
        self._typing_wanted[room_id] = (on, anyio.current_time())
        self._poke()

    def read(self, room_id: str, event_id: str) -> None:
        """Mark the room read up to `event_id` (sent when the bot is quiet)."""
        if room_id in self._receipts:
            self._receipts_coalesced += 1
        began = _SYNCS_AT_START.get()
        self._receipts[room_id] = (
            event_id,
            anyio.current_time(),
            self._syncs if began is None else began,
        )
        self._poke()

    def synced(self) -> None:
        """A sync came back (the sync task calls it after each one)."""
        self._syncs += 1
        if self._receipts:
            self._poke()

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Around handling one event: held-back signals wait while any is handled."""
        self._handling += 1
        token = _SYNCS_AT_START.set(self._syncs)
        try:
            yield
        finally:
            _SYNCS_AT_START.reset(token)
            self._handling -= 1
            if self._handling == 0:
                self._poke()

    def statistics(self) -> SignalStatistics:
        return SignalStatistics(
            typing_sent=self._typing_sent,
            typing_skipped=self._typing_skipped,
            receipts_sent=self._receipts_sent,
            receipts_coalesced=self._receipts_coalesced,
            failures=self._failures,
        )

    # -- the sender ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Send what is due, until cancelled; then what is left, briefly."""
        try:
            async with anyio.create_task_group() as tg:
                task_status.started()
                while True:
                    wait = self._start_due(tg)
                    self._changed = anyio.Event()
                    with anyio.move_on_after(wait):
                        await self._changed.wait()
        finally:
            with anyio.move_on_after(FLUSH_ON_EXIT_S, shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Send everything noted now, whatever the bot is doing."""
        async with anyio.create_task_group() as tg:
            for room_id in list(self._typing_wanted.keys() | self._receipts.keys()):
                if room_id not in self._sending:
                    tg.start_soon(self._send_room, room_id, True)

    def _poke(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _start_due(self, tg: anyio.abc.TaskGroup) -> float:
        """Start sending for every room with something due; seconds until the next check."""
        now = anyio.current_time()
        wait = float("inf")
        for room_id in list(self._typing_wanted.keys() | self._receipts.keys()):
            if room_id in self._sending:
                continue
            due_in = self._due_in(room_id, now)
            if due_in <= 0:
                self._sending.add(room_id)
                tg.start_soon(self._send_room, room_id, False)
            else:
                wait = min(wait, due_in)
        return wait

    def _due_in(self, room_id: str, now: float) -> float:
        """Seconds until something of this room is due (<= 0: now)."""
        due = float("inf")
        wanted = self._typing_wanted.get(room_id)
        if wanted is not None:
            on, noted = wanted
            if on or self._handling == 0:
                return 0.0
            due = noted + self._typing_off_delay - now
        receipt = self._receipts.get(room_id)
        if receipt is not None:
            if self._receipt_due(receipt, now):
                return 0.0
            due = min(due, receipt[1] + self._receipt_delay - now)
        return due

    async def _send_room(self, room_id: str, everything: bool) -> None:
        """Send the room's typing change, then its receipt if due; one room at a time."""
        self._sending.add(room_id)
        try:
            async with self._limiter:
                wanted = self._typing_wanted.pop(room_id, None)
                if wanted is not None:
                    await self._send_typing(room_id, wanted[0])
                now = anyio.current_time()
                receipt = self._receipts.get(room_id)
                if receipt is not None and (everything or self._receipt_due(receipt, now)):
                    del self._receipts[room_id]
                    await self._send_receipt(room_id, receipt[0])
        finally:
            self._sending.discard(room_id)
            self._poke()

    def _receipt_due(self, receipt: tuple[str, float, int], now: float) -> bool:
        _, noted, after_syncs = receipt
        quiet = self._handling == 0 and self._syncs > after_syncs
        return quiet or now >= noted + self._receipt_delay

    async def _send_typing(self, room_id: str, on: bool) -> None:
        if on:
            self._typing_shown.add(room_id)  # before the request: it may land when cancelled
        try:
            await self._matrix.set_typing(room_id, on, timeout_ms=TYPING_TIMEOUT_MS)
        except Exception as exc:  # cosmetic: never fail anything for it
            self._failures += 1
            log.debug("typing.failed", room_id=room_id, error=repr(exc))
        else:
            self._typing_sent += 1
            if not on:
                self._typing_shown.discard(room_id)

    async def _send_receipt(self, room_id: str, event_id: str) -> None:
        try:
            await self._matrix.send_receipt(room_id, event_id)
        except Exception as exc:  # cosmetic: never fail anything for it
            self._failures += 1
            log.debug("receipt.failed", room_id=room_id, error=repr(exc))
        else:
            self._receipts_sent += 1
