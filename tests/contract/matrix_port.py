"""One behaviour suite for every `contracts.matrix.MatrixPort` implementation.

`MatrixPortContract` holds the tests; a test module subclasses it under a ``Test``
name and provides a ``world`` fixture (a `World`): the port under test, logged in as
the bot, and a `Peer`, another user on the same homeserver who creates rooms,
invites, joins and talks as any Matrix client would. Two modules do so:

- ``tests/unit/test_fake_matrix_contract.py``: the fake homeserver of
  ``tests/unit/fakes.py`` (fast, on asyncio and trio);
- ``tests/e2e/test_nio_matrix_contract.py``: the nio adapter
  (``runtime.matrix.nio_adapter.NioMatrix``) on the real Synapse of the e2e fixtures.

Synapse is the reference: where the fake answers differently, the fake is wrong. The
tests cover what the bot relies on and nothing an implementation may choose freely
(event ids, token formats, the default state Synapse adds to a new room).
(Test file basenames must be unique across tests/: pytest imports them top-level.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
import pytest

from contracts.matrix import (
    JsonDict,
    MatrixEvent,
    MatrixPort,
    MatrixRequestError,
    StateEventSpec,
    SyncBatch,
)

__all__ = ["MatrixPortContract", "Peer", "World"]

CUSTOM = "lambda.surface.contract"
SYNC_DEADLINE_S = 10.0
T = TypeVar("T")


class Peer(Protocol):
    """Another user of the homeserver, driven by the test."""

    @property
    def user_id(self) -> str: ...

    async def create_room(self, *, invite: Sequence[str] = (), is_direct: bool = False) -> str:
        """A private (invite-only) room; ``is_direct`` marks the invites as a DM."""
        ...

    async def join(self, room_id: str) -> None: ...

    async def send_message(self, room_id: str, content: JsonDict) -> str:
        """An m.room.message; returns its event id."""
        ...

    async def member_content(self, room_id: str, user_id: str) -> JsonDict | None:
        """The m.room.member content of ``user_id`` in a room the peer is in; None if none."""
        ...

    async def set_display_name(self, name: str) -> None: ...

    async def read_receipt(self, room_id: str, user_id: str) -> str | None:
        """The event ``user_id``'s ``m.read`` receipt is on, as the peer sees it; None if none."""
        ...


@dataclass(frozen=True)
class World:
    port: MatrixPort  # logged in as the bot
    peer: Peer


# --- helpers ---------------------------------------------------------------------------


def text(body: str) -> JsonDict:
    return {"msgtype": "m.text", "body": body}


def state_of(events: Sequence[MatrixEvent], event_type: str, state_key: str = "") -> MatrixEvent:
    """The (last) state event of that type and key; fails the test if there is none."""
    matches = [e for e in events if e.type == event_type and e.state_key == state_key]
    assert matches, f"no {event_type}/{state_key!r} state in {[e.type for e in events]}"
    return matches[-1]


def bodies(events: Sequence[MatrixEvent]) -> list[str]:
    return [e.content["body"] for e in events if e.type == "m.room.message"]


async def sync_until(
    port: MatrixPort, since: str | None, found: Callable[[SyncBatch], T | None]
) -> tuple[T, str]:
    """Sync until ``found(batch)`` is not None; returns it and the next token."""
    with anyio.fail_after(SYNC_DEADLINE_S):
        while True:
            batch = await port.sync(since, timeout_ms=1000)
            since = batch.next_batch
            result = found(batch)
            if result is not None:
                return result, since


async def now(port: MatrixPort) -> str:
    """A sync token for "now": a sync since it returns only what happens later."""
    return (await port.sync(None, timeout_ms=0, timeline_limit=0)).next_batch


async def shared_room(world: World) -> str:
    """A room the bot created, which the peer joined."""
    room_id = await world.port.create_room(name="shared", invite=[world.peer.user_id])
    await world.peer.join(room_id)
    return room_id


async def all_pages_backwards(port: MatrixPort, room_id: str, *, limit: int) -> list[MatrixEvent]:
    """Every event of the room, newest first, paging until a page ends the room."""
    events: list[MatrixEvent] = []
    token: str | None = None
    for _ in range(100):
        page = await port.room_messages(room_id, token, backwards=True, limit=limit)
        events += page.events
        if page.end is None or not page.events:
            return events
        token = page.end
    raise AssertionError("room_messages never reached the start of the room")


# --- the suite -------------------------------------------------------------------------


