"""The bot's entry point: one ledger entry in, Matrix actions out.

`SurfaceBot.handle` is called by the sync task for each recorded event, one
room at a time in order. It sorts the entry out (invite, command, answer to a
pending question, file, message for the agent, an edited question, a reaction
answering a question) and hands it to the part that does the work. Each
message it takes is marked read (an `m.read` receipt, best effort; with `signals`,
as the runtime wires it, noted and sent in the background once the bot is quiet:
tasks/room_signals.py). A message
written in a thread is answered in that thread; a rich reply gives the agent the
quoted message (tasks/bot/quotes.py); an edit of the last question is asked again
(tasks/bot/edits.py); ✅ / ❌ / 1️⃣ … 🔟 on the bot's question answer it
(tasks/bot/pending.py). The allow list is checked for every event, not only invites: a
user taken off it gets one notice per room of theirs (durably once) and no
answers; their rooms stay. Handling must be safe to repeat after a crash: sends use
transaction ids derived from the triggering event, room creation checks for a
room already created for the same trigger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import structlog

from contracts.matrix import MEDIA_MSGTYPES, MatrixError, MatrixEvent, MatrixPort
from contracts.platform import PlatformClient
from contracts.registry import AgentRegistry
from contracts.state import RoomRecord, RoomType
from contracts.store import LedgerEntry, Store
from tasks.bot import handlers, notices
from tasks.bot.chats import ChatRooms
from tasks.bot.context import CommandContext, Services, sayer
from tasks.bot.direct import DirectChat
from tasks.bot.edits import EDIT_WINDOW, edited_question
from tasks.bot.onboarding import Onboarding
from tasks.bot.pending import PendingAnswers, parse_choice, reaction_answer, reaction_choice
from tasks.bot.repair import RoomKind, RoomRepair, Unmanaged
from tasks.bot.routing import AgentRouting, AttachmentSource
from tasks.bot.table import COMMANDS
from tasks.catalogue import Catalogue
from tasks.commands import Command, parse_command, usage_of
from tasks.relations import annotation, replaced, replied_to, strip_reply_fallback, thread_root
from tasks.replies import Replier
from tasks.room_signals import RoomSignals
from tasks.sequence import PlatformChatSequence
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

TEXT_MSGTYPES = frozenset({"m.text", "m.emote"})


@dataclass(frozen=True)
class BotConfig:
    is_allowed: Callable[[str], bool] = lambda _user_id: True
    max_chats_per_user: int | None = None  # open (not archived) chats; None: no limit
    encrypt_rooms: bool = True  # new chat rooms start encrypted (SURFACE_ENCRYPT_ROOMS)
    edit_window: float = EDIT_WINDOW  # seconds an answered question may be edited and re-asked


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
        signals: RoomSignals | None = None,
    ) -> None:
        replier = Replier(matrix)
        self._signals = signals
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
        self._edit_window = config.edit_window

    async def handle(self, entry: LedgerEntry) -> None:
        """Handle one recorded event. Raises only for failures worth a retry (MatrixError)."""
        with self._handling():
            if entry.is_invite:
                await self.handle_invite(entry)
            elif entry.type == "m.room.message":
                await self.handle_message(entry)
                if self._is_allowed(entry.sender) and replaced(entry.content) is None:
                    # Once handled: on the path of the answer, a receipt would delay it by
                    # a round trip to the homeserver.
                    await self.mark_read(entry)
            elif entry.type == "m.reaction":
                await self.handle_reaction(entry)

    def _handling(self) -> AbstractContextManager[None]:
        return nullcontext() if self._signals is None else self._signals.handling()

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
        edit_of = replaced(entry.content)
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
        if edit_of is not None or "m.new_content" in entry.content:
            await self.handle_edit(entry, room)
            return
        msgtype = entry.content.get("msgtype")
        if msgtype in MEDIA_MSGTYPES:
            if self._on_media is not None:
                await self._on_media(entry, room)
            return
        body = entry.content.get("body")
        if msgtype not in TEXT_MSGTYPES or not isinstance(body, str) or not body.strip():
            return
        quoted_id = replied_to(entry.content)
        if quoted_id is not None:
            body = strip_reply_fallback(body)
        self.routing.quotes.remember(entry.event_id, entry.sender, body)
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
        quoted = None
        if quoted_id is not None:
            quoted = await self.routing.quotes.quoted(room.room_id, quoted_id)
        thread = thread_root(entry.content)
        await self.routing.route(entry, room, body, thread=thread, quoted=quoted)

    async def handle_edit(self, entry: LedgerEntry, room: RoomRecord) -> None:
        """The user edited a message: an edited question is asked again, its answer edited."""
        question = await edited_question(
            self.services.matrix,
            _as_event(entry),
            is_command=lambda text: parse_command(text, COMMANDS) is not None,
            window=self._edit_window,
        )
        if question is None:
            return
        quoted = None
        if question.quoted is not None:
            quoted = await self.routing.quotes.quoted(room.room_id, question.quoted)
        log.info("edit.asking_again", room_id=room.room_id, original=question.original.event_id)
        await self.routing.route(
            entry,
            room,
            question.text,
            thread=question.thread,
            quoted=quoted,
            replace=question.answer_id,
        )

    async def handle_reaction(self, entry: LedgerEntry) -> None:
        """✅ / ❌ on the bot's pending question, or a number on its `!load` list, answers it."""
        reaction = annotation(entry.content)
        room = self.services.store.get_room(entry.room_id)
        if (
            reaction is None
            or room is None
            or room.room_type is not RoomType.CHAT
            or entry.sender != room.matrix_user_id
            or not self._is_allowed(entry.sender)
        ):
            return
        pending = self.services.pending.get(room.room_id)
        if pending is None or pending.message_id != reaction.target:
            return  # a reaction like any other, or on a question no longer asked
        ctx = self._context(entry, room, argument="")
        if pending.question is not None:
            answer = reaction_answer(reaction.key)
            if answer is True:
                await handlers.yes(ctx)
            elif answer is False:
                await handlers.no(ctx)
        elif pending.snapshots:
            choice = reaction_choice(reaction.key)
            if choice is not None:
                await handlers.load_choice(ctx, choice, pending)

    async def mark_read(self, entry: LedgerEntry) -> None:
        """An `m.read` receipt for a message the bot took; cosmetic, so never a failure."""
        if self._signals is not None:
            self._signals.read(entry.room_id, entry.event_id)
            return
        try:
            await self.services.matrix.send_receipt(entry.room_id, entry.event_id)
        except MatrixError as exc:
            log.debug("receipt.failed", room_id=entry.room_id, error=str(exc))

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
        thread = thread_root(entry.content)
        say = sayer(self.services.replier, room.room_id, entry.event_id, thread=thread)
        return CommandContext(self.services, room, entry, argument, say)


def _as_event(entry: LedgerEntry) -> MatrixEvent:
    return MatrixEvent(
        event_id=entry.event_id,
        room_id=entry.room_id,
        sender=entry.sender,
        type=entry.type,
        content=entry.content,
        origin_server_ts=entry.origin_server_ts,
    )
