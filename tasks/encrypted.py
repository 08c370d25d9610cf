"""Encrypted events: read them as the plain events they hold, or say once that we could not.

`EncryptedEvents` wraps the bot's handler. An `m.room.encrypted` entry is decrypted and
handed on as the plain event inside it (same event id, room, sender and time), so
commands, turns and files work as in a plain room. The ledger keeps the ciphertext;
the plain text exists only while the event is handled.

A message whose room key has not arrived is *held*: the key is requested from the
sender's devices, and the room's queue waits up to `grace` seconds for a late key
(keys come with the sync, which runs on). Then the user gets one notice in that room
and the event is logged with the reason. The notice is a reply to the event, sent
with a transaction id derived from it, and the ledger marks the event done: a key
that arrives later answers nothing twice, and catch-up after a loss of local state
counts the event as answered (tasks/catchup.py).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

import anyio
import structlog

from contracts.matrix import MatrixEvent, RoomCrypto, Undecryptable
from contracts.store import LedgerEntry

log = structlog.get_logger(__name__)

ENCRYPTED_EVENT_TYPE = "m.room.encrypted"
DEFAULT_GRACE = 15.0

Handler = Callable[[LedgerEntry], Awaitable[None]]
Notify = Callable[[LedgerEntry], Awaitable[None]]


class Verdict(enum.Enum):
    READ = "read"  # decrypted: handle the plain event
    WAIT = "wait"  # no key yet, time left: wait for a key
    GIVE_UP = "give_up"  # no key within the grace period: tell the user once


def verdict(result: MatrixEvent | Undecryptable, *, waited: float, grace: float) -> Verdict:
    """What to do after one decryption attempt. Pure."""
    if isinstance(result, MatrixEvent):
        return Verdict.READ
    return Verdict.WAIT if waited < grace else Verdict.GIVE_UP


def event_of(entry: LedgerEntry) -> MatrixEvent:
    return MatrixEvent(
        event_id=entry.event_id,
        room_id=entry.room_id,
        sender=entry.sender,
        type=entry.type,
        content=entry.content,
        origin_server_ts=entry.origin_server_ts,
        state_key=entry.state_key,
    )


def entry_of(event: MatrixEvent, status_of: LedgerEntry) -> LedgerEntry:
    return LedgerEntry(
        event_id=event.event_id,
        room_id=event.room_id,
        sender=event.sender,
        type=event.type,
        content=event.content,
        origin_server_ts=event.origin_server_ts,
        state_key=event.state_key,
        status=status_of.status,
    )


class EncryptedEvents:
    """A ledger handler that opens encrypted entries before the bot's handler sees them."""

    def __init__(
        self,
        handler: Handler,
        crypto: RoomCrypto,
        *,
        bot_user_id: str,
        notify: Notify,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._handler = handler
        self._crypto = crypto
        self._bot_user_id = bot_user_id
        self._notify = notify
        self._grace = grace

    async def handle(self, entry: LedgerEntry) -> None:
        if entry.type != ENCRYPTED_EVENT_TYPE:
            await self._handler(entry)
            return
        if entry.sender == self._bot_user_id:
            return
        plain = await self.open(event_of(entry))
        if plain is None:
            await self._notify(entry)
            return
        await self._handler(entry_of(plain, entry))

    async def open(self, event: MatrixEvent) -> MatrixEvent | None:
        """The plain event, waiting up to the grace period for its key; None if unreadable."""
        started = anyio.current_time()
        requested = False
        while True:
            seen = self._crypto.room_keys_received
            result = await self._crypto.decrypt(event)
            waited = anyio.current_time() - started
            step = verdict(result, waited=waited, grace=self._grace)
            if step is Verdict.READ:
                assert isinstance(result, MatrixEvent)
                if requested:
                    log.info("decrypt.late_key", event_id=event.event_id, waited=round(waited, 2))
                return result
            assert isinstance(result, Undecryptable)
            if step is Verdict.GIVE_UP:
                log.warning(
                    "decrypt.failed",
                    event_id=event.event_id,
                    room_id=event.room_id,
                    sender=event.sender,
                    session_id=result.session_id,
                    reason=result.reason,
                    waited=round(waited, 2),
                )
                return None
            if not requested:
                requested = True
                log.info(
                    "decrypt.held",
                    event_id=event.event_id,
                    room_id=event.room_id,
                    session_id=result.session_id,
                    reason=result.reason,
                )
                await self._request_key(event)
            with anyio.move_on_after(self._grace - waited):
                await self._crypto.wait_room_keys(seen)

    async def _request_key(self, event: MatrixEvent) -> None:
        try:
            await self._crypto.request_room_key(event)
        except Exception as exc:  # the request only helps; waiting goes on without it
            log.info("decrypt.key_request_failed", event_id=event.event_id, error=repr(exc))
