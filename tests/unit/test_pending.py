"""PendingAnswers: what a room waits for (a `!yes`/`!no` question or a `!load` choice)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.platform import Snapshot
from tasks.bot.pending import (
    NUMBER_KEYS,
    PendingAnswers,
    parse_choice,
    reaction_answer,
    reaction_choice,
)

SNAP = Snapshot(snapshot_id="1", name="first", created_at="2026-01-01", turns=3)


async def test_a_question_is_waited_for_in_its_room_only() -> None:
    pending = PendingAnswers()

    pending.ask("!a:x", "archive")

    waiting = pending.get("!a:x")
    assert waiting is not None
    assert waiting.question == "archive"
    assert pending.get("!b:x") is None


async def test_take_returns_the_question_and_stops_waiting() -> None:
    pending = PendingAnswers()
    pending.ask("!a:x", "clear")

    taken = pending.take("!a:x")

    assert taken is not None
    assert taken.question == "clear"
    assert pending.get("!a:x") is None


async def test_snapshots_replace_a_question() -> None:
    pending = PendingAnswers()
    pending.ask("!a:x", "archive")

    pending.offer_snapshots("!a:x", [SNAP])

    waiting = pending.get("!a:x")
    assert waiting is not None
    assert (waiting.question, waiting.snapshots) == (None, (SNAP,))


async def test_an_expired_question_is_not_answered() -> None:
    pending = PendingAnswers(ttl=-1.0)  # everything is already too old
    pending.ask("!a:x", "archive")

    assert pending.take("!a:x") is None
    assert not pending.discard("!a:x"), "the expired question was dropped"


async def test_discard_says_whether_the_room_was_waiting() -> None:
    pending = PendingAnswers()
    pending.ask("!a:x", "clear")

    assert pending.discard("!a:x")
    assert not pending.discard("!a:x")


# -- `!load` choices (issue 14, item 9) --------------------------------------------------------


@given(st.text())
@settings(max_examples=500)
def test_a_load_choice_is_one_to_four_ascii_digits_and_anything_else_is_none(text: str) -> None:
    choice = parse_choice(text)

    if re.fullmatch(r"[0-9]{1,4}", text.strip(), re.ASCII):
        assert choice == int(text.strip())
    else:
        assert choice is None


@given(st.integers(min_value=0, max_value=9999))
def test_every_number_up_to_four_digits_is_a_choice(n: int) -> None:
    assert parse_choice(f" {n}\n") == n


@pytest.mark.parametrize("text", ["²", "٣", "9" * 5000, "12345", "1.5", "-1", "+1", "1 2", ""])
def test_texts_that_are_not_small_ascii_numbers_are_no_choice(text: str) -> None:
    assert parse_choice(text) is None


def test_reaction_keys_answer_with_or_without_the_variation_selector() -> None:
    assert [reaction_answer(k) for k in ("✅", "✅\ufe0f", "❌", "👍")] == [True, True, False, None]
    assert [reaction_choice(k) for k in NUMBER_KEYS] == list(range(1, 11))
    assert reaction_choice("3\u20e3") == 3
    assert reaction_choice("3") is None
    assert reaction_choice("✅") is None
