"""The bot's behaviour: one ledger entry in, Matrix actions out.

surface.py     SurfaceBot.handle: sorts an entry out and hands it on
table.py       the command table (name, argument rule, help line, handler)
handlers.py    one function per command, given a CommandContext
context.py     CommandContext, the bot's collaborators, the "agent bound?" guard
pending.py     a room's pending `!yes`/`!no` question or `!load` list
onboarding.py  invite -> the user's Space and first chat
chats.py       creating a chat room once per trigger; re-binding a room
repair.py      rebuilding a forgotten managed room; direct chat or foreign room (kept verdict)
direct.py      the user's direct chat with the bot: `!help`, `!chats`, pointer to the Space
rejoin.py      inviting a user back to the rooms they left; the `!chats` overview
notices.py     notices said once per room, durably
routing.py     a message -> one streamed turn of the room's agent
"""

from __future__ import annotations

from tasks.bot.surface import BotConfig, SurfaceBot

__all__ = ["BotConfig", "SurfaceBot"]
