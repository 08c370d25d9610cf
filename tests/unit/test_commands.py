"""parse_command: which texts are commands, with which argument, and which are for the agent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.commands import COMMANDS, MAX_NAME_LENGTH, Command, parse_command


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
    assert parse_command(text) == expected


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
    assert parse_command(text) is None


def test_usage_names_the_command_syntax() -> None:
    assert Command("rename", valid=False).usage == "!rename <name>"
    assert Command("frobnicate", known=False, valid=False).usage == "!help"


command_like = st.builds(
    lambda word, sep, rest: f"!{word}{sep}{rest}",
    st.one_of(st.sampled_from(sorted(COMMANDS)), st.text(min_size=1, max_size=12)),
    st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0"]),
    st.text(max_size=100),
)


@settings(max_examples=400)
@given(st.one_of(st.text(), command_like))
def test_parse_command_never_raises_and_names_are_known_or_marked_unknown(text: str) -> None:
    command = parse_command(text)

    if command is None:
        return
    assert command.known == (command.name in COMMANDS)
    if not command.known:
        assert not command.valid
    assert command.name, "a command always has a name"
    assert not any(ch.isspace() for ch in command.name), "whitespace ends the command word"
    assert command.argument == command.argument.strip()
