"""Fakes at the boundaries: a homeserver that records what the bot sent.

Shared by the unit tests; extend the classes here rather than writing mocks.
`FakeMatrix` passes the MatrixPort contract suite (tests/contract/matrix_port.py) that
the nio adapter passes on Synapse: when they disagree, Synapse is right and the fake
is fixed. Known differences the suite leaves out: room ids keep a server name (room
version 12 ids have none), member events carry no displayname, invites carry the whole room
state instead of the stripped subset, and a limited sync returns the full state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from contracts.matrix import (
    InvitedRoom,
    JoinedRoom,
    JsonDict,
    MatrixError,
    MatrixEvent,
    MatrixRequestError,
    MessagesPage,
    StateEventSpec,
    SyncBatch,
    Undecryptable,
)

# What a /sync without a filter returns per room (Synapse's default is 10).
DEFAULT_TIMELINE_LIMIT = 10


@dataclass
class SentMessage:
    room_id: str
    content: JsonDict
    txn_id: str
    event_type: str
    event_id: str
    at: float = 0.0  # anyio.current_time() when it was sent


@dataclass
class UploadedMedia:
    mxc: str
    data: bytes
    content_type: str
    filename: str


@dataclass
class StateWrite:
    room_id: str
    type: str
    state_key: str
    content: JsonDict


@dataclass
class SyncCall:
    since: str | None
    timeout_ms: int
    full_state: bool
    timeline_limit: int | None
    at: float


@dataclass
class FakeRoom:
    """One room on the fake homeserver: current state and the whole timeline."""

    room_id: str
    creator: str
    name: str | None = None
    is_space: bool = False
    invite: tuple[str, ...] = ()
    initial_state: tuple[StateEventSpec, ...] = ()
    power_level_overrides: JsonDict | None = None
    topic: str | None = None
    state: dict[tuple[str, str], MatrixEvent] = field(default_factory=dict)
    # Every event in order (state events too), each with its stream position.
    timeline: list[tuple[int, MatrixEvent]] = field(default_factory=list)

    def membership(self, user_id: str) -> str | None:
        event = self.state.get(("m.room.member", user_id))
        return event.content.get("membership") if event else None

    def state_content(self, event_type: str, state_key: str = "") -> JsonDict | None:
        event = self.state.get((event_type, state_key))
        return event.content if event else None

    def state_event(self, event_type: str, state_key: str = "") -> MatrixEvent | None:
        return self.state.get((event_type, state_key))


@dataclass
class Gate:
    """Holds the calls of `method` for which `when(room_id, event_type)` holds until `opened`.

    `reached` is set once such a call waits: a test can then interleave another
    task deterministically at that await.
    """

    method: str
    when: Callable[[str, str], bool] = lambda _room_id, _event_type: True
    reached: anyio.Event = field(default_factory=anyio.Event)
    opened: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class FakeMatrix:
    """`contracts.matrix.MatrixPort`, in memory: a small homeserver that behaves.

    - rooms: `create_room` records the room with its initial state (marker, power
      levels, name, invites) and returns its id; `send_state` updates state;
      `room_state` returns it (403 for a room the bot is not in);
    - one event stream: everything that happens in a room (bot sends, test pushes
      via `add_message` / `add_event` / `add_invite`) gets a stream position;
      `sync(since)` returns what happened after `since` (`s<position>` tokens),
      an initial sync the last `timeline_limit` events of every joined room with
      its full state; an incremental sync with nothing new waits (up to
      `timeout_ms`) until something is pushed, like a long poll;
    - `media` maps mxc URIs to bytes; `download` serves them, `upload` adds to it;
    - `send_message` records into `sent` and, like Synapse, sends one event per
      (room, event type, `txn_id`) (a resend returns the first event id); messages
      into a known room land in its timeline (403 if the bot is not in it); a room
      the fake was not told about accepts messages and typing (materializer tests);
    - account data, display names, typing, invites, join/leave/forget, with
      Synapse's refusals (join uninvited 403, join unknown 404, invite a member 403,
      forget a joined room 400); an initial sync lists no left rooms, and a
      forgotten room never shows again;
    - `fail` queues errors: the next call of the named method raises the first one;
    - `max_event_bytes`: like Synapse, a message whose event JSON (content plus an
      envelope of `envelope_bytes`) is larger is refused with M_TOO_LARGE.
    - `lose_answer` queues errors raised *after* the call took effect (the server
      did it, its answer was lost: a timeout, a 5xx from a proxy);
    - `gates` hold matching calls until the test opens them (see `Gate`);
    - `state_after`: full-state answers say they hold MSC4222 `state_after` (the fake's
      state is always the current state, so only the flag differs).
    """

    user_id: str = "@bot:example.org"
    server_name: str = "example.org"
    media: dict[str, bytes] = field(default_factory=dict)
    uploads: list[UploadedMedia] = field(default_factory=list)
    sent: list[SentMessage] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    fail: dict[str, list[MatrixError]] = field(default_factory=dict)
    lose_answer: dict[str, list[MatrixError]] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    joined_rooms_calls: int = 0
    rooms: dict[str, FakeRoom] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # room ids the bot created, in order
    state_writes: list[StateWrite] = field(default_factory=list)
    account_data: dict[str, JsonDict] = field(default_factory=dict)
    account_data_writes: list[tuple[str, JsonDict]] = field(default_factory=list)
    display_names: dict[str, str] = field(default_factory=dict)
    typing: list[tuple[str, bool]] = field(default_factory=list)
    receipts: list[tuple[str, str]] = field(default_factory=list)  # (room id, event id)
    invites: list[tuple[str, str]] = field(default_factory=list)  # (room id, user id)
    joined: list[str] = field(default_factory=list)  # rooms the bot joined, in order
    left: list[tuple[str, str | None]] = field(default_factory=list)  # (room id, reason)
    forgotten: list[str] = field(default_factory=list)
    sync_calls: list[SyncCall] = field(default_factory=list)
    max_event_bytes: int = 65_536
    envelope_bytes: int = 1_200
    state_after: bool = False
    _by_txn: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count())
    _position: int = 0
    _account_data_at: dict[str, int] = field(default_factory=dict)
    _wakeup: anyio.Event | None = None
    _sync_called: anyio.Event | None = None

    # -- test-side helpers ----------------------------------------------------------------

    def add_media(self, data: bytes, name: str = "media") -> str:
        mxc = f"mxc://{self.server_name}/{name}{len(self.media)}"
        self.media[mxc] = data
        return mxc

    def room(self, room_id: str) -> FakeRoom:
        return self.rooms[room_id]

    def sync_token(self) -> str:
        """The token of "now": a sync since it returns only what happens later."""
        return f"s{self._position}"

    def add_event(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: JsonDict,
        *,
        state_key: str | None = None,
    ) -> MatrixEvent:
        """Something happens in a room (as if another client sent it)."""
        room = self.rooms[room_id]
        self._position += 1
        event = MatrixEvent(
            event_id=f"$e{next(self._ids)}",
            room_id=room_id,
            sender=sender,
            type=event_type,
            content=content,
            origin_server_ts=1_700_000_000_000 + self._position,
            state_key=state_key,
        )
        room.timeline.append((self._position, event))
        if state_key is not None:
            room.state[(event_type, state_key)] = event
        self._notify()
        return event

    def add_message(
        self, room_id: str, sender: str, body: str, *, msgtype: str = "m.text", **extra: Any
    ) -> MatrixEvent:
        return self.add_event(
            room_id, sender, "m.room.message", {"msgtype": msgtype, "body": body, **extra}
        )

    def add_room(self, creator: str, *, room_id: str | None = None, name: str | None = None) -> str:
        """A room someone else created (the bot is not in it yet)."""
        room_id = room_id or f"!r{next(self._ids)}:{self.server_name}"
        self.rooms[room_id] = FakeRoom(room_id=room_id, creator=creator, name=name)
        self.add_event(room_id, creator, "m.room.create", {"creator": creator}, state_key="")
        self.add_event(room_id, creator, "m.room.member", {"membership": "join"}, state_key=creator)
        if name:
            self.add_event(room_id, creator, "m.room.name", {"name": name}, state_key="")
        return room_id

    def add_invite(
        self, inviter: str, *, is_direct: bool = True, room_id: str | None = None
    ) -> str:
        """`inviter` creates a room and invites the bot (a DM by default)."""
        room_id = self.add_room(inviter, room_id=room_id)
        content: JsonDict = {"membership": "invite"}
        if is_direct:
            content["is_direct"] = True
        self.add_event(room_id, inviter, "m.room.member", content, state_key=self.user_id)
        return room_id

    def user_joins(self, room_id: str, user_id: str) -> MatrixEvent:
        return self.add_event(
            room_id, user_id, "m.room.member", {"membership": "join"}, state_key=user_id
        )

    def user_leaves(self, room_id: str, user_id: str) -> MatrixEvent:
        return self.add_event(
            room_id, user_id, "m.room.member", {"membership": "leave"}, state_key=user_id
        )

    def messages_in(self, room_id: str) -> list[JsonDict]:
        return [m.content for m in self.sent if m.room_id == room_id]

    async def wait_for_sync_calls(self, count: int) -> None:
        """Wait until `sync` was called at least `count` times."""
        while len(self.sync_calls) < count:
            self._sync_called = self._sync_called or anyio.Event()
            await self._sync_called.wait()

    # -- internals ------------------------------------------------------------------------

    def _maybe_fail(self, method: str) -> None:
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    async def _call(self, method: str) -> None:
        # A real call is a checkpoint: other tasks run while the bot waits for the server.
        await anyio.lowlevel.checkpoint()
        self._maybe_fail(method)

    def _maybe_lose_answer(self, method: str) -> None:
        queue = self.lose_answer.get(method)
        if queue:
            raise queue.pop(0)

    async def _pass_gates(self, method: str, room_id: str, event_type: str = "") -> None:
        for gate in self.gates:
            if gate.method == method and gate.when(room_id, event_type):
                gate.reached.set()
                await gate.opened.wait()

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _joined_room(self, room_id: str) -> FakeRoom:
        room = self.rooms.get(room_id)
        if room is None or room.membership(self.user_id) != "join":
            raise MatrixRequestError(
                f"{self.user_id} is not in room {room_id}", errcode="M_FORBIDDEN", status=403
            )
        return room

    # -- MatrixPort: sync -----------------------------------------------------------------

    async def sync(
        self,
        since: str | None,
        *,
        timeout_ms: int,
        full_state: bool = False,
        timeline_limit: int | None = None,
    ) -> SyncBatch:
        self.sync_calls.append(
            SyncCall(since, timeout_ms, full_state, timeline_limit, anyio.current_time())
        )
        if self._sync_called is not None:
            self._sync_called.set()
            self._sync_called = None
        await self._call("sync")
        after = int(since[1:]) if since else -1
        if since is not None and not full_state and self._position <= after and timeout_ms > 0:
            self._wakeup = anyio.Event()
            with anyio.move_on_after(timeout_ms / 1000):
                await self._wakeup.wait()
        return self._batch(after, full_state=full_state or since is None, limit=timeline_limit)

    def _batch(self, after: int, *, full_state: bool, limit: int | None) -> SyncBatch:
        limit = DEFAULT_TIMELINE_LIMIT if limit is None else limit
        joined: dict[str, JoinedRoom] = {}
        invited: dict[str, InvitedRoom] = {}
        left: list[str] = []
        for room_id, room in self.rooms.items():
            membership = room.membership(self.user_id)
            own = room.state.get(("m.room.member", self.user_id))
            own_position = next((p for p, e in room.timeline if e is own), 0)
            if membership == "join":
                new = [(p, e) for p, e in room.timeline if p > after]
                if not new and not full_state:
                    continue
                shown = new[-limit:] if limit else []
                limited = len(shown) < len(new)
                first_index = len(room.timeline) - len(shown)
                timeline = [e for _, e in shown]
                state = (
                    list(room.state.values())
                    if full_state or limited
                    else [e for e in timeline if e.is_state]
                )
                joined[room_id] = JoinedRoom(
                    room_id=room_id,
                    state=state,
                    timeline=timeline,
                    limited=limited,
                    prev_batch=f"t{first_index}",
                )
            elif membership == "invite" and own is not None and own_position > after:
                invited[room_id] = InvitedRoom(
                    room_id=room_id,
                    inviter=own.sender,
                    is_direct=own.content.get("is_direct") is True,
                    state=list(room.state.values()),
                )
            elif (
                membership == "leave"
                and after >= 0  # an initial sync leaves out rooms the bot left
                and own_position > after
                and room_id not in self.forgotten
            ):
                left.append(room_id)
        account_data = {
            kind: content
            for kind, content in self.account_data.items()
            if full_state or self._account_data_at.get(kind, 0) > after
        }
        return SyncBatch(
            next_batch=self.sync_token(),
            joined=joined,
            invited=invited,
            state_after=full_state and self.state_after,
            left=left,
            account_data=account_data,
        )

    # -- MatrixPort: rooms ----------------------------------------------------------------

    async def create_room(
        self,
        *,
        name: str,
        invite: Sequence[str] = (),
        is_space: bool = False,
        initial_state: Sequence[StateEventSpec] = (),
        power_level_overrides: JsonDict | None = None,
        topic: str | None = None,
    ) -> str:
        await self._call("create_room")
        room_id = f"!room{next(self._ids)}:{self.server_name}"
        bot = self.user_id
        self.rooms[room_id] = FakeRoom(
            room_id=room_id,
            creator=bot,
            name=name,
            is_space=is_space,
            invite=tuple(invite),
            initial_state=tuple(initial_state),
            power_level_overrides=power_level_overrides,
            topic=topic,
        )
        # As Synapse creates it with the private_chat preset, in room version 12: the
        # creator is the create event's sender, with unlimited power, and is not listed
        # in the power levels' "users" (v12 refuses it there).
        create: JsonDict = {"room_version": "12"}
        if is_space:
            create["type"] = "m.space"
        self.add_event(room_id, bot, "m.room.create", create, state_key="")
        self.add_event(room_id, bot, "m.room.member", {"membership": "join"}, state_key=bot)
        levels: JsonDict = {"users": {}, "users_default": 0, "state_default": 50, "invite": 0}
        levels.update(power_level_overrides or {})
        self.add_event(room_id, bot, "m.room.power_levels", levels, state_key="")
        self.add_event(room_id, bot, "m.room.join_rules", {"join_rule": "invite"}, state_key="")
        visibility = {"history_visibility": "shared"}
        self.add_event(room_id, bot, "m.room.history_visibility", visibility, state_key="")
        self.add_event(
            room_id, bot, "m.room.guest_access", {"guest_access": "can_join"}, state_key=""
        )
        for spec in initial_state:
            self.add_event(room_id, bot, spec.type, spec.content, state_key=spec.state_key)
        self.add_event(room_id, bot, "m.room.name", {"name": name}, state_key="")
        if topic:
            self.add_event(room_id, bot, "m.room.topic", {"topic": topic}, state_key="")
        for user_id in invite:
            self.invites.append((room_id, user_id))
            self.add_event(
                room_id, bot, "m.room.member", {"membership": "invite"}, state_key=user_id
            )
        self.created.append(room_id)
        self._maybe_lose_answer("create_room")
        return room_id

    async def send_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> str:
        await self._call("send_state")
        await self._pass_gates("send_state", room_id, event_type)
        self._joined_room(room_id)
        self.state_writes.append(StateWrite(room_id, event_type, state_key, content))
        event = self.add_event(room_id, self.user_id, event_type, content, state_key=state_key)
        return event.event_id

    async def send_message(
        self, room_id: str, content: JsonDict, *, txn_id: str, event_type: str = "m.room.message"
    ) -> str:
        await self._call("send_message")
        # Synapse keys a transaction on the request path (room, event type, txn id).
        key = (room_id, event_type, txn_id)
        if key in self._by_txn:
            return self._by_txn[key]
        size = len(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode())
        if size + self.envelope_bytes > self.max_event_bytes:
            raise MatrixRequestError("event too large", errcode="M_TOO_LARGE", status=413)
        if room_id in self.rooms:
            self._joined_room(room_id)
            event_id = self.add_event(room_id, self.user_id, event_type, content).event_id
        else:  # a room this fake was not told about (the materializer tests): still recorded
            event_id = f"$e{next(self._ids)}"
        self._by_txn[key] = event_id
        self.sent.append(
            SentMessage(room_id, content, txn_id, event_type, event_id, anyio.current_time())
        )
        return event_id

    async def set_typing(self, room_id: str, typing: bool, *, timeout_ms: int = 30000) -> None:
        await self._call("set_typing")
        if room_id in self.rooms:  # rooms the fake was not told about: still recorded
            self._joined_room(room_id)
        self.typing.append((room_id, typing))

    async def send_receipt(self, room_id: str, event_id: str) -> None:
        await self._call("send_receipt")
        self._event_in(self._joined_room(room_id), event_id)
        self.receipts.append((room_id, event_id))

    async def get_event(self, room_id: str, event_id: str) -> MatrixEvent:
        """Like Synapse: the original content; its latest edit (by the same sender) in
        ``unsigned["m.relations"]["m.replace"]``."""
        await self._call("get_event")
        room = self._joined_room(room_id)
        event = self._event_in(room, event_id)
        edits = [
            e
            for _, e in room.timeline
            if e.sender == event.sender
            and isinstance(relates := e.content.get("m.relates_to"), dict)
            and relates.get("rel_type") == "m.replace"
            and relates.get("event_id") == event_id
        ]
        if not edits:
            return event
        latest = edits[-1]
        edit_json: JsonDict = {
            "event_id": latest.event_id,
            "sender": latest.sender,
            "type": latest.type,
            "content": latest.content,
            "origin_server_ts": latest.origin_server_ts,
            "room_id": room_id,
        }
        unsigned = {**event.unsigned, "m.relations": {"m.replace": edit_json}}
        return dataclasses.replace(event, unsigned=unsigned)

    def _event_in(self, room: FakeRoom, event_id: str) -> MatrixEvent:
        for _, event in room.timeline:
            if event.event_id == event_id:
                return event
        raise MatrixRequestError(f"no event {event_id}", errcode="M_NOT_FOUND", status=404)

    async def join(self, room_id: str) -> None:
        await self._call("join")
        room = self.rooms.get(room_id)
        if room is None:  # Synapse: no server to join it over
            raise MatrixRequestError(f"unknown room {room_id}", errcode="M_UNKNOWN", status=404)
        if room.membership(self.user_id) not in ("invite", "join"):
            raise MatrixRequestError(f"not invited to {room_id}", errcode="M_FORBIDDEN", status=403)
        self.joined.append(room_id)
        if room.membership(self.user_id) != "join":
            self.add_event(
                room_id,
                self.user_id,
                "m.room.member",
                {"membership": "join"},
                state_key=self.user_id,
            )

    async def leave(self, room_id: str, reason: str | None = None) -> None:
        await self._call("leave")
        self.left.append((room_id, reason))
        room = self.rooms.get(room_id)
        if room is not None and room.membership(self.user_id) in ("invite", "join"):
            content: JsonDict = {"membership": "leave"}
            if reason:
                content["reason"] = reason
            self.add_event(room_id, self.user_id, "m.room.member", content, state_key=self.user_id)

    async def forget(self, room_id: str) -> None:
        await self._call("forget")
        room = self.rooms.get(room_id)
        if room is not None and room.membership(self.user_id) == "join":
            raise MatrixRequestError(
                f"{self.user_id} is in room {room_id}", errcode="M_UNKNOWN", status=400
            )
        self.forgotten.append(room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        await self._call("invite")
        room = self._joined_room(room_id)
        if room.membership(user_id) == "join":  # inviting again is fine
            raise MatrixRequestError(
                f"{user_id} is already in the room", errcode="M_FORBIDDEN", status=403
            )
        self.invites.append((room_id, user_id))
        self.add_event(
            room_id, self.user_id, "m.room.member", {"membership": "invite"}, state_key=user_id
        )

    async def room_state(self, room_id: str) -> list[MatrixEvent]:
        await self._call("room_state")
        return list(self._joined_room(room_id).state.values())

    async def joined_rooms(self) -> list[str]:
        await self._call("joined_rooms")
        self.joined_rooms_calls += 1
        return [r for r, room in self.rooms.items() if room.membership(self.user_id) == "join"]

    async def room_messages(
        self, room_id: str, start: str | None, *, backwards: bool = True, limit: int = 100
    ) -> MessagesPage:
        """Tokens are `t<index>` into the room's timeline (as `prev_batch` hands out).

        Like Synapse, a page with events always has an `end` token, even the one that
        reaches the edge of the room; only the (empty) page after it has none.
        """
        await self._call("room_messages")
        events = [e for _, e in self._joined_room(room_id).timeline]
        if backwards:
            index = len(events) if start is None else int(start[1:])
            low = max(0, index - limit)
            page = list(reversed(events[low:index]))
            return MessagesPage(events=page, end=f"t{low}" if page else None)
        index = 0 if start is None else int(start[1:])
        page = events[index : index + limit]
        return MessagesPage(events=page, end=f"t{index + len(page)}" if page else None)

    # -- MatrixPort: account data and profile ---------------------------------------------

    async def get_account_data(self, event_type: str) -> JsonDict | None:
        await self._call("get_account_data")
        content = self.account_data.get(event_type)
        return dict(content) if content is not None else None

    async def set_account_data(self, event_type: str, content: JsonDict) -> None:
        await self._call("set_account_data")
        self.account_data[event_type] = dict(content)
        self.account_data_writes.append((event_type, dict(content)))
        self._position += 1
        self._account_data_at[event_type] = self._position
        self._notify()

    async def display_name(self, user_id: str) -> str | None:
        await self._call("display_name")
        if user_id in self.display_names:
            return self.display_names[user_id]
        # Synapse gives every account its localpart as display name when it registers;
        # here a user exists once it is a member of some room.
        if any(("m.room.member", user_id) in room.state for room in self.rooms.values()):
            return user_id.split(":", 1)[0].lstrip("@")
        return None

    # -- MatrixPort: media ----------------------------------------------------------------

    async def download(self, mxc_uri: str, *, max_bytes: int) -> bytes:
        self._maybe_fail("download")
        self.downloads.append(mxc_uri)
        if not mxc_uri.startswith("mxc://"):
            raise MatrixRequestError(f"not an mxc:// URI: {mxc_uri!r}", errcode="M_INVALID_PARAM")
        if mxc_uri not in self.media:
            raise MatrixRequestError("not found", errcode="M_NOT_FOUND", status=404)
        data = self.media[mxc_uri]
        if len(data) > max_bytes:
            raise MatrixRequestError("too large", errcode="M_TOO_LARGE")
        return data

    async def upload(self, data: bytes, *, content_type: str, filename: str) -> str:
        self._maybe_fail("upload")
        mxc = self.add_media(data, "upload")
        self.uploads.append(UploadedMedia(mxc, data, content_type, filename))
        return mxc

    # -- MatrixPort: encryption (a stand-in cipher: XOR with the key byte) -------------------

    async def room_is_encrypted(self, room_id: str) -> bool:
        self._maybe_fail("room_is_encrypted")
        room = self.rooms.get(room_id)
        return room is not None and room.state_content("m.room.encryption") is not None

    async def upload_encrypted(self, data: bytes, *, content_type: str, filename: str) -> JsonDict:
        self._maybe_fail("upload_encrypted")
        key = len(self.media) % 250 + 1
        ciphertext = fake_cipher(data, key)
        mxc = self.add_media(ciphertext, "encrypted")
        self.uploads.append(UploadedMedia(mxc, ciphertext, content_type, filename))
        return fake_file_object(mxc, ciphertext, key)

    async def download_encrypted(self, file: JsonDict, *, max_bytes: int) -> bytes:
        ciphertext = await self.download(str(file["url"]), max_bytes=max_bytes)
        if hashlib.sha256(ciphertext).hexdigest() != file["hashes"]["sha256"]:
            raise MatrixRequestError("hash mismatch", errcode="M_BAD_FILE")
        return fake_cipher(ciphertext, int(file["key"]["k"]))


def fake_cipher(data: bytes, key: int) -> bytes:
    return bytes(b ^ key for b in data)


def fake_file_object(mxc: str, ciphertext: bytes, key: int) -> JsonDict:
    """A `file` object for the fake cipher (the real one carries a JWK and an IV)."""
    return {
        "url": mxc,
        "key": {"k": str(key)},
        "iv": "fake",
        "hashes": {"sha256": hashlib.sha256(ciphertext).hexdigest()},
        "v": "v2",
    }


@dataclass
class FakeCrypto:
    """`contracts.matrix.RoomCrypto`, in memory: reads an event once its session key is here.

    `readable` maps an encrypted event id to the plain event inside it; the event's
    `session_id` names its key; `deliver_key` is a room key arriving with a sync.
    """

    readable: dict[str, MatrixEvent] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    requested: list[str] = field(default_factory=list)  # event ids whose key was requested
    decrypt_calls: int = 0
    room_keys_received: int = 0
    _arrived: anyio.Event | None = None

    def encrypted(self, plain: MatrixEvent, *, session_id: str = "S1") -> MatrixEvent:
        """The `m.room.encrypted` event that holds `plain`."""
        self.readable[plain.event_id] = plain
        return MatrixEvent(
            event_id=plain.event_id,
            room_id=plain.room_id,
            sender=plain.sender,
            type="m.room.encrypted",
            content={"algorithm": "m.megolm.v1.aes-sha2", "session_id": session_id},
            origin_server_ts=plain.origin_server_ts,
        )

    def deliver_key(self, session_id: str) -> None:
        self.keys.add(session_id)
        self.room_keys_received += 1
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    async def decrypt(self, event: MatrixEvent) -> MatrixEvent | Undecryptable:
        self.decrypt_calls += 1
        await anyio.lowlevel.checkpoint()
        session_id = str(event.content.get("session_id"))
        if session_id in self.keys and event.event_id in self.readable:
            return self.readable[event.event_id]
        return Undecryptable(reason="no session", session_id=session_id)

    async def request_room_key(self, event: MatrixEvent) -> None:
        await anyio.lowlevel.checkpoint()
        self.requested.append(event.event_id)

    async def wait_room_keys(self, seen: int) -> int:
        while self.room_keys_received <= seen:
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()
        return self.room_keys_received
