"""Routing a chat message to the room's agent as one streamed turn."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from contracts.platform import UserTurn
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from tasks.bot.context import Services, binding_of, explain_unbound
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

AttachmentSource = Callable[[str], tuple[str, ...]]


class AgentRouting:
    def __init__(
        self,
        bot: Services,
        streamer: TurnStreamer,
        take_attachments: AttachmentSource | None = None,
    ) -> None:
        self.bot = bot
        self.streamer = streamer
        self._take_attachments = take_attachments

    async def route(self, entry: LedgerEntry, room: RoomRecord, text: str) -> None:
        """Send `text` (with the room's staged attachments) to the agent and stream the answer."""
        if room.archived:
            await self.bot.replier.say(
                room.room_id, self.bot.t("archived_room"), reply_to=entry.event_id
            )
            return
        binding = binding_of(room, self.bot.registry)
        if binding is None:
            await explain_unbound(self.bot, room, entry.event_id)
            return
        attachments = self._take_attachments(room.room_id) if self._take_attachments else ()
        turn = UserTurn(
            agent_id=binding.agent.id,
            platform_chat_id=binding.platform_chat_id,
            text=text,
            attachments=attachments,
            idempotency_key=entry.event_id,
            sender=entry.sender,
        )
        outcome = await self.streamer.run(room.room_id, turn)
        log.info(
            "turn.done",
            room_id=room.room_id,
            agent_id=binding.agent.id,
            chars=len(outcome.text),
            edits=outcome.edits,
            error=outcome.error,
            files=len(outcome.files),
        )
