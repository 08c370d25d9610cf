"""The bot's entry point: one ledger entry in, Matrix actions out.

`SurfaceBot.handle` is called by the sync task for each recorded event, one
room at a time in order. It sorts the entry out (invite, command, answer to a
pending question, file, message for the agent) and hands it to the part that
does the work. The allow list is checked for every event, not only invites: a
user taken off it gets one notice per room of theirs (durably once) and no
answers; their rooms stay. Handling must be safe to repeat after a crash: sends use
transaction ids derived from the triggering event, room creation checks for a
room already created for the same trigger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from contracts.matrix import MEDIA_MSGTYPES, MatrixPort
from contracts.platform import PlatformClient
from contracts.registry import AgentRegistry
from contracts.state import RoomRecord, RoomType
from contracts.store import LedgerEntry, Store
from tasks.bot import handlers, notices
from tasks.bot.chats import ChatRooms
from tasks.bot.context import CommandContext, Services, sayer
from tasks.bot.direct import DirectChat
from tasks.bot.onboarding import Onboarding
from tasks.bot.pending import PendingAnswers, parse_choice
from tasks.bot.repair import RoomKind, RoomRepair, Unmanaged
from tasks.bot.routing import AgentRouting, AttachmentSource
from tasks.bot.table import COMMANDS
from tasks.catalogue import Catalogue
from tasks.commands import Command, parse_command, usage_of
from tasks.replies import Replier
from tasks.sequence import PlatformChatSequence
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

TEXT_MSGTYPES = frozenset({"m.text", "m.emote"})


@dataclass(frozen=True)
class BotConfig:
    is_allowed: Callable[[str], bool] = lambda _user_id: True
    max_chats_per_user: int | None = None  # open (not archived) chats; None: no limit
    encrypt_rooms: bool = True  # new chat rooms start encrypted (SURFACE_ENCRYPT_ROOMS)


MediaHandler = Callable[[LedgerEntry, RoomRecord], Awaitable[None]]


class SurfaceBot:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixPort,
        platform: PlatformClient,
        registry: AgentRegistry,
        sequence: PlatformChatSequence,
        catalogue: Catalogue,
        config: BotConfig,
        on_media: MediaHandler | None = None,
        take_attachments: AttachmentSource | None = None,
        streamer: TurnStreamer | None = None,
    ) -> None:
        replier = Replier(matrix)
        chats = ChatRooms(
            store=store,
            matrix=matrix,
            platform=platform,
            registry=registry,
            sequence=sequence,
            catalogue=catalogue,
            max_chats=config.max_chats_per_user,
            encrypt_rooms=config.encrypt_rooms,
        )
        self.services = Services(
            store=store,
            matrix=matrix,
            platform=platform,
            registry=registry,
            t=catalogue,
            replier=replier,
            chats=chats,
            pending=PendingAnswers(),
        )
        self.onboarding = Onboarding(
            store=store,
            matrix=matrix,
            registry=registry,
            catalogue=catalogue,
            replier=replier,
            chats=chats,
            is_allowed=config.is_allowed,
        )
        self.repair = RoomRepair(
            store=store,
            matrix=matrix,
            catalogue=catalogue,
            replier=replier,
            is_allowed=config.is_allowed,
        )
        self.routing = AgentRouting(
            self.services,
            streamer or TurnStreamer(matrix, platform, catalogue),
            take_attachments,
        )
        self.direct = DirectChat(self.services)
        self._on_media = on_media
        self._is_allowed = config.is_allowed

    async def handle(self, entry: LedgerEntry) -> None:
        """Handle one recorded event. Raises only for failures worth a retry (MatrixError)."""
        if entry.is_invite:
            await self.handle_invite(entry)
        elif entry.type == "m.room.message":
            await self.handle_message(entry)

    async def handle_invite(self, entry: LedgerEntry) -> None:
        """Onboard (or decline) the inviter; a returning user's direct chat invites them back."""
        await self.onboarding.handle_invite(entry)
        if not self._is_allowed(entry.sender):
            return
        store = self.services.store
        # Onboarding pointed the invited room to the Space: if it is a foreign room,
        # that was its one notice.
        notices.mark_given(store, notices.FOREIGN, entry.room_id)
        returning = store.room_origin(entry.event_id) is None  # no chat was created for it
        if returning and entry.content.get("is_direct") is True:
            await self.direct.welcome_back(entry)

    async def onboard(self, user_id: str, *, trigger: str, dm_room_id: str | None) -> None:
        """Create the user's Space and first chat, as an invite from them would."""
        await self.onboarding.onboard(user_id, trigger=trigger, dm_room_id=dm_room_id)

    async def handle_message(self, entry: LedgerEntry) -> None:
        store = self.services.store
        if not self._is_allowed(entry.sender):
            await self.refuse(entry)
            return
        found = await self.repair.sort_out(entry.room_id)
        if isinstance(found, Unmanaged):
            if found.kind is RoomKind.DIRECT and found.owner is not None:
                if entry.sender == found.owner:
                    notices.forget(store, notices.NOT_ALLOWED, entry.room_id)
                await self.direct.answer(entry, found.owner)
            else:
                await self.repair.answer_foreign(entry)
            return
        room = found
        if room.room_type is not RoomType.CHAT or entry.sender != room.matrix_user_id:
            return
        notices.forget(store, notices.NOT_ALLOWED, room.room_id)  # allowed (again)
        msgtype = entry.content.get("msgtype")
        if msgtype in MEDIA_MSGTYPES:
            if self._on_media is not None:
                await self._on_media(entry, room)
            return
        body = entry.content.get("body")
        if msgtype not in TEXT_MSGTYPES or not isinstance(body, str) or not body.strip():
            return
        if "m.new_content" in entry.content:  # the user edited a message: not a new turn
            return
        command = parse_command(body, COMMANDS)
        if command is not None:
            await self.run_command(command, entry, room)
            return
        pending = self.services.pending.get(room.room_id)
        choice = parse_choice(body) if pending is not None and pending.snapshots else None
        if pending is not None and choice is not None:
            ctx = self._context(entry, room, argument=body.strip())
            await handlers.load_choice(ctx, choice, pending)
            return
        await self.routing.route(entry, room, body)

    async def refuse(self, entry: LedgerEntry) -> None:
        """A message from someone not (or no longer) allowed: one notice in a room of theirs."""
        store = self.services.store
        room = store.get_room(entry.room_id)
        kind = self.repair.known_kind(entry.room_id) if room is None else None
        owner = room.matrix_user_id if room is not None else (kind.owner if kind else None)
        if owner != entry.sender or notices.given(store, notices.NOT_ALLOWED, entry.room_id):
            return
        await self.services.replier.say(
            entry.room_id, self.services.t("not_allowed"), reply_to=entry.event_id
        )
        notices.mark_given(store, notices.NOT_ALLOWED, entry.room_id)
        log.info("message.not_allowed", room_id=entry.room_id, user=entry.sender)

    async def run_command(self, command: Command, entry: LedgerEntry, room: RoomRecord) -> None:
        """Run a parsed command, or answer why it cannot run (unknown, wrong arguments)."""
        ctx = self._context(entry, room, argument=command.argument)
        t = self.services.t
        if not command.known:
            await ctx.say(t("unknown_command", command="!" + command.name))
        elif not command.valid:
            await ctx.say(t("usage", usage=usage_of(command, COMMANDS)))
        else:
            await COMMANDS[command.name].handler(ctx)

    def _context(self, entry: LedgerEntry, room: RoomRecord, *, argument: str) -> CommandContext:
        say = sayer(self.services.replier, room.room_id, entry.event_id)
        return CommandContext(self.services, room, entry, argument, say)
