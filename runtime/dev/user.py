"""A Matrix user driven by a test or a benchmark, and the onboarding every scenario starts with.

``UserClient`` is a plain matrix-nio client (the bot's own adapter is not used, so the
tests see the bot as any Matrix client would) that records every event it syncs and
every invite it gets; the ``wait_*`` helpers sync until a condition holds, bounded by a
timeout. ``onboard`` is the first contact: a DM to the bot, then joining the Space and
the chat room the bot invites the user to.

The event type and field names are spelled out here rather than taken from
``contracts.markers``: the tests check the bot against the names as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import nio

from runtime.dev.accounts import RegisteredUser

__all__ = ["REPLY_TO", "TEST_FILTER", "Seen", "UserClient", "onboard"]

REPLY_TO = "lambda.surface.reply_to"

# The test user must see every event: a limited timeline would hide replies.
TEST_FILTER = {"room": {"timeline": {"limit": 1000}}}


async def crypto_housekeeping(client: nio.AsyncClient) -> None:
    """What nio's own sync loop does after a sync: keys up, devices queried, to-device out."""
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


@dataclass
class Seen:
    events: list[dict[str, Any]] = field(default_factory=list)  # with "room_id" added
    invites: dict[str, str] = field(default_factory=dict)  # room id -> inviter


class UserClient:
    """A Matrix user driven by a test, with everything it has seen."""

    def __init__(self, client: nio.AsyncClient, user: RegisteredUser) -> None:
        self.client = client
        self.user = user
        self.seen = Seen()
        self._since: str | None = None
        self._joined: set[str] = set()
        self._synced_rooms: set[str] = set()

    @classmethod
    async def login(cls, base_url: str, user: RegisteredUser) -> UserClient:
        client = nio.AsyncClient(base_url, user.user_id)
        client.restore_login(user.user_id, user.device_id, user.access_token)
        me = cls(client, user)
        await me.sync(0)
        return me

    async def close(self) -> None:
        await self.client.close()

    async def sync(self, timeout_ms: int = 1000) -> None:
        response = await self.client.sync(
            timeout=timeout_ms, since=self._since, sync_filter=TEST_FILTER
        )
        if not isinstance(response, nio.SyncResponse):
            raise RuntimeError(f"sync failed: {response}")
        for room_id, room in response.rooms.join.items():
            if room_id in self._synced_rooms and room.timeline.limited:
                raise AssertionError(f"test client missed events in {room_id}: raise the limit")
            self._synced_rooms.add(room_id)
        self._since = response.next_batch
        for room_id, room in response.rooms.join.items():
            for event in room.timeline.events:
                self.seen.events.append({**event.source, "room_id": room_id})
        for room_id, room in response.rooms.invite.items():
            for event in room.invite_state:
                source = getattr(event, "source", {})
                if (
                    source.get("type") == "m.room.member"
                    and source.get("state_key") == self.user.user_id
                ):
                    self.seen.invites[room_id] = source.get("sender", "")

    async def wait_for(
        self, predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
    ) -> Any:
        with anyio.fail_after(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                await self.sync(500)
        raise AssertionError(what)  # pragma: no cover

    async def start_dm(self, bot_user_id: str) -> str:
        response = await self.client.room_create(invite=[bot_user_id], is_direct=True)
        assert isinstance(response, nio.RoomCreateResponse), response
        return str(response.room_id)

    async def join(self, room_id: str) -> None:
        response = await self.client.join(room_id)
        assert isinstance(response, nio.JoinResponse), response
        self._joined.add(room_id)

    async def accept_invites(self, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Wait until `count` new invites arrived, join them; returns their room ids."""
        joined = self._joined

        def pending() -> list[str] | None:
            rooms = [r for r in self.seen.invites if r not in joined]
            return rooms if len(rooms) >= count else None

        rooms: list[str] = await self.wait_for(pending, timeout=timeout, what="invites")
        for room_id in rooms:
            await self.join(room_id)
        return rooms

    async def send(self, room_id: str, text: str) -> str:
        response = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text}
        )
        assert isinstance(response, nio.RoomSendResponse), response
        return str(response.event_id)

    def bot_messages(self, room_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.seen.events
            if e.get("type") == "m.room.message"
            and e.get("sender") != self.user.user_id
            and (room_id is None or e["room_id"] == room_id)
        ]

    def replies_to(self, event_id: str) -> list[dict[str, Any]]:
        """Bot messages (not edits) answering `event_id`."""
        return [
            e
            for e in self.bot_messages()
            if e["content"].get(REPLY_TO) == event_id
            and e["content"].get("m.relates_to", {}).get("rel_type") != "m.replace"
        ]

    def current_text(self, message_event_id: str) -> str:
        """The message's text after its latest edit."""
        text = ""
        for e in self.seen.events:
            content = e.get("content", {})
            if e.get("event_id") == message_event_id:
                text = content.get("body", "")
            relates = content.get("m.relates_to", {})
            if (
                relates.get("rel_type") == "m.replace"
                and relates.get("event_id") == message_event_id
            ):
                text = content.get("m.new_content", {}).get("body", text)
        return text

    def reply_texts(self, event_id: str) -> list[str]:
        return [self.current_text(e["event_id"]) for e in self.replies_to(event_id)]

    async def ask(
        self, room_id: str, text: str, *, expect: str | None = None, timeout: float = 30.0
    ) -> str:
        """Send `text`, wait for the bot's reply (containing `expect`), return the reply text."""
        event_id = await self.send(room_id, text)
        return await self.wait_reply(event_id, expect=expect, timeout=timeout)

    async def wait_reply(
        self, event_id: str, *, expect: str | None = None, timeout: float = 30.0
    ) -> str:
        def done() -> str | None:
            for reply in self.reply_texts(event_id):
                if expect is None or expect in reply:
                    return reply
            return None

        result: str = await self.wait_for(done, timeout=timeout, what=f"reply to {event_id}")
        return result

    def room_state_of(self, room_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e for e in self.seen.events if e["room_id"] == room_id and e.get("type") == event_type
        ]

    async def get_state(self, room_id: str) -> list[dict[str, Any]]:
        response = await self.client.room_get_state(room_id)
        assert isinstance(response, nio.RoomGetStateResponse), response
        return list(response.events)

    async def hierarchy(self, space_id: str) -> list[dict[str, Any]]:
        url = f"{self.client.homeserver}/_matrix/client/v1/rooms/{space_id}/hierarchy"
        async with httpx.AsyncClient() as http:
            r = await http.get(url, headers={"Authorization": f"Bearer {self.user.access_token}"})
        r.raise_for_status()
        rooms: list[dict[str, Any]] = r.json()["rooms"]
        return rooms


async def onboard(user: UserClient, bot_user_id: str, *, timeout: float = 60.0) -> tuple[str, str]:
    """Invite the bot to a DM, accept the Space and chat invites; returns (space_id, chat_id)."""
    await user.start_dm(bot_user_id)

    def invited() -> dict[str, str] | None:
        found = {r: s for r, s in user.seen.invites.items() if s == bot_user_id}
        return found if len(found) >= 2 else None

    invites = await user.wait_for(invited, timeout=timeout, what="Space and chat invites")
    space_id = chat_id = ""
    for room_id in invites:
        await user.join(room_id)
    await user.sync(0)
    for room_id in invites:
        state = await user.get_state(room_id)
        types = {e["type"] for e in state}
        if "lambda.surface.space" in types:
            space_id = room_id
        elif "lambda.surface.room" in types:
            chat_id = room_id
    assert space_id and chat_id, f"invites were {invites}"
    return space_id, chat_id
