"""The command table: which texts are commands (parse_command), their usage and `!help`."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.bot.table import COMMANDS
from tasks.catalogue import CATALOGUES, Catalogue
from tasks.commands import (
    BIDI_CONTROLS,
    MAX_NAME_LENGTH,
    Arg,
    Command,
    CommandSpec,
    clean_name,
    command_table,
    help_text,
    parse_command,
    usage_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("!help", Command("help"), id="help"),
        pytest.param("  !chats  ", Command("chats"), id="surrounding-space"),
        pytest.param("!new", Command("new"), id="new-without-name"),
        pytest.param("!new Research  notes", Command("new", "Research notes"), id="new-with-name"),
        pytest.param("!rename", Command("rename", valid=False), id="rename-without-argument"),
        pytest.param("!rename Plans", Command("rename", "Plans"), id="rename-with-argument"),
        pytest.param("!help me", Command("help", "me", valid=False), id="help-takes-no-argument"),
        pytest.param("!agent", Command("agent"), id="agent-show"),
        pytest.param("!agent helper", Command("agent", "helper"), id="agent-switch"),
        pytest.param(
            "!frobnicate x", Command("frobnicate", "x", known=False, valid=False), id="unknown"
        ),
        pytest.param("!HELP", Command("help"), id="upper-case"),
        pytest.param("!ReNaMe Plans", Command("rename", "Plans"), id="mixed-case"),
        pytest.param("!new\nsecond line", Command("new", "second line"), id="newline-after-word"),
        pytest.param("!rename\tPlans", Command("rename", "Plans"), id="tab-after-word"),
        pytest.param(
            "!new " + "x" * (MAX_NAME_LENGTH + 1),
            Command("new", "x" * (MAX_NAME_LENGTH + 1), valid=False),
            id="name-too-long",
        ),
    ],
)
def test_parse_command_table(text: str, expected: Command) -> None:
    assert parse_command(text, COMMANDS) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("hello", id="plain-text"),
        pytest.param("!!text", id="double-bang-is-text"),
        pytest.param("!", id="bare-bang"),
        pytest.param("! new", id="space-after-bang"),
        pytest.param("!1", id="digit-after-bang"),
        pytest.param("say !help", id="bang-not-first"),
        pytest.param("", id="empty"),
    ],
)
def test_text_for_the_agent_is_not_a_command(text: str) -> None:
    assert parse_command(text, COMMANDS) is None


def test_usage_names_the_command_syntax() -> None:
    assert usage_of(Command("rename", valid=False), COMMANDS) == "!rename <name>"
    assert usage_of(Command("frobnicate", known=False, valid=False), COMMANDS) == "!help"


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("help", "!help"),
        ("new", "!new [name]"),
        ("chats", "!chats"),
        ("rename", "!rename <name>"),
        ("archive", "!archive"),
        ("agents", "!agents"),
        ("agent", "!agent [id]"),
        ("clear", "!clear"),
        ("save", "!save [name]"),
        ("load", "!load"),
        ("context", "!context"),
        ("yes", "!yes"),
        ("no", "!no"),
    ],
)
def test_the_table_declares_each_commands_usage(name: str, usage: str) -> None:
    assert COMMANDS[name].usage == usage


def test_a_command_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        command_table([CommandSpec("ping", Arg.NONE, None), CommandSpec("ping", Arg.NONE, None)])


def test_a_command_name_must_be_lower_case_letters() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        command_table([CommandSpec("Ping", Arg.NONE, None)])


@pytest.mark.parametrize("locale", sorted(CATALOGUES))
def test_every_help_line_of_the_table_is_in_every_catalogue(locale: str) -> None:
    keys = {spec.help_key for spec in COMMANDS.values() if spec.help_key}

    assert keys <= set(CATALOGUES[locale])
    assert {"help_header", "help_footer"} <= set(CATALOGUES[locale])


# The `!help` text as it was written by hand before it was made from the table.
EN_HELP_LINES = [
    "- `!new [name]` — start a new chat room",
    "- `!chats` — list your chats",
    "- `!rename <name>` — rename this chat",
    "- `!archive` — archive this chat (asks `!yes`/`!no`)",
    "- `!agents` — list the agents",
    "- `!agent [id]` — show or switch the agent of this chat",
    "- `!clear` — start this chat's context afresh (asks `!yes`/`!no`)",
    "- `!save [name]` — save a snapshot of this chat's context",
    "- `!load` — list snapshots; answer with a number to load one",
    "- `!context` — what this chat is bound to",
    "- `!yes` / `!no` — answer a question",
]


def test_help_is_made_from_the_table_one_line_per_help_key() -> None:
    header, lines, footer = help_text(COMMANDS, Catalogue("en")).split("\n\n")

    assert (header, footer) == ("**Commands**", "Anything else goes to the agent.")
    listed = lines.split("\n")
    assert [line for line in listed if line in EN_HELP_LINES] == EN_HELP_LINES, "same order"
    assert len(listed) == len({spec.help_key for spec in COMMANDS.values() if spec.help_key})


def test_help_in_russian_uses_the_russian_lines() -> None:
    text = help_text(COMMANDS, Catalogue("ru"))

    assert text.startswith("**Команды**\n\n- `!new [имя]` — новый чат\n")
    assert "\n- `!yes` / `!no` — ответ на вопрос\n" in text
    assert text.endswith("\n\nВсё остальное уходит агенту.")
    assert text.count("\n- ") == len({s.help_key for s in COMMANDS.values() if s.help_key})


command_like = st.builds(
    lambda word, sep, rest: f"!{word}{sep}{rest}",
    st.one_of(st.sampled_from(sorted(COMMANDS)), st.text(min_size=1, max_size=12)),
    st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0"]),
    st.text(max_size=100),
)


@settings(max_examples=400)
@given(st.one_of(st.text(), command_like))
def test_parse_command_never_raises_and_names_are_known_or_marked_unknown(text: str) -> None:
    command = parse_command(text, COMMANDS)

    if command is None:
        return
    assert command.known == (command.name in COMMANDS)
    if not command.known:
        assert not command.valid
    assert command.name, "a command always has a name"
    assert not any(ch.isspace() for ch in command.name), "whitespace ends the command word"
    assert command.argument == command.argument.strip()


# -- names without control characters (issue 14, item 10) -------------------------------------

_UNSAFE = {"Cc", "Cs", "Zl", "Zp"}


@given(st.text())
@settings(max_examples=500)
def test_a_cleaned_name_has_no_control_or_bidi_control_character_and_is_stable(
    text: str,
) -> None:
    name = clean_name(text)

    assert not any(unicodedata.category(ch) in _UNSAFE for ch in name)
    assert not set(name) & BIDI_CONTROLS
    assert name == name.strip()
    assert clean_name(name) == name


@given(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Zs"))))
def test_a_name_of_printable_characters_is_kept_as_it_is(text: str) -> None:
    assert clean_name(text) == "".join(ch for ch in text if ch not in BIDI_CONTROLS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Pl\x00an\x07s", "Plans", id="nul-bel"),
        pytest.param("\u202eevil\u202c", "evil", id="right-to-left-override"),
        pytest.param("a\u2066b\u2067c\u2068d\u2069", "abcd", id="isolates"),
        pytest.param("x\u200ey\u200fz\u061c", "xyz", id="marks"),
        pytest.param("one\u2028two", "onetwo", id="line-separator"),
        pytest.param("\x1b[31mred", "[31mred", id="escape"),
        pytest.param("👩\u200d💻 team", "👩\u200d💻 team", id="zwj-emoji-kept"),
        pytest.param("\x00\u202e \t", "", id="nothing-left"),
    ],
)
def test_clean_name_examples(text: str, expected: str) -> None:
    assert clean_name(text) == expected