class MatrixPortContract:
    """The behaviour every MatrixPort shows. Subclass it as ``Test...`` with a ``world``."""

    # -- identity -------------------------------------------------------------------------

    async def test_user_id_and_server_name(self, world: World) -> None:
        port = world.port

        assert port.user_id.startswith("@")
        assert port.server_name == port.user_id.split(":", 1)[1]

    # -- creating rooms ---------------------------------------------------------------------

    async def test_created_room_has_name_topic_initial_state_and_power_levels(
        self, world: World
    ) -> None:
        port = world.port

        room_id = await port.create_room(
            name="agent chat",
            topic="about things",
            initial_state=[
                StateEventSpec(CUSTOM, {"agent": "helper", "n": 1}),
                StateEventSpec(CUSTOM, {"keyed": True}, state_key="k"),
            ],
            power_level_overrides={"state_default": 100, "events": {CUSTOM: 100}},
        )

        state = await port.room_state(room_id)
        assert all(e.room_id == room_id and e.event_id for e in state)
        assert "type" not in state_of(state, "m.room.create").content
        assert state_of(state, "m.room.name").content == {"name": "agent chat"}
        assert state_of(state, "m.room.topic").content["topic"] == "about things"
        assert state_of(state, "m.room.join_rules").content["join_rule"] == "invite"
        assert state_of(state, "m.room.member", port.user_id).content["membership"] == "join"
        assert state_of(state, CUSTOM).content == {"agent": "helper", "n": 1}
        assert state_of(state, CUSTOM, "k").content == {"keyed": True}
        levels = state_of(state, "m.room.power_levels").content
        assert levels["state_default"] == 100
        assert levels["events"][CUSTOM] == 100
        assert port.user_id not in levels.get("users", {})  # the creator's power is implicit

    async def test_created_space_is_a_space(self, world: World) -> None:
        space_id = await world.port.create_room(name="Space", is_space=True)

        state = await world.port.room_state(space_id)

        assert state_of(state, "m.room.create").content["type"] == "m.space"
        assert state_of(state, "m.room.name").content == {"name": "Space"}

    async def test_created_room_invites_and_the_invitee_can_join(self, world: World) -> None:
        port, peer = world.port, world.peer

        room_id = await port.create_room(name="with peer", invite=[peer.user_id])

        invited = state_of(await port.room_state(room_id), "m.room.member", peer.user_id)
        assert invited.content["membership"] == "invite"
        await peer.join(room_id)
        members = state_of(await port.room_state(room_id), "m.room.member", peer.user_id)
        assert members.content["membership"] == "join"

    # -- state ------------------------------------------------------------------------------

    async def test_send_state_replaces_state_of_the_same_type_and_key(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="state")

        first = await port.send_state(room_id, CUSTOM, {"v": 1}, state_key="a")
        second = await port.send_state(room_id, CUSTOM, {"v": 2}, state_key="a")
        await port.send_state(room_id, CUSTOM, {"v": 3}, state_key="b")

        assert first.startswith("$")
        assert second not in ("", first)
        state = await port.room_state(room_id)
        assert state_of(state, CUSTOM, "a").content == {"v": 2}
        assert state_of(state, CUSTOM, "a").event_id == second
        assert state_of(state, CUSTOM, "b").content == {"v": 3}
        assert len([e for e in state if e.type == CUSTOM and e.state_key == "a"]) == 1

    async def test_own_member_state_sets_a_per_room_name_and_avatar(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await port.create_room(name="face", invite=[peer.user_id])
        await peer.join(room_id)
        face = {"membership": "join", "displayname": "Agent", "avatar_url": "mxc://x.org/face"}

        await port.send_state(room_id, "m.room.member", face, state_key=port.user_id)

        mine = state_of(await port.room_state(room_id), "m.room.member", port.user_id)
        assert {k: mine.content.get(k) for k in face} == face
        seen = await peer.member_content(room_id, port.user_id)
        assert seen is not None and seen.get("displayname") == "Agent"

    async def test_room_state_of_a_room_the_bot_is_not_in_is_forbidden(self, world: World) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.room_state(room_id)

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    async def test_send_state_to_a_room_the_bot_is_not_in_is_forbidden(self, world: World) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.send_state(room_id, CUSTOM, {"v": 1})

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    # -- sending ----------------------------------------------------------------------------

    async def test_send_message_with_the_same_txn_id_sends_once(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="txn")

        first = await port.send_message(room_id, text("once"), txn_id="txn-1")
        second = await port.send_message(room_id, text("once"), txn_id="txn-1")

        assert first == second
        page = await port.room_messages(room_id, None, limit=20)
        assert [e.event_id for e in page.events if e.type == "m.room.message"] == [first]

    async def test_the_same_txn_id_in_another_room_is_another_event(self, world: World) -> None:
        port = world.port
        one = await port.create_room(name="one")
        two = await port.create_room(name="two")

        first = await port.send_message(one, text("a"), txn_id="txn-2")
        second = await port.send_message(two, text("b"), txn_id="txn-2")

        assert first != second
        assert bodies((await port.room_messages(two, None, limit=1)).events) == ["b"]

    async def test_send_a_custom_event_type(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="custom")

        event_id = await port.send_message(
            room_id, {"k": "v"}, txn_id="custom-1", event_type="lambda.surface.ping"
        )

        page = await port.room_messages(room_id, None, limit=1)
        assert [(e.event_id, e.type, e.content, e.sender) for e in page.events] == [
            (event_id, "lambda.surface.ping", {"k": "v"}, port.user_id)
        ]

    async def test_send_to_a_room_the_bot_is_not_in_is_forbidden(self, world: World) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.send_message(room_id, text("hi"), txn_id="x")

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    async def test_typing_in_a_joined_room(self, world: World) -> None:
        room_id = await shared_room(world)

        await world.port.set_typing(room_id, True, timeout_ms=5000)
        await world.port.set_typing(room_id, False)

    async def test_typing_in_a_room_the_bot_is_not_in_is_forbidden(self, world: World) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.set_typing(room_id, True)

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    # -- receipts and single events -------------------------------------------------------

    async def test_a_read_receipt_reaches_the_other_members(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await shared_room(world)
        event_id = await peer.send_message(room_id, text("read me"))

        await port.send_receipt(room_id, event_id)
        await port.send_receipt(room_id, event_id)  # repeating it is harmless

        assert await peer.read_receipt(room_id, port.user_id) == event_id

    async def test_get_event_has_the_original_content_and_its_latest_edit(
        self, world: World
    ) -> None:
        port, peer = world.port, world.peer
        room_id = await shared_room(world)
        original = await peer.send_message(room_id, text("first"))
        edited = {
            "msgtype": "m.text",
            "body": "* second",
            "m.new_content": text("second"),
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }
        edit_id = await peer.send_message(room_id, edited)

        event = await port.get_event(room_id, original)

        assert (event.event_id, event.sender, event.content["body"]) == (
            original,
            peer.user_id,
            "first",
        )
        replacement = event.unsigned["m.relations"]["m.replace"]
        assert replacement["event_id"] == edit_id
        assert replacement["content"]["m.new_content"]["body"] == "second"

    async def test_get_event_of_an_unknown_event_is_not_found(self, world: World) -> None:
        room_id = await shared_room(world)

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.get_event(room_id, "$nothing-of-that-name")

        assert caught.value.status == 404

    # -- sync -------------------------------------------------------------------------------

    async def test_initial_sync_has_joined_rooms_with_state_and_timeline(
        self, world: World
    ) -> None:
        port = world.port
        room_id = await port.create_room(name="fresh")
        await port.send_state(room_id, CUSTOM, {"v": 2}, state_key="k")
        said = await port.send_message(room_id, text("hello"), txn_id="t-initial")

        batch = await port.sync(None, timeout_ms=0)

        room = batch.joined[room_id]
        assert room.timeline[-1].event_id == said
        assert state_of(room.state, CUSTOM, "k").content == {"v": 2}
        assert state_of(room.state, "m.room.name").content == {"name": "fresh"}
        assert batch.next_batch

    async def test_full_state_snapshot_without_timeline(self, world: World) -> None:
        port = world.port
        space_id = await port.create_room(name="Space", is_space=True)
        room_id = await port.create_room(
            name="chat",
            initial_state=[
                StateEventSpec(CUSTOM, {"agent": "helper"}),
                StateEventSpec("m.space.parent", {"via": [port.server_name]}, state_key=space_id),
            ],
        )
        await port.send_state(space_id, "m.space.child", {"via": ["x"]}, state_key=room_id)

        batch = await port.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)

        room, space = batch.joined[room_id], batch.joined[space_id]
        assert room.timeline == []
        assert space.timeline == []
        assert state_of(room.state, CUSTOM).content == {"agent": "helper"}
        assert state_of(room.state, "m.space.parent", space_id).content["via"]
        assert state_of(space.state, "m.space.child", room_id).content == {"via": ["x"]}
        assert state_of(space.state, "m.room.create").content["type"] == "m.space"

    async def test_incremental_sync_delivers_a_peer_message_raw_and_once(
        self, world: World
    ) -> None:
        port, peer = world.port, world.peer
        room_id = await shared_room(world)
        since = await now(port)
        content = {
            "msgtype": "lambda.surface.unknown",
            "body": "hello bot",
            "x.custom": {"nested": [1, 2, {"deep": None}]},
        }

        event_id = await peer.send_message(room_id, content)

        def the_message(batch: SyncBatch) -> MatrixEvent | None:
            room = batch.joined.get(room_id)
            timeline = room.timeline if room else ()
            return next((e for e in timeline if e.event_id == event_id), None)

        event, since = await sync_until(port, since, the_message)
        assert (event.content, event.sender, event.type) == (
            content,
            peer.user_id,
            "m.room.message",
        )
        assert event.room_id == room_id
        assert event.origin_server_ts > 0
        assert not event.is_state
        again = await port.sync(since, timeout_ms=0)
        assert the_message(again) is None

    async def test_a_long_poll_returns_with_the_news(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await shared_room(world)
        since = await now(port)
        answers: list[SyncBatch] = []

        async def long_poll() -> None:
            answers.append(await port.sync(since, timeout_ms=60_000))

        with anyio.fail_after(SYNC_DEADLINE_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_poll)
                event_id = await peer.send_message(room_id, text("wake up"))

        assert event_id in [e.event_id for e in answers[0].joined[room_id].timeline]

    async def test_limited_timeline_pages_back_from_prev_batch(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="gap")
        since = await now(port)
        await port.send_state(room_id, CUSTOM, {"in": "the gap"}, state_key="gap")
        for n in range(5):
            await port.send_message(room_id, text(f"m{n}"), txn_id=f"gap-{n}")

        batch = await port.sync(since, timeout_ms=0, timeline_limit=2)

        room = batch.joined[room_id]
        assert room.limited is True
        assert bodies(room.timeline) == ["m3", "m4"]
        assert state_of(room.state, CUSTOM, "gap").content == {"in": "the gap"}
        assert room.prev_batch is not None
        older = await port.room_messages(room_id, room.prev_batch, backwards=True, limit=3)
        assert bodies(older.events) == ["m2", "m1", "m0"]

    async def test_an_initial_sync_window_is_limited_and_pages_back(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="window")
        for n in range(4):
            await port.send_message(room_id, text(f"w{n}"), txn_id=f"w{n}")

        batch = await port.sync(None, timeout_ms=0, full_state=True, timeline_limit=2)

        room = batch.joined[room_id]
        assert room.limited is True
        assert bodies(room.timeline) == ["w2", "w3"]
        assert state_of(room.state, "m.room.name").content == {"name": "window"}
        assert room.prev_batch is not None
        older = await port.room_messages(room_id, room.prev_batch, backwards=True, limit=2)
        assert bodies(older.events) == ["w1", "w0"]

    async def test_a_timeline_within_the_limit_is_not_limited(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="no gap")
        since = await now(port)
        await port.send_message(room_id, text("only"), txn_id="only")

        batch = await port.sync(since, timeout_ms=0, timeline_limit=10)

        room = batch.joined[room_id]
        assert room.limited is False
        assert bodies(room.timeline) == ["only"]

    async def test_a_quiet_incremental_sync_has_no_rooms(self, world: World) -> None:
        port = world.port
        await port.create_room(name="quiet")
        since = await now(port)

        batch = await port.sync(since, timeout_ms=0, timeline_limit=10)

        assert dict(batch.joined) == {}
        assert dict(batch.invited) == {}
        assert list(batch.left) == []

    async def test_invite_shows_the_inviter_and_is_direct(self, world: World) -> None:
        port, peer = world.port, world.peer

        room_id = await peer.create_room(invite=[port.user_id], is_direct=True)

        invite, _ = await sync_until(port, None, lambda batch: batch.invited.get(room_id))
        assert invite.inviter == peer.user_id
        assert invite.is_direct is True
        member = state_of(invite.state, "m.room.member", port.user_id)
        assert member.content["membership"] == "invite"

    async def test_invite_to_a_plain_room_is_not_direct(self, world: World) -> None:
        port, peer = world.port, world.peer

        room_id = await peer.create_room(invite=[port.user_id])

        invite, _ = await sync_until(port, None, lambda batch: batch.invited.get(room_id))
        assert invite.inviter == peer.user_id
        assert invite.is_direct is False

    async def test_a_joined_invite_moves_to_joined(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await peer.create_room(invite=[port.user_id])
        _, since = await sync_until(port, None, lambda batch: batch.invited.get(room_id))

        await port.join(room_id)

        room, _ = await sync_until(port, since, lambda batch: batch.joined.get(room_id))
        member = state_of(room.state, "m.room.member", port.user_id)
        assert member.content["membership"] == "join"
        assert room_id not in (await port.sync(None, timeout_ms=0, timeline_limit=0)).invited

    async def test_account_data_shows_in_initial_and_incremental_sync(self, world: World) -> None:
        port = world.port
        await port.set_account_data("lambda.surface.test", {"a": 1})
        batch = await port.sync(None, timeout_ms=0, timeline_limit=0)
        assert batch.account_data["lambda.surface.test"] == {"a": 1}

        await port.set_account_data("lambda.surface.test", {"a": 2})

        content, _ = await sync_until(
            port, batch.next_batch, lambda b: b.account_data.get("lambda.surface.test")
        )
        assert content == {"a": 2}

    # -- membership -------------------------------------------------------------------------

    async def test_joining_a_room_without_an_invite_is_forbidden(self, world: World) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.join(room_id)

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    async def test_joining_an_unknown_room_is_refused(self, world: World) -> None:
        port = world.port

        with pytest.raises(MatrixRequestError) as caught:
            await port.join(f"!doesnotexist:{port.server_name}")

        assert caught.value.status == 404

    async def test_invite_reaches_the_invitee(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await port.create_room(name="later invite")

        await port.invite(room_id, peer.user_id)

        invited = state_of(await port.room_state(room_id), "m.room.member", peer.user_id)
        assert invited.content["membership"] == "invite"
        await peer.join(room_id)

    async def test_inviting_an_invited_user_again_is_accepted(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await port.create_room(name="invited twice", invite=[peer.user_id])

        await port.invite(room_id, peer.user_id)

        await peer.join(room_id)

    async def test_inviting_a_member_is_refused(self, world: World) -> None:
        room_id = await shared_room(world)

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.invite(room_id, world.peer.user_id)

        assert caught.value.status == 403

    async def test_leave_with_a_reason_shows_in_sync_as_left(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await shared_room(world)
        since = await now(port)

        await port.leave(room_id, reason="done here")

        await sync_until(port, since, lambda batch: True if room_id in batch.left else None)
        member = await peer.member_content(room_id, port.user_id)
        assert member == {"membership": "leave", "reason": "done here"}
        with pytest.raises(MatrixRequestError):
            await port.send_message(room_id, text("still here?"), txn_id="after-leave")

    async def test_a_rejected_invite_shows_as_left(self, world: World) -> None:
        port, peer = world.port, world.peer
        room_id = await peer.create_room(invite=[port.user_id])
        _, since = await sync_until(port, None, lambda batch: batch.invited.get(room_id))

        await port.leave(room_id, reason="not for me")

        await sync_until(port, since, lambda batch: True if room_id in batch.left else None)
        snapshot = await port.sync(None, timeout_ms=0, timeline_limit=0)
        assert room_id not in snapshot.invited
        assert room_id not in snapshot.joined
        member = await peer.member_content(room_id, port.user_id)
        assert member == {"membership": "leave", "reason": "not for me"}

    async def test_a_left_room_is_not_in_a_snapshot(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="going")

        await port.leave(room_id)

        batch = await port.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)
        assert room_id not in batch.joined
        assert room_id not in batch.left

    async def test_forget_after_leaving(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="forgotten")
        await port.leave(room_id)

        await port.forget(room_id)

        batch = await port.sync(None, timeout_ms=0, full_state=True, timeline_limit=0)
        assert room_id not in batch.joined
        assert room_id not in batch.left

    async def test_forgetting_a_joined_room_is_refused(self, world: World) -> None:
        room_id = await world.port.create_room(name="staying")

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.forget(room_id)

        assert caught.value.status == 400

    # -- history ----------------------------------------------------------------------------

    async def test_room_messages_backwards_is_newest_first_and_pages(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="history")
        for n in range(5):
            await port.send_message(room_id, text(f"m{n}"), txn_id=f"h{n}")

        newest = await port.room_messages(room_id, None, backwards=True, limit=3)
        assert newest.end is not None
        older = await port.room_messages(room_id, newest.end, backwards=True, limit=2)

        assert bodies(newest.events) == ["m4", "m3", "m2"]
        assert bodies(older.events) == ["m1", "m0"]

    async def test_room_messages_pages_back_to_the_creation_of_the_room(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="short")
        for n in range(3):
            await port.send_message(room_id, text(f"m{n}"), txn_id=f"s{n}")

        events = await all_pages_backwards(port, room_id, limit=4)
        exact = await port.room_messages(room_id, None, backwards=True, limit=len(events))
        beyond = await port.room_messages(room_id, exact.end, backwards=True, limit=10)
        whole = await port.room_messages(room_id, None, backwards=True, limit=1000)

        assert events[-1].type == "m.room.create"
        assert [e.event_id for e in events] == [e.event_id for e in whole.events]
        assert len({e.event_id for e in events}) == len(events)
        assert bodies(events) == ["m2", "m1", "m0"]
        # A page that reaches the start still has an end token; the page after it is
        # empty and has none (the spec would allow omitting it earlier; Synapse does not).
        assert exact.end is not None
        assert (list(beyond.events), beyond.end) == ([], None)

    async def test_room_messages_forwards_from_the_start(self, world: World) -> None:
        port = world.port
        room_id = await port.create_room(name="forwards")
        for n in range(3):
            await port.send_message(room_id, text(f"m{n}"), txn_id=f"f{n}")

        first = await port.room_messages(room_id, None, backwards=False, limit=2)
        newest_first = await port.room_messages(room_id, None, backwards=True, limit=1000)

        assert first.events[0].type == "m.room.create"
        assert first.end is not None
        rest = await port.room_messages(room_id, first.end, backwards=False, limit=1000)
        forwards = [e.event_id for e in [*first.events, *rest.events]]
        assert forwards == [e.event_id for e in reversed(newest_first.events)]

    async def test_room_messages_of_a_room_the_bot_is_not_in_is_forbidden(
        self, world: World
    ) -> None:
        room_id = await world.peer.create_room()

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.room_messages(room_id, None)

        assert (caught.value.errcode, caught.value.status) == ("M_FORBIDDEN", 403)

    # -- account data and profile -----------------------------------------------------------

    async def test_account_data_roundtrip_and_missing_is_none(self, world: World) -> None:
        port = world.port
        assert await port.get_account_data("lambda.surface.missing") is None

        await port.set_account_data("lambda.surface.state", {"rooms": {"a": 1}})
        await port.set_account_data("lambda.surface.other", {"b": 2})

        assert await port.get_account_data("lambda.surface.state") == {"rooms": {"a": 1}}
        await port.set_account_data("lambda.surface.state", {"rooms": {}})
        assert await port.get_account_data("lambda.surface.state") == {"rooms": {}}

    async def test_display_name_of_a_user_and_of_nobody(self, world: World) -> None:
        port, peer = world.port, world.peer

        await peer.set_display_name("Peer P.")

        assert await port.display_name(peer.user_id) == "Peer P."
        assert await port.display_name(f"@nobody-here:{port.server_name}") is None

    async def test_a_user_who_set_no_display_name_is_shown_by_localpart(self, world: World) -> None:
        port, peer = world.port, world.peer
        await peer.create_room()  # a user the fake knows of (Synapse knows every account)

        assert await port.display_name(peer.user_id) == peer.user_id[1:].split(":", 1)[0]

    # -- media ------------------------------------------------------------------------------

    async def test_upload_then_download(self, world: World) -> None:
        port = world.port
        data = bytes(range(256)) * 40

        mxc = await port.upload(data, content_type="application/octet-stream", filename="b.bin")

        assert mxc.startswith(f"mxc://{port.server_name}/")
        assert await port.download(mxc, max_bytes=len(data)) == data

    async def test_download_over_max_bytes_is_refused(self, world: World) -> None:
        mxc = await world.port.upload(b"x" * 1001, content_type="text/plain", filename="big.txt")

        with pytest.raises(MatrixRequestError) as caught:
            await world.port.download(mxc, max_bytes=1000)

        assert caught.value.errcode == "M_TOO_LARGE"

    async def test_download_of_unknown_media_is_not_found(self, world: World) -> None:
        port = world.port

        with pytest.raises(MatrixRequestError) as caught:
            await port.download(f"mxc://{port.server_name}/doesnotexist", max_bytes=10)

        assert (caught.value.errcode, caught.value.status) == ("M_NOT_FOUND", 404)

    async def test_download_of_a_non_mxc_uri_is_refused(self, world: World) -> None:
        with pytest.raises(MatrixRequestError):
            await world.port.download("https://example.org/x", max_bytes=10)
