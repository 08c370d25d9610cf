"""Parsing chat commands: text in, a Command out. Pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

COMMANDS: dict[str, str] = {
    "help": "!help",
    "new": "!new [name]",
    "chats": "!chats",
    "rename": "!rename <name>",
    "archive": "!archive",
    "agents": "!agents",
    "agent": "!agent [id]",
    "clear": "!clear",
    "save": "!save [name]",
    "load": "!load",
    "context": "!context",
    "yes": "!yes",
    "no": "!no",
}
NEEDS_ARGUMENT = frozenset({"rename"})
TAKES_NO_ARGUMENT = frozenset(
    {"help", "chats", "archive", "agents", "clear", "load", "context", "yes", "no"}
)
MAX_NAME_LENGTH = 80


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # one of COMMANDS, or the unknown word
    argument: str = ""
    known: bool = True
    valid: bool = True

    @property
    def usage(self) -> str:
        return COMMANDS.get(self.name, "!help")


def parse_command(text: str) -> Command | None:
    """The command in `text`, or None when the text is a message for the agent.

    A command is a line starting with `!` followed by a letter; `!!text` is text.
    """
    stripped = text.strip()
    if not stripped.startswith("!") or len(stripped) < 2 or not stripped[1].isalpha():
        return None
    # Any whitespace ends the command word (clients send "!new\nname" on shift-enter).
    word, *rest = stripped[1:].split(maxsplit=1)
    name = word.lower()
    argument = " ".join(rest[0].split()) if rest else ""
    if name not in COMMANDS:
        return Command(name=word, argument=argument, known=False, valid=False)
    valid = True
    if name in NEEDS_ARGUMENT and not argument:
        valid = False
    if name in TAKES_NO_ARGUMENT and argument:
        valid = False
    if len(argument) > MAX_NAME_LENGTH:
        valid = False
    return Command(name=name, argument=argument, valid=valid)
