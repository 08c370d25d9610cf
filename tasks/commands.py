"""Chat commands as data: a table of specs, parsing against it, and the help derived from it.

Pure, no I/O. A `CommandSpec` declares everything about one command in one place
(name, argument rule, help line, handler); the bot's table is `tasks.bot.table.COMMANDS`.
The handler type is left open here so this module needs nothing from the bot.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from tasks.catalogue import Catalogue

MAX_NAME_LENGTH = 80
# Unicode's Bidi_Control characters: they reorder the text around them (a name
# that displays as something else). Dropped from names, as are control characters.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Cc: C0/C1 controls (NUL, BEL, ESC, ...); Cs: lone surrogates (not encodable);
# Zl, Zp: line and paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
H = TypeVar("H", covariant=True)  # a table of handlers is a table of objects


class Arg(enum.Enum):
    """What a command accepts after its name."""

    NONE = "none"  # `!chats`
    OPTIONAL = "optional"  # `!new [name]`
    REQUIRED = "required"  # `!rename <name>`


@dataclass(frozen=True, slots=True)
class CommandSpec(Generic[H]):
    """One command: `!name`, its argument rule and the catalogue key of its `!help` line.

    `help_key` None leaves the command out of `!help` (`!help` itself; `!no`, which
    shares the line of `!yes`). `arg_name` is the placeholder shown in the usage.
    """

    name: str
    arg: Arg
    handler: H
    help_key: str | None = None
    arg_name: str = "name"

    @property
    def usage(self) -> str:
        if self.arg is Arg.NONE:
            return f"!{self.name}"
        bracket = "[{}]" if self.arg is Arg.OPTIONAL else "<{}>"
        return f"!{self.name} " + bracket.format(self.arg_name)

    def accepts(self, argument: str) -> bool:
        if len(argument) > MAX_NAME_LENGTH:
            return False
        if self.arg is Arg.REQUIRED:
            return bool(argument)
        if self.arg is Arg.NONE:
            return not argument
        return True


CommandTable = Mapping[str, CommandSpec[H]]


def command_table(specs: Iterable[CommandSpec[H]]) -> dict[str, CommandSpec[H]]:
    """The specs by name, in declaration order; raises ValueError on a duplicate or bad name."""
    table: dict[str, CommandSpec[H]] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"command !{spec.name} is declared twice")
        if not spec.name.isalpha() or spec.name != spec.name.lower():
            raise ValueError(f"command name {spec.name!r} must be lower-case letters")
        table[spec.name] = spec
    return table


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # a name in the table, or the unknown word as typed
    argument: str = ""
    known: bool = True
    valid: bool = True


def parse_command(text: str, table: CommandTable[object]) -> Command | None:
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
    spec = table.get(name)
    if spec is None:
        return Command(name=word, argument=argument, known=False, valid=False)
    return Command(name=name, argument=argument, valid=spec.accepts(argument))


def clean_name(text: str) -> str:
    """A user-given chat name without control or bidi-control characters, spaces collapsed.

    Empty when nothing printable is left (the caller refuses it). Pure.
    """
    kept = "".join(
        ch
        for ch in text
        if ch not in BIDI_CONTROLS and unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    return " ".join(kept.split())


def usage_of(command: Command, table: CommandTable[object]) -> str:
    """The usage line to show for a command typed wrongly (`!help` for an unknown one)."""
    spec = table.get(command.name)
    return spec.usage if spec is not None else "!help"


def help_text(table: CommandTable[object], t: Catalogue) -> str:
    """The `!help` answer: one line per help key, in table order."""
    keys = dict.fromkeys(spec.help_key for spec in table.values() if spec.help_key)
    lines = "\n".join(f"- {t(key)}" for key in keys)
    return f"{t('help_header')}\n\n{lines}\n\n{t('help_footer')}"
