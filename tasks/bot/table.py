"""The command table: every `!command` the bot understands, declared once.

Parsing, usage errors and `!help` are all derived from it. Adding a command is
one `CommandSpec` here, its handler (tasks/bot/handlers.py) and its help line
(`help_<name>` in tasks/catalogue.py, each locale).
"""

from __future__ import annotations

from tasks.bot import handlers
from tasks.bot.context import CommandContext, Handler
from tasks.commands import Arg, CommandSpec, CommandTable, command_table, help_text


async def show_help(ctx: CommandContext) -> None:
    await ctx.say(help_text(COMMANDS, ctx.bot.t))


COMMANDS: CommandTable[Handler] = command_table(
    [
        CommandSpec("help", Arg.NONE, show_help),
        CommandSpec("new", Arg.OPTIONAL, handlers.new_chat, "help_new"),
        CommandSpec("chats", Arg.NONE, handlers.list_chats, "help_chats"),
        CommandSpec("rename", Arg.REQUIRED, handlers.rename, "help_rename"),
        CommandSpec("archive", Arg.NONE, handlers.archive, "help_archive"),
        CommandSpec("agents", Arg.NONE, handlers.list_agents, "help_agents"),
        CommandSpec("agent", Arg.OPTIONAL, handlers.show_or_switch_agent, "help_agent", "id"),
        CommandSpec("clear", Arg.NONE, handlers.clear, "help_clear"),
        CommandSpec("save", Arg.OPTIONAL, handlers.save, "help_save"),
        CommandSpec("load", Arg.NONE, handlers.load, "help_load"),
        CommandSpec("context", Arg.NONE, handlers.context, "help_context"),
        CommandSpec("yes", Arg.NONE, handlers.yes, "help_yes_no"),
        CommandSpec("no", Arg.NONE, handlers.no),  # on the line of `!yes`
    ]
)
