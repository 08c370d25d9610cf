"""The bot's behaviour: one ledger entry in, Matrix actions out.

`SurfaceBot.handle` is called by the sync task for each recorded event, one
room at a time in order. Handling must be safe to repeat after a crash: sends
use transaction ids derived from the triggering event, room creation checks
for a room already created for the same trigger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import structlog

from contracts.matrix import MatrixError, MatrixPort
from contracts.platform import PlatformClient, PlatformError, Snapshot, UserTurn
from contracts.registry import AgentEntry, AgentRegistry
from contracts.state import RoomRecord, RoomType, UserRecord, chat_index
from contracts.store import LedgerEntry, Store
from tasks.catalogue import Catalogue
from tasks.commands import Command, parse_command
from tasks.rebuild import room_from_state
from tasks.replies import Replier
from tasks.rooms import (
    create_chat_room,
    create_space,
    link_child,
    new_chat_record,
    write_room_marker,
    write_space_marker,
)
from tasks.sequence import PlatformChatSequence
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

INVITE_EVENT_TYPE = "lambda.surface.invite"  # synthetic ledger entries for invites
MEDIA_MSGTYPES = frozenset({"m.file", "m.image", "m.audio", "m.video"})
TEXT_MSGTYPES = frozenset({"m.text", "m.emote"})
PENDING_TTL = 600.0


def invite_entry_id(room_id: str) -> str:
    return f"invite:{room_id}"


@dataclass
class _Pending:
    """Non-durable UX state of one room: a question awaiting !yes/!no, or a !load list."""

    confirm: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    since: float = 0.0


@dataclass(frozen=True)
class BotConfig:
    is_allowed: Callable[[str], bool] = lambda _user_id: True
    encrypt_rooms: bool = True  # new chat rooms start encrypted (SURFACE_ENCRYPT_ROOMS)


MediaHandler = Callable[[LedgerEntry, RoomRecord], Awaitable[None]]
AttachmentSource = Callable[[str], tuple[str, ...]]


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
        self.store = store
        self.matrix = matrix
        self.platform = platform
        self.registry = registry
        self.sequence = sequence
        self.t = catalogue
        self.config = config
        self.replier = Replier(matrix)
        self.streamer = streamer or TurnStreamer(matrix, platform, catalogue)
        self._on_media = on_media
        self._take_attachments = take_attachments
        self._pending: dict[str, _Pending] = {}
        self._user_locks: dict[str, anyio.Lock] = {}
        self._onboarding_locks: dict[str, anyio.Lock] = {}

    # -- entry point ------------------------------------------------------------------------

    async def handle(self, entry: LedgerEntry) -> None:
        """Handle one recorded event. Raises only for failures worth a retry (MatrixError)."""
        if entry.type == INVITE_EVENT_TYPE:
            await self.handle_invite(entry)
        elif entry.type == "m.room.message":
            await self.handle_message(entry)

    # -- onboarding -------------------------------------------------------------------------

    async def handle_invite(self, entry: LedgerEntry) -> None:
        inviter = entry.sender
        room_id = entry.room_id
        if not self.config.is_allowed(inviter):
            log.info("invite.declined", room_id=room_id, inviter=inviter)
            await self.matrix.leave(room_id, reason="not on this bot's allow list")
            return
        await self.matrix.join(room_id)
        await self.onboard(inviter, trigger=entry.event_id, dm_room_id=room_id)

    async def onboard(self, user_id: str, *, trigger: str, dm_room_id: str | None) -> None:
        """Create the user's Space and first chat (each step skipped when already done).

        Serialised per user, so two invites at once cannot make two Spaces.
        """
        lock = self._onboarding_locks.setdefault(user_id, anyio.Lock())
        async with lock:
            await self._onboard_locked(user_id, trigger=trigger, dm_room_id=dm_room_id)

    async def _onboard_locked(self, user_id: str, *, trigger: str, dm_room_id: str | None) -> None:
        known = self.store.get_user(user_id)
        resumed = self.store.get_meta(f"origin:{trigger}") is not None  # same invite, re-handled
        if known is not None and known.space_id and self.store.list_chats(user_id) and not resumed:
            log.info("invite.already_onboarded", user=user_id, space_id=known.space_id)
            await self._invite_quietly(known.space_id, user_id)
            if dm_room_id is not None:
                await self.replier.say(
                    dm_room_id,
                    self.t("unmanaged_room", space=self._space_name_of(known)),
                    reply_to=trigger,
                )
            return
        display = await self._display_name(user_id)
        user = self.store.get_user(user_id) or UserRecord(
            matrix_user_id=user_id, selected_agent_id=self.registry.default.id
        )
        space_name = self.t("space_name", name=display)
        if user.space_id is None:
            space_id = await create_space(self.matrix, user, space_name)
            user = user.model_copy(update={"space_id": space_id})
            self.store.put_user(user)
            self.store.put_room(
                RoomRecord(
                    room_id=space_id,
                    room_type=RoomType.SPACE,
                    matrix_user_id=user_id,
                    display_name=space_name,
                )
            )
            log.info("onboarding.space_created", user=user_id, space_id=space_id)
        room = await self.create_chat(user, name=None, trigger=trigger)
        agent = self.registry.get(room.agent_id) or self.registry.default
        await self.replier.say(
            room.room_id,
            self.t("welcome", name=display, agent=agent.name, space=space_name),
            reply_to=trigger,
            purpose="welcome",
        )
        if dm_room_id is not None:
            await self.replier.say(
                dm_room_id, self.t("unmanaged_room", space=space_name), reply_to=trigger
            )

    async def create_chat(self, user: UserRecord, *, name: str | None, trigger: str) -> RoomRecord:
        """Create a chat room for `trigger` unless one was already created for it.

        Serialised per user: rooms run concurrently, and two `!new` in two rooms of
        one user must not both take the same chat index.
        """
        lock = self._user_locks.setdefault(user.matrix_user_id, anyio.Lock())
        async with lock:
            return await self._create_chat_locked(user, name=name, trigger=trigger)

    async def _create_chat_locked(
        self, user: UserRecord, *, name: str | None, trigger: str
    ) -> RoomRecord:
        existing = self.store.get_meta(f"origin:{trigger}")
        if existing and (room := self.store.get_room(existing)) is not None:
            # Handled before a crash: the room exists; the link may not (idempotent).
            if room.space_id is not None:
                await link_child(self.matrix, room.space_id, room.room_id, order=room.chat_id)
            return room
        user = self.store.get_user(user.matrix_user_id) or user
        agent = self._selected_agent(user)
        display_name = name or self.t("chat_name", index=user.next_chat_index)
        platform_chat_id = await self.sequence.allocate()
        draft = new_chat_record(
            user,
            room_id="",
            display_name=display_name,
            agent_id=agent.id if agent else None,
            platform_chat_id=platform_chat_id,
        )
        room_id = await create_chat_room(
            self.matrix, draft, origin_event_id=trigger, encrypted=self.config.encrypt_rooms
        )
        room = draft.model_copy(update={"room_id": room_id})
        advanced = user.model_copy(update={"next_chat_index": user.next_chat_index + 1})
        self.store.add_chat_room(advanced, room)
        self.store.set_meta(f"origin:{trigger}", room_id)
        # Linked only after it is recorded: a retry of a failed link reuses this room.
        assert room.space_id is not None
        await link_child(self.matrix, room.space_id, room_id, order=room.chat_id)
        log.info(
            "chat.created",
            user=user.matrix_user_id,
            room_id=room_id,
            chat_id=room.chat_id,
            agent_id=room.agent_id,
            platform_chat_id=platform_chat_id,
        )
        return room

    # -- messages ---------------------------------------------------------------------------

    async def handle_message(self, entry: LedgerEntry) -> None:
        room = self.store.get_room(entry.room_id) or await self.repair_room(entry.room_id)
        if room is None:
            await self._answer_unmanaged(entry)
            return
        if room.room_type is not RoomType.CHAT or entry.sender != room.matrix_user_id:
            return
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
        command = parse_command(body)
        if command is not None:
            await self.run_command(command, entry, room)
            return
        pending = self._pending_for(room.room_id)
        if pending is not None and pending.snapshots and body.strip().isdigit():
            await self._load_choice(int(body.strip()), entry, room, pending)
            return
        await self.route_to_agent(entry, room, body)

    async def route_to_agent(self, entry: LedgerEntry, room: RoomRecord, text: str) -> None:
        if room.archived:
            await self.replier.say(room.room_id, self.t("archived_room"), reply_to=entry.event_id)
            return
        agent = self.registry.get(room.agent_id)
        if agent is None or room.platform_chat_id is None:
            await self._say_agent_problem(room, entry)
            return
        attachments = self._take_attachments(room.room_id) if self._take_attachments else ()
        turn = UserTurn(
            agent_id=agent.id,
            platform_chat_id=room.platform_chat_id,
            text=text,
            attachments=attachments,
            idempotency_key=entry.event_id,
            sender=entry.sender,
        )
        outcome = await self.streamer.run(room.room_id, turn)
        log.info(
            "turn.done",
            room_id=room.room_id,
            agent_id=agent.id,
            chars=len(outcome.text),
            edits=outcome.edits,
            error=outcome.error,
            files=len(outcome.files),
        )

    # -- commands ---------------------------------------------------------------------------

    async def run_command(self, command: Command, entry: LedgerEntry, room: RoomRecord) -> None:
        say = self._sayer(room.room_id, entry.event_id)
        if not command.known:
            await say(self.t("unknown_command", command="!" + command.name))
            return
        if not command.valid:
            await say(self.t("usage", usage=command.usage))
            return
        handler = getattr(self, f"_cmd_{command.name}")
        await handler(command, entry, room, say)

    async def _cmd_help(self, _c: Command, _e: LedgerEntry, _r: RoomRecord, say: _Say) -> None:
        await say(self.t("help"))

    async def _cmd_new(self, c: Command, e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        user = self._user_of(room)
        new_room = await self.create_chat(user, name=c.argument or None, trigger=e.event_id)
        agent = self.registry.get(new_room.agent_id)
        await say(
            self.t(
                "new_created",
                name=new_room.display_name,
                chat_id=new_room.chat_id,
                agent=agent.name if agent else new_room.agent_id,
            )
        )

    async def _cmd_chats(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        chats = self.store.list_chats(room.matrix_user_id)
        if not chats:
            await say(self.t("chats_empty"))
            return
        lines = [self.t("chats_header"), ""]
        for chat in chats:
            lines.append(
                self.t(
                    "chats_line",
                    chat_id=chat.chat_id,
                    name=chat.display_name,
                    archived=self.t("chats_archived") if chat.archived else "",
                    here=self.t("chats_here") if chat.room_id == room.room_id else "",
                )
            )
        await say("\n".join(lines))

    async def _cmd_rename(self, c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        renamed = room.model_copy(update={"display_name": c.argument})
        await self.matrix.send_state(room.room_id, "m.room.name", {"name": c.argument})
        await write_room_marker(self.matrix, renamed)
        self.store.put_room(renamed)
        await say(self.t("renamed", name=c.argument))

    async def _cmd_archive(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        self._ask(room.room_id, "archive")
        await say(self.t("archive_confirm", name=room.display_name))

    async def _cmd_clear(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        self._ask(room.room_id, "clear")
        await say(self.t("clear_confirm"))

    async def _cmd_yes(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        pending = self._pending_for(room.room_id)
        question = pending.confirm if pending else None
        self._pending.pop(room.room_id, None)
        if question == "archive":
            archived = room.model_copy(update={"archived": True})
            await write_room_marker(self.matrix, archived)
            self.store.put_room(archived)
            await say(self.t("archived", name=room.display_name))
        elif question == "clear":
            rotated = await self._rotate(room, agent_id=room.agent_id)
            await say(self.t("cleared", platform_chat_id=rotated.platform_chat_id))
        else:
            await say(self.t("nothing_pending"))

    async def _cmd_no(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        had = self._pending.pop(room.room_id, None)
        await say(self.t("cancelled") if had else self.t("nothing_pending"))

    async def _cmd_agents(self, _c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        lines = [self.t("agents_header"), ""]
        for agent in self.registry:
            lines.append(
                self.t(
                    "agents_line",
                    id=agent.id,
                    name=agent.name,
                    description=agent.description or "—",
                    default=self.t("agents_default") if agent is self.registry.default else "",
                    current=self.t("agents_current") if agent.id == room.agent_id else "",
                )
            )
        await say("\n".join(lines))

    async def _cmd_agent(self, c: Command, e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        if not c.argument:
            agent = self.registry.get(room.agent_id)
            if agent is None:
                await self._say_agent_problem(room, e)
            else:
                await say(self.t("agent_show", name=agent.name, id=agent.id))
            return
        target = self.registry.get(c.argument)
        if target is None:
            await say(self.t("agent_unknown", id=c.argument))
            return
        user = self._user_of(room)
        if user.selected_agent_id != target.id:
            user = user.model_copy(update={"selected_agent_id": target.id})
            await write_space_marker(self.matrix, user)
            self.store.put_user(user)
        if room.agent_id == target.id:
            await say(self.t("agent_same", name=target.name))
            return
        await self._rotate(room, agent_id=target.id)
        await say(self.t("agent_switched", name=target.name, id=target.id))

    async def _cmd_save(self, c: Command, _e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        agent = self.registry.get(room.agent_id)
        if agent is None or room.platform_chat_id is None:
            await self._say_agent_problem(room, _e)
            return
        name = c.argument or datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        try:
            snap = await self.platform.save_snapshot(
                agent.id, room.platform_chat_id, owner=room.matrix_user_id, name=name
            )
        except PlatformError as exc:
            await say(self.t("platform_error", reason=_reason(exc)))
            return
        await say(self.t("saved", name=snap.name, turns=snap.turns))

    async def _cmd_load(self, _c: Command, e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        agent = self.registry.get(room.agent_id)
        if agent is None:
            await self._say_agent_problem(room, e)
            return
        try:
            snaps = await self.platform.list_snapshots(agent.id, owner=room.matrix_user_id)
        except PlatformError as exc:
            await say(self.t("platform_error", reason=_reason(exc)))
            return
        if not snaps:
            await say(self.t("snapshots_empty"))
            return
        self._pending[room.room_id] = _Pending(snapshots=snaps, since=anyio.current_time())
        lines = [self.t("snapshots_header"), ""]
        for n, snap in enumerate(snaps, start=1):
            lines.append(
                self.t(
                    "snapshots_line",
                    n=n,
                    name=snap.name,
                    created_at=snap.created_at,
                    turns=snap.turns,
                )
            )
        await say("\n".join(lines))

    async def _load_choice(
        self, choice: int, entry: LedgerEntry, room: RoomRecord, pending: _Pending
    ) -> None:
        say = self._sayer(room.room_id, entry.event_id)
        agent = self.registry.get(room.agent_id)
        if not 1 <= choice <= len(pending.snapshots):
            await say(self.t("load_bad_choice", count=len(pending.snapshots)))
            return
        self._pending.pop(room.room_id, None)
        if agent is None or room.platform_chat_id is None:
            await self._say_agent_problem(room, entry)
            return
        snap = pending.snapshots[choice - 1]
        try:
            info = await self.platform.load_snapshot(
                agent.id,
                room.platform_chat_id,
                owner=room.matrix_user_id,
                snapshot_id=snap.snapshot_id,
            )
        except PlatformError as exc:
            await say(self.t("platform_error", reason=_reason(exc)))
            return
        await say(self.t("loaded", name=snap.name, turns=info.turns))

    async def _cmd_context(self, _c: Command, e: LedgerEntry, room: RoomRecord, say: _Say) -> None:
        agent = self.registry.get(room.agent_id)
        turns: object = "?"
        snapshots: object = "?"
        details = ""
        if agent is not None and room.platform_chat_id is not None:
            try:
                info = await self.platform.context_info(agent.id, room.platform_chat_id)
                turns, snapshots = info.turns, info.snapshots
                details = "".join(f"- {k}: {v}\n" for k, v in sorted(info.details.items()))
            except PlatformError as exc:
                details = f"- platform: {_reason(exc)}\n"
        await say(
            self.t(
                "context",
                chat_id=room.chat_id,
                name=room.display_name,
                agent=agent.name if agent else "—",
                agent_id=room.agent_id or "—",
                platform_chat_id=room.platform_chat_id or "—",
                turns=turns,
                snapshots=snapshots,
                details=details,
            )
        )
        if agent is None:
            await self._say_agent_problem(room, e, purpose="agent-problem")

    # -- repair and helpers -----------------------------------------------------------------

    async def repair_room(self, room_id: str) -> RoomRecord | None:
        """Rebuild one room's record from its Matrix state (a managed room we forgot)."""
        try:
            state = await self.matrix.room_state(room_id)
        except MatrixError as exc:
            log.info("repair.no_state", room_id=room_id, error=str(exc))
            return None
        room = room_from_state(room_id, state, bot_user_id=self.matrix.user_id)
        if room is None:
            return None
        self.store.put_room(room)
        user = self.store.get_user(room.matrix_user_id)
        # The next `!new` must not take this room's chat id again.
        next_index = (chat_index(room.chat_id or "") or 0) + 1
        if user is None:
            self.store.put_user(
                UserRecord(
                    matrix_user_id=room.matrix_user_id,
                    space_id=room.space_id,
                    selected_agent_id=room.agent_id,
                    next_chat_index=next_index,
                )
            )
        elif user.next_chat_index < next_index:
            self.store.put_user(user.model_copy(update={"next_chat_index": next_index}))
        log.warning("repair.room_restored", room_id=room_id, chat_id=room.chat_id)
        return room

    async def _answer_unmanaged(self, entry: LedgerEntry) -> None:
        if entry.sender == self.matrix.user_id or not self.config.is_allowed(entry.sender):
            return
        body = entry.content.get("body")
        if not isinstance(body, str):
            return
        user = self.store.get_user(entry.sender)
        text = (
            self.t("unmanaged_room", space=self._space_name_of(user))
            if user is not None and user.space_id
            else self.t("unmanaged_room_no_space")
        )
        await self.replier.say(entry.room_id, text, reply_to=entry.event_id)

    def _space_name_of(self, user: UserRecord | None) -> str:
        if user is None or user.space_id is None:
            return "Lambda"
        space = self.store.get_room(user.space_id)
        return (space.display_name if space else None) or "Lambda"

    async def _rotate(self, room: RoomRecord, *, agent_id: str | None) -> RoomRecord:
        """Give the room a fresh platform chat (and maybe agent); disconnect the old one."""
        old_agent, old_chat = room.agent_id, room.platform_chat_id
        rotated = room.model_copy(
            update={"agent_id": agent_id, "platform_chat_id": await self.sequence.allocate()}
        )
        await write_room_marker(self.matrix, rotated)
        self.store.put_room(rotated)
        if old_agent is not None and old_chat is not None and old_agent in self.registry:
            try:
                await self.platform.disconnect(old_agent, old_chat)
            except PlatformError as exc:
                log.warning("platform.disconnect_failed", agent_id=old_agent, error=str(exc))
        log.info(
            "chat.rotated",
            room_id=room.room_id,
            agent_id=agent_id,
            old_platform_chat_id=old_chat,
            platform_chat_id=rotated.platform_chat_id,
        )
        return rotated

    async def _say_agent_problem(
        self, room: RoomRecord, entry: LedgerEntry, *, purpose: str = "reply"
    ) -> None:
        key = "agent_none" if room.agent_id is None else "agent_missing"
        await self.replier.say(
            room.room_id, self.t(key, id=room.agent_id), reply_to=entry.event_id, purpose=purpose
        )

    def _selected_agent(self, user: UserRecord) -> AgentEntry | None:
        return self.registry.get(user.selected_agent_id) or self.registry.default

    def _user_of(self, room: RoomRecord) -> UserRecord:
        return self.store.get_user(room.matrix_user_id) or UserRecord(
            matrix_user_id=room.matrix_user_id,
            space_id=room.space_id,
            selected_agent_id=room.agent_id,
        )

    def _ask(self, room_id: str, question: str) -> None:
        self._pending[room_id] = _Pending(confirm=question, since=anyio.current_time())

    def _pending_for(self, room_id: str) -> _Pending | None:
        pending = self._pending.get(room_id)
        if pending is not None and anyio.current_time() - pending.since > PENDING_TTL:
            del self._pending[room_id]
            return None
        return pending

    def _sayer(self, room_id: str, trigger: str) -> _Say:
        async def say(text: str) -> None:
            await self.replier.say(room_id, text, reply_to=trigger)

        return say

    async def _display_name(self, user_id: str) -> str:
        try:
            name = await self.matrix.display_name(user_id)
        except MatrixError:
            name = None
        return name or user_id.split(":", 1)[0].lstrip("@")

    async def _invite_quietly(self, room_id: str, user_id: str) -> None:
        try:
            await self.matrix.invite(room_id, user_id)
        except MatrixError as exc:  # already joined or invited: nothing to do
            log.debug("invite.skipped", room_id=room_id, error=str(exc))


_Say = Callable[[str], Awaitable[None]]


def _reason(error: PlatformError) -> str:
    return str(error).strip() or error.code.replace("_", " ")
