"""The adapter's crypto side (runtime/matrix/e2ee.py) on nio's real Olm machine, in memory.

A second nio machine plays the person: it sends the bot a room key over Olm (a
to-device event in a sync answer) and a Megolm-encrypted message.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import anyio
import nio
import pytest
from nio.crypto import OlmDevice, OutboundSession
from nio.crypto.key_request import OutgoingKeyRequest
from nio.store import SqliteMemoryStore

from contracts.matrix import (
    JoinedRoom,
    MatrixAuthError,
    MatrixEvent,
    MatrixUnreachable,
    SyncBatch,
    Undecryptable,
)
from runtime.matrix.e2ee import E2ee, _apply_membership
from runtime.matrix.login import store_error, store_pickle_key

BOT, ALICE, ROOM = "@bot:example.org", "@alice:example.org", "!room:example.org"


def machine(user_id: str, device_id: str) -> Any:
    config = nio.AsyncClientConfig(
        store=SqliteMemoryStore, encryption_enabled=True, pickle_key="test key"
    )
    client = nio.AsyncClient("http://hs.invalid", user_id, config=config)
    client.restore_login(user_id, device_id, "token")
    return client


async def never(_request: Any) -> Any:
    raise AssertionError("no homeserver call expected")


def e2ee_of(client: Any) -> E2ee:
    return E2ee(client, raw=None, call=never, path=lambda *parts: "/".join(parts))  # type: ignore[arg-type]


def empty_batch(**joined: JoinedRoom) -> SyncBatch:
    return SyncBatch(next_batch="s1", joined=joined, invited={})


class Person:
    """Alice's machine with an Olm session to the bot's device and a Megolm session."""

    def __init__(self, bot: Any) -> None:
        self.client = machine(ALICE, "ALICEDEV")
        account = bot.olm.account
        account.generate_one_time_keys(1)
        one_time_key = next(iter(account.one_time_keys["curve25519"].values()))
        account.mark_keys_as_published()
        account.shared = True
        keys = account.identity_keys
        self.olm_session = OutboundSession(
            self.client.olm.account, keys["curve25519"], one_time_key
        )
        self.bot_device = OlmDevice(
            BOT, "BOTDEV", {"ed25519": keys["ed25519"], "curve25519": keys["curve25519"]}
        )
        self.client.olm.create_outbound_group_session(ROOM)
        self.group = self.client.olm.outbound_group_sessions[ROOM]
        self.group.shared = True
        self.session_key = self.group.session_key  # exported before any message

    def room_key_event(self) -> dict[str, Any]:
        content = self.client.olm._olm_encrypt(
            self.olm_session,
            self.bot_device,
            "m.room_key",
            {
                "algorithm": "m.megolm.v1.aes-sha2",
                "room_id": ROOM,
                "session_id": self.group.id,
                "session_key": self.session_key,
            },
        )
        return {"type": "m.room.encrypted", "sender": ALICE, "content": content}

    def message(self, body: str, event_id: str = "$m1") -> MatrixEvent:
        payload = {"type": "m.room.message", "content": {"msgtype": "m.text", "body": body}}
        content = self.client.olm.group_encrypt(ROOM, {**payload, "room_id": ROOM})
        return MatrixEvent(
            event_id=event_id,
            room_id=ROOM,
            sender=ALICE,
            type="m.room.encrypted",
            content=content,
            origin_server_ts=1000,
        )


async def test_a_room_key_from_the_sync_answer_opens_the_message() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    message = alice.message("hello")

    before = await e2ee.decrypt(message)
    assert isinstance(before, Undecryptable)
    assert before.session_id == alice.group.id

    e2ee.absorb(
        {"to_device": {"events": [alice.room_key_event()]}}, empty_batch(), complete_state=False
    )

    assert e2ee.room_keys_received == 1
    after = await e2ee.decrypt(message)
    assert isinstance(after, MatrixEvent)
    assert (after.type, after.content["body"], after.event_id, after.sender) == (
        "m.room.message",
        "hello",
        "$m1",
        ALICE,
    )


async def test_a_waiter_wakes_when_a_key_arrives() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    woke: list[int] = []

    async def wait() -> None:
        woke.append(await e2ee.wait_room_keys(0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        e2ee.absorb(
            {"to_device": {"events": [alice.room_key_event()]}}, empty_batch(), complete_state=False
        )
    assert woke == [1]


async def test_a_withheld_key_is_named_in_the_reason() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    withheld = {
        "type": "m.room_key.withheld",
        "sender": ALICE,
        "content": {"session_id": alice.group.id, "code": "m.unverified", "room_id": ROOM},
    }
    e2ee.absorb({"to_device": {"events": [withheld]}}, empty_batch(), complete_state=False)
    result = await e2ee.decrypt(alice.message("hi"))
    assert isinstance(result, Undecryptable)
    assert "m.unverified" in result.reason


@pytest.mark.parametrize(("count", "upload"), [(0, True), (10, True), (None, True)])
async def test_one_time_keys_are_replenished_including_from_zero(
    count: int | None, upload: bool
) -> None:
    bot = machine(BOT, "BOTDEV")
    bot.olm.account.shared = True
    e2ee = e2ee_of(bot)
    counts = {} if count is None else {"signed_curve25519": count}  # Synapse may omit a 0
    e2ee.absorb({"device_one_time_keys_count": counts}, empty_batch(), complete_state=False)
    assert bot.olm.uploaded_key_count == (count or 0)
    assert bot.olm.should_upload_keys is upload


async def test_a_full_pool_is_left_alone() -> None:
    bot = machine(BOT, "BOTDEV")
    bot.olm.account.shared = True
    e2ee = e2ee_of(bot)
    full = bot.olm.account.max_one_time_keys
    e2ee.absorb(
        {"device_one_time_keys_count": {"signed_curve25519": full}},
        empty_batch(),
        complete_state=False,
    )
    assert not bot.olm.should_upload_keys


def member(user_id: str, membership: str) -> MatrixEvent:
    return MatrixEvent(
        event_id="",
        room_id=ROOM,
        sender=user_id,
        type="m.room.member",
        content={"membership": membership},
        state_key=user_id,
    )


def encryption() -> MatrixEvent:
    return MatrixEvent(
        event_id="",
        room_id=ROOM,
        sender=BOT,
        type="m.room.encryption",
        content={"algorithm": "m.megolm.v1.aes-sha2"},
        state_key="",
    )


async def test_encrypted_rooms_are_tracked_with_joined_and_invited_members() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    state = [encryption(), member(BOT, "join"), member(ALICE, "invite")]
    plain = JoinedRoom(room_id="!plain:example.org", state=[member(BOT, "join")], timeline=[])
    batch = empty_batch(
        **{ROOM: JoinedRoom(room_id=ROOM, state=state, timeline=[]), plain.room_id: plain}
    )

    e2ee.absorb({}, batch, complete_state=True)

    assert await e2ee.is_encrypted(ROOM)
    assert not await e2ee.is_encrypted("!plain:example.org")
    assert ROOM not in bot.rooms and ALICE not in bot.olm.users_for_key_query, "until a send"
    room = e2ee._nio_room(ROOM)  # as the first send into the room does
    assert bot.rooms[ROOM] is room
    assert set(room.users) == {BOT, ALICE} and room.members_synced
    assert room.users[ALICE].invited
    assert ALICE in bot.olm.users_for_key_query


async def test_members_change_before_the_first_send_too() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    carol = "@carol:example.org"
    state = [encryption(), member(BOT, "join"), member(ALICE, "join"), member(carol, "join")]
    e2ee.absorb({}, empty_batch(**{ROOM: JoinedRoom(ROOM, state, [])}), complete_state=True)
    later = [member(carol, "leave"), member(ALICE, "join")]
    e2ee.absorb({}, empty_batch(**{ROOM: JoinedRoom(ROOM, later, [])}), complete_state=False)

    room = e2ee._nio_room(ROOM)

    assert set(room.users) == {BOT, ALICE} and room.members_synced


async def test_a_room_created_within_an_incremental_answer_is_known_plain_without_asking() -> None:
    e2ee = e2ee_of(machine(BOT, "BOTDEV"))  # `never`: asking the server fails the test
    create = MatrixEvent(
        event_id="$c", room_id=ROOM, sender=BOT, type="m.room.create", content={}, state_key=""
    )
    new_room = JoinedRoom(room_id=ROOM, state=[create, member(BOT, "join")], timeline=[])

    e2ee.absorb({}, empty_batch(**{ROOM: new_room}), complete_state=False)

    assert not await e2ee.is_encrypted(ROOM)


async def test_changed_device_lists_are_not_queried_after_a_sync() -> None:
    bot = machine(BOT, "BOTDEV")
    bot.olm.account.shared = True
    e2ee = e2ee_of(bot)  # `never`: a request fails the test
    state = [encryption(), member(BOT, "join"), member(ALICE, "join")]
    batch = empty_batch(**{ROOM: JoinedRoom(room_id=ROOM, state=state, timeline=[])})
    full = {"signed_curve25519": bot.olm.account.max_one_time_keys}
    e2ee.absorb({"device_one_time_keys_count": full}, batch, complete_state=True)
    e2ee._nio_room(ROOM)  # a first send begins: Alice's devices are to be queried

    await e2ee.housekeeping()  # before the send instead (prepare_send)

    assert ALICE in bot.olm.users_for_key_query


def test_membership_changes_are_folded_in() -> None:
    room = nio.MatrixRoom(ROOM, BOT, encrypted=True)
    assert _apply_membership(room, member(ALICE, "invite"))
    assert not _apply_membership(room, member(ALICE, "join")), "same member, now joined"
    assert not room.users[ALICE].invited
    assert _apply_membership(room, member(ALICE, "leave"))
    assert ALICE not in room.users


def test_attachments_round_trip_and_a_bad_hash_is_refused() -> None:
    ciphertext, file = E2ee.encrypt_file(b"secret bytes")
    assert ciphertext != b"secret bytes"
    assert E2ee.decrypt_file(ciphertext, file) == b"secret bytes"
    with pytest.raises(Exception, match="cannot be decrypted"):
        E2ee.decrypt_file(ciphertext + b"x", file)


def test_without_a_passphrase_a_random_store_key_is_kept_private(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = store_pickle_key(store, None)
    assert first and store_pickle_key(store, None) == first
    assert stat.S_IMODE((store / "store.key").stat().st_mode) == 0o600
    assert store_pickle_key(store, "configured") == "configured"


async def test_a_to_device_event_seen_twice_is_handled_once() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    handled: list[Any] = []
    handle = bot.olm.handle_to_device_event

    def recording(event: Any) -> Any:
        handled.append(event)
        return handle(event)

    bot.olm.handle_to_device_event = recording
    answer = {"to_device": {"events": [alice.room_key_event()]}}
    e2ee.absorb(answer, empty_batch(), complete_state=True)  # the start-up snapshot
    e2ee.absorb(answer, empty_batch(), complete_state=False)  # the same, redelivered
    assert e2ee.room_keys_received == 1
    assert len(handled) == 1, "an Olm message decrypted twice looks like a broken session"


def forwarded_key_event(alice: Person, *, chain: list[str] | None = None) -> dict[str, Any]:
    """Alice re-sends her own session as a forwarded key (what Rust crypto does after a reset)."""
    keys = alice.client.olm.account.identity_keys
    inbound = alice.client.olm.inbound_group_store.get(ROOM, keys["curve25519"], alice.group.id)
    content = alice.client.olm._olm_encrypt(
        alice.olm_session,
        alice.bot_device,
        "m.forwarded_room_key",
        {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": ROOM,
            "sender_key": keys["curve25519"],
            "session_id": alice.group.id,
            "session_key": inbound.export_session(0),
            "sender_claimed_ed25519_key": keys["ed25519"],
            "forwarding_curve25519_key_chain": chain or [],
        },
    )
    return {"type": "m.room.encrypted", "sender": ALICE, "content": content}


def requested(bot: Any, alice: Person) -> None:
    request = OutgoingKeyRequest(alice.group.id, alice.group.id, ROOM, "m.megolm.v1.aes-sha2")
    bot.olm.outgoing_key_requests[alice.group.id] = request


async def test_a_requested_key_forwarded_by_the_session_creator_is_accepted() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    message = alice.message("hello again")
    requested(bot, alice)

    e2ee.absorb(
        {"to_device": {"events": [forwarded_key_event(alice)]}}, empty_batch(), complete_state=False
    )

    assert e2ee.room_keys_received == 1
    assert isinstance(await e2ee.decrypt(message), MatrixEvent)


async def test_a_forwarded_key_nobody_asked_for_or_from_a_chain_is_refused() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)
    unasked = forwarded_key_event(alice)
    e2ee.absorb({"to_device": {"events": [unasked]}}, empty_batch(), complete_state=False)
    assert isinstance(await e2ee.decrypt(alice.message("x", "$m2")), Undecryptable)

    requested(bot, alice)
    relayed = forwarded_key_event(alice, chain=["someone else's key"])
    e2ee.absorb({"to_device": {"events": [relayed]}}, empty_batch(), complete_state=False)
    assert isinstance(await e2ee.decrypt(alice.message("y", "$m3")), Undecryptable)


def test_a_wrong_store_passphrase_is_a_fatal_configuration_error(tmp_path: Path) -> None:
    def open_store(key: str) -> None:
        config = nio.AsyncClientConfig(encryption_enabled=True, pickle_key=key)
        client = nio.AsyncClient("http://hs.invalid", BOT, store_path=str(tmp_path), config=config)
        client.restore_login(BOT, "BOTDEV", "token")

    open_store("the passphrase it was created with")
    with pytest.raises(ValueError, match="pickle") as caught:
        open_store("another passphrase")
    error = store_error(tmp_path, caught.value)
    assert isinstance(error, MatrixAuthError)
    assert "MATRIX_STORE_PASSPHRASE" in str(error)
    assert "another passphrase" not in str(error)
    assert type(store_error(tmp_path, OSError("disk"))) is OSError


async def test_a_failed_key_share_stays_unshared_and_the_retry_sends_it() -> None:
    bot = machine(BOT, "BOTDEV")
    alice = machine(ALICE, "ALICEDEV")
    account = alice.olm.account
    account.generate_one_time_keys(1)
    one_time_key = next(iter(account.one_time_keys["curve25519"].values()))
    keys = account.identity_keys
    device = OlmDevice(
        ALICE, "ALICEDEV", {"ed25519": keys["ed25519"], "curve25519": keys["curve25519"]}
    )
    bot.olm.device_store.add(device)
    bot.olm.store.save_device_keys({ALICE: {"ALICEDEV": device}})
    bot.olm.session_store.add(
        keys["curve25519"], OutboundSession(bot.olm.account, keys["curve25519"], one_time_key)
    )
    room = nio.MatrixRoom(ROOM, BOT, encrypted=True)
    room.add_member(ALICE, None, None)
    room.members_synced = True
    bot.rooms[ROOM] = room
    bot.olm.tracked_users.add(ALICE)
    sent: list[str] = []
    failures = [MatrixUnreachable("to-device timed out")]

    async def call(request: Any) -> Any:
        request.close()  # the fake homeserver answers instead
        sent.append("to-device")
        if failures:
            raise failures.pop()
        return nio.ShareGroupSessionResponse(ROOM, {(ALICE, "ALICEDEV")})

    e2ee = E2ee(bot, raw=None, call=call, path=lambda *p: "/".join(p))  # type: ignore[arg-type]
    with pytest.raises(MatrixUnreachable):
        await e2ee.prepare_send(ROOM)
    assert not bot.olm.outbound_group_sessions[ROOM].shared
    assert bot.olm.should_share_group_session(ROOM)

    await e2ee.prepare_send(ROOM)
    assert bot.olm.outbound_group_sessions[ROOM].shared
    assert sent == ["to-device", "to-device"], "the retry sent the key again"
    event_type, content = e2ee.encrypt(ROOM, "m.room.message", {"body": "hi"})
    assert event_type == "m.room.encrypted" and content["algorithm"] == "m.megolm.v1.aes-sha2"


async def test_a_to_device_event_the_machine_chokes_on_is_skipped_not_fatal() -> None:
    bot = machine(BOT, "BOTDEV")
    e2ee = e2ee_of(bot)
    alice = Person(bot)

    def choke(event: Any) -> Any:
        raise KeyError("ciphertext")

    good = alice.room_key_event()
    handle = bot.olm.handle_to_device_event
    bot.olm.handle_to_device_event = lambda event: (
        choke(event) if event.source is not good else handle(event)
    )
    content: dict[str, Any] = {
        **good["content"],
        "ciphertext": {"x": {"type": 0, "body": "not olm"}},
    }
    poison = {"type": "m.room.encrypted", "sender": ALICE, "content": content}

    e2ee.absorb({"to_device": {"events": [poison, good]}}, empty_batch(), complete_state=False)

    assert e2ee.room_keys_received == 1, "the good key after the bad event still arrived"
