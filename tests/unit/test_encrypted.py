"""Encrypted events: decrypted and handled as plain ones, held for late keys, one notice."""

from __future__ import annotations

import anyio
import pytest
from fakes import FakeCrypto

from contracts.matrix import MatrixEvent, Undecryptable
from contracts.store import LedgerEntry
from tasks.encrypted import EncryptedEvents, Verdict, event_of, verdict

BOT = "@bot:example.org"
ALICE = "@alice:example.org"
ROOM = "!chat:example.org"


def text(event_id: str = "$e1", body: str = "hello") -> MatrixEvent:
    return MatrixEvent(
        event_id=event_id,
        room_id=ROOM,
        sender=ALICE,
        type="m.room.message",
        content={"msgtype": "m.text", "body": body},
        origin_server_ts=1234,
    )


def entry(event: MatrixEvent) -> LedgerEntry:
    return LedgerEntry(
        event_id=event.event_id,
        room_id=event.room_id,
        sender=event.sender,
        type=event.type,
        content=event.content,
        origin_server_ts=event.origin_server_ts,
    )


class Recorder:
    def __init__(self) -> None:
        self.handled: list[LedgerEntry] = []
        self.notified: list[LedgerEntry] = []

    async def handle(self, e: LedgerEntry) -> None:
        self.handled.append(e)

    async def notify(self, e: LedgerEntry) -> None:
        self.notified.append(e)


def wrap(crypto: FakeCrypto, recorder: Recorder, *, grace: float = 10.0) -> EncryptedEvents:
    return EncryptedEvents(
        recorder.handle, crypto, bot_user_id=BOT, notify=recorder.notify, grace=grace
    )


def test_verdict_reads_waits_then_gives_up() -> None:
    failure = Undecryptable(reason="no session")
    assert verdict(text(), waited=99, grace=1) is Verdict.READ
    assert verdict(failure, waited=0.5, grace=1) is Verdict.WAIT
    assert verdict(failure, waited=1, grace=1) is Verdict.GIVE_UP


async def test_a_readable_event_reaches_the_handler_as_the_plain_event() -> None:
    crypto, recorder = FakeCrypto(keys={"S1"}), Recorder()
    encrypted = crypto.encrypted(text(body="!help"))
    await wrap(crypto, recorder).handle(entry(encrypted))
    assert [(e.type, e.content["body"], e.event_id) for e in recorder.handled] == [
        ("m.room.message", "!help", "$e1")
    ]
    assert recorder.notified == []
    assert crypto.requested == []


async def test_plain_events_pass_through_untouched() -> None:
    crypto, recorder = FakeCrypto(), Recorder()
    plain = entry(text())
    await wrap(crypto, recorder).handle(plain)
    assert recorder.handled == [plain]
    assert crypto.decrypt_calls == 0


async def test_the_bots_own_encrypted_events_are_ignored() -> None:
    crypto, recorder = FakeCrypto(keys={"S1"}), Recorder()
    own = crypto.encrypted(text())
    own_entry = entry(own).model_copy(update={"sender": BOT})
    await wrap(crypto, recorder).handle(own_entry)
    assert recorder.handled == [] and recorder.notified == []


async def test_a_late_key_within_the_grace_period_is_used_and_nobody_is_told() -> None:
    crypto, recorder = FakeCrypto(), Recorder()
    encrypted = crypto.encrypted(text())
    async with anyio.create_task_group() as tg:
        tg.start_soon(wrap(crypto, recorder, grace=30).handle, entry(encrypted))
        while not crypto.requested:  # held: the key was asked for
            await anyio.lowlevel.checkpoint()
        crypto.deliver_key("S2")  # another session's key: still held
        await anyio.wait_all_tasks_blocked()
        assert recorder.handled == []
        crypto.deliver_key("S1")
    assert [e.type for e in recorder.handled] == ["m.room.message"]
    assert recorder.notified == []
    assert crypto.requested == ["$e1"]


@pytest.mark.virtual_time
async def test_no_key_within_the_grace_period_gives_one_notice(time_is_virtual: bool) -> None:
    crypto, recorder = FakeCrypto(), Recorder()
    grace = 15.0 if time_is_virtual else 0.05
    encrypted = crypto.encrypted(text())
    started = anyio.current_time()
    await wrap(crypto, recorder, grace=grace).handle(entry(encrypted))
    assert anyio.current_time() - started >= grace
    assert recorder.handled == []
    assert [e.event_id for e in recorder.notified] == ["$e1"]
    assert crypto.requested == ["$e1"]


async def test_a_failing_key_request_does_not_stop_the_wait() -> None:
    class Refusing(FakeCrypto):
        async def request_room_key(self, event: MatrixEvent) -> None:
            raise RuntimeError("to-device refused")

    crypto, recorder = Refusing(), Recorder()
    encrypted = crypto.encrypted(text())
    async with anyio.create_task_group() as tg:
        tg.start_soon(wrap(crypto, recorder, grace=30).handle, entry(encrypted))
        while crypto.decrypt_calls == 0:
            await anyio.lowlevel.checkpoint()
        await anyio.wait_all_tasks_blocked()
        crypto.deliver_key("S1")
    assert len(recorder.handled) == 1


def test_event_of_keeps_identity() -> None:
    e = entry(text())
    event = event_of(e)
    assert (event.event_id, event.room_id, event.sender, event.origin_server_ts) == (
        e.event_id,
        e.room_id,
        e.sender,
        e.origin_server_ts,
    )
