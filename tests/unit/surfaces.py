"""A SurfaceBot on the fake homeserver, the real SQLite store and the echo platform.

The one builder the bot's unit tests share (test_bot.py, test_bot_rooms.py,
test_bot_hardening.py, test_conversation.py, test_room_face.py): `build_bot` makes a bot
with the options a test varies (registry, allow list, chat cap, edit window), `Surface`
holds it with its fakes and drives it as a user would, `make_surface` makes both. The
`store` and `surface` fixtures in conftest.py use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes import FakeMatrix

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import JsonDict
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from runtime.platforms.echo import EchoPlatform
from runtime.store import SqliteStore
from tasks.bot import BotConfig, SurfaceBot
from tasks.bot.edits import EDIT_WINDOW
from tasks.catalogue import Catalogue
from tasks.room_signals import RoomSignals
from tasks.sequence import PlatformChatSequence
from tasks.turns import TurnStreamer

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
EVE = "@eve:elsewhere.net"
ECHO = AgentEntry(id="echo", name="Echo", description="Repeats you", default=True)
HELPER = AgentEntry(id="helper", name="Helper", description="Helps")
REGISTRY = AgentRegistry([ECHO, HELPER])
t = Catalogue("en")


def allowed(user_id: str) -> bool:
    return user_id.endswith(":example.org")


def build_bot(
    store: SqliteStore,
    matrix: FakeMatrix,
    platform: EchoPlatform,
    *,
    registry: AgentRegistry = REGISTRY,
    is_allowed: Callable[[str], bool] = allowed,
    max_chats_per_user: int | None = None,
    edit_window: float = EDIT_WINDOW,
    signals: RoomSignals | None = None,
) -> SurfaceBot:
    """A new bot (a new process: nothing in memory) on `store`, `matrix` and `platform`;
    with `signals`, typing and receipts go through it (tasks/room_signals.py)."""
    config = BotConfig(
        is_allowed=is_allowed, max_chats_per_user=max_chats_per_user, edit_window=edit_window
    )
    return SurfaceBot(
        store=store,
        matrix=matrix,
        platform=platform,
        registry=registry,
        sequence=PlatformChatSequence(store, matrix),
        catalogue=t,
        config=config,
        # Long enough that a turn is one message: streaming has its own tests.
        streamer=TurnStreamer(matrix, platform, t, edit_interval=60.0, signals=signals),
        signals=signals,
    )


@dataclass
class Surface:
    matrix: FakeMatrix
    store: SqliteStore
    platform: EchoPlatform
    bot: SurfaceBot

    def restart(
        self,
        *,
        store: SqliteStore | None = None,
        registry: AgentRegistry = REGISTRY,
        is_allowed: Callable[[str], bool] = allowed,
    ) -> None:
        """A new bot process on the same homeserver and platform, on `store` if given
        (a wiped database) or the same one; the options are the defaults unless given."""
        if store is not None:
            self.store = store
        self.bot = build_bot(
            self.store, self.matrix, self.platform, registry=registry, is_allowed=is_allowed
        )

    async def invite(self, user_id: str = ALICE) -> LedgerEntry:
        """`user_id` invites the bot to a DM; the bot handles the invite."""
        room_id = self.matrix.add_invite(user_id)
        entry = LedgerEntry.invite(room_id, inviter=user_id, is_direct=True)
        await self.bot.handle(entry)
        return entry

    async def onboard(self, user_id: str = ALICE) -> RoomRecord:
        """Invite, then join the first chat as the user would; returns the chat room."""
        await self.invite(user_id)
        room = self.chat(user_id, "C1")
        self.matrix.user_joins(room.room_id, user_id)
        return room

    async def send(self, room_id: str, text: str, *, sender: str = ALICE, **extra: Any) -> str:
        """A user message arrives and is handled; returns its event id."""
        event = self.matrix.add_message(room_id, sender, text, **extra)
        await self.bot.handle(LedgerEntry.of_event(event))
        return event.event_id

    def chat(self, user_id: str, chat_id: str) -> RoomRecord:
        room = self.store.find_chat_room(user_id, chat_id)
        assert room is not None, f"no {chat_id} for {user_id}"
        return room

    def room(self, room_id: str) -> RoomRecord:
        room = self.store.get_room(room_id)
        assert room is not None
        return room

    def answers(self, room_id: str, event_id: str) -> list[JsonDict]:
        return [c for c in self.matrix.messages_in(room_id) if c.get(REPLY_TO_FIELD) == event_id]

    def answer(self, room_id: str, event_id: str) -> str:
        [content] = self.answers(room_id, event_id)
        body = content["body"]
        assert isinstance(body, str)
        return body


def make_surface(
    store: SqliteStore,
    *,
    display_name: str | None = "Alice",
    registry: AgentRegistry = REGISTRY,
    is_allowed: Callable[[str], bool] = allowed,
    max_chats_per_user: int | None = None,
    edit_window: float = EDIT_WINDOW,
    signals: RoomSignals | None = None,
    matrix: FakeMatrix | None = None,
) -> Surface:
    """A fake homeserver (`matrix`, else a fresh one; Alice shown as `display_name`) and echo
    platform, and a bot on them and `store` built with these options (see `build_bot`)."""
    matrix = matrix or FakeMatrix()
    if display_name is not None:
        matrix.display_names[ALICE] = display_name
    platform = EchoPlatform()
    bot = build_bot(
        store,
        matrix,
        platform,
        registry=registry,
        is_allowed=is_allowed,
        max_chats_per_user=max_chats_per_user,
        edit_window=edit_window,
        signals=signals,
    )
    return Surface(matrix, store, platform, bot)
