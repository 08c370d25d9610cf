"""The user's direct chat with the bot: `!help`, `!chats`, and where their chats are.

The direct chat is where a user starts (an invite there onboards them) and
where they come back: inviting the bot to a direct chat again invites them back
to the rooms they left (tasks/bot/rejoin.py). Messages from its owner get an
answer; anyone else there is ignored.
"""

from __future__ import annotations

from contracts.store import LedgerEntry
from tasks.bot.context import Services
from tasks.bot.onboarding import space_name_of
from tasks.bot.rejoin import chats_overview, reinvite_left
from tasks.bot.table import COMMANDS
from tasks.commands import help_text, parse_command


class DirectChat:
    def __init__(self, bot: Services) -> None:
        self.bot = bot

    async def answer(self, entry: LedgerEntry, owner: str) -> None:
        """Answer the owner's message in their direct chat with the bot."""
        body = entry.content.get("body")
        if entry.sender != owner or not isinstance(body, str):
            return
        if "m.new_content" in entry.content:  # an edit: not a new message
            return
        bot = self.bot
        user = bot.store.get_user(owner)
        space = space_name_of(bot.store, user)
        command = parse_command(body, COMMANDS)
        if command is not None and command.known and command.name == "help":
            text = help_text(COMMANDS, bot.t) + "\n\n" + bot.t("help_direct", space=space)
        elif command is not None and command.known and command.name == "chats":
            text = await chats_overview(bot, owner, here=None)
        elif user is not None and user.space_id:
            text = bot.t("unmanaged_room", space=space)
        else:
            text = bot.t("unmanaged_room_no_space")
        await bot.replier.say(entry.room_id, text, reply_to=entry.event_id)

    async def welcome_back(self, entry: LedgerEntry) -> None:
        """An onboarded user invited the bot to a direct chat again: invite them back in."""
        rejoin = await reinvite_left(self.bot.store, self.bot.matrix, entry.sender)
        if not rejoin.invited:
            return
        rooms = ", ".join(
            f"{room.chat_id} — {room.display_name}" if room.chat_id else (room.display_name or "")
            for room in rejoin.invited
        )
        await self.bot.replier.say(
            entry.room_id,
            self.bot.t("rejoin_invited", rooms=rooms),
            reply_to=entry.event_id,
            purpose="rejoin",
        )
