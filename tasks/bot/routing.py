"""Routing a chat message to the room's agent as one streamed turn.

The turn says which thread the message came from and carries the message it
replies to (tasks/bot/quotes.py); the answer goes into that thread.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from contracts.platform import QuotedMessage, UserTurn
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from tasks.bot.context import Services, binding_of, explain_unbound
from tasks.bot.quotes import Quotes
from tasks.turns import TurnStreamer

log = structlog.get_logger(__name__)

AttachmentSource = Callable[[str], tuple[str, ...]]


class AgentRouting:
    def __init__(
        self,
        bot: Services,
        streamer: TurnStreamer,
        take_attachments: AttachmentSource | None = None,
        quotes: Quotes | None = None,
    ) -> None:
        self.bot = bot
        self.streamer = streamer
        self._take_attachments = take_attachments
        self.quotes = quotes or Quotes(bot.matrix)

    async def route(
        self,
        entry: LedgerEntry,
        room: RoomRecord,
        text: str,
        *,
        thread: str | None = None,
        quoted: QuotedMessage | None = None,
        replace: str | None = None,
    ) -> None:
        """Send `text` to the agent and stream the answer (into `thread`, if any).

        A new message takes the room's staged attachments along; an edited question
        (`replace`: the bot's answer to edit) does not.
        """
        if room.archived:
            await self.bot.replier.say(
                room.room_id, self.bot.t("archived_room"), reply_to=entry.event_id, thread=thread
            )
            return
        binding = binding_of(room, self.bot.registry)
        if binding is None:
            await explain_unbound(self.bot, room, entry.event_id, thread=thread)
            return
        attachments: tuple[str, ...] = ()
        if replace is None and self._take_attachments is not None:
            attachments = self._take_attachments(room.room_id)
        turn = UserTurn(
            agent_id=binding.agent.id,
            platform_chat_id=binding.platform_chat_id,
            text=text,
            attachments=attachments,
            idempotency_key=entry.event_id,
            sender=entry.sender,
            thread_id=thread,
            quoted=quoted,
        )
        outcome = await self.streamer.run(room.room_id, turn, replace=replace)
        if outcome.message_event_id is not None and outcome.text:
            self.quotes.remember(outcome.message_event_id, self.bot.matrix.user_id, outcome.text)
        log.info(
            "turn.done",
            room_id=room.room_id,
            agent_id=binding.agent.id,
            chars=len(outcome.text),
            edits=outcome.edits,
            error=outcome.error,
            files=len(outcome.files),
            thread=thread is not None,
            quoted=quoted is not None,
            edited=replace is not None,
        )
