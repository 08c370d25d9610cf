"""tasks/bot/edits.py: which bot answer an edit may change. Pure."""

from __future__ import annotations

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import JsonDict, MatrixEvent
from tasks.bot.edits import find_answer

BOT = "@bot:x"
ALICE = "@alice:x"
WINDOW_MS = 600_000


def ev(
    event_id: str, sender: str, ts: int, content: JsonDict, type_: str = "m.room.message"
) -> MatrixEvent:
    return MatrixEvent(event_id, "!r", sender, type_, content, origin_server_ts=ts)


def answer(event_id: str, trigger: str, ts: int) -> MatrixEvent:
    return ev(event_id, BOT, ts, {"body": "a", REPLY_TO_FIELD: trigger})


def edit_of(event_id: str, sender: str, target: str, ts: int, **extra: object) -> MatrixEvent:
    relation = {"rel_type": "m.replace", "event_id": target}
    return ev(event_id, sender, ts, {"body": "* b", "m.relates_to": relation, **extra})


ORIGINAL = ev("$q", ALICE, 1_000, {"body": "question"})


def test_the_first_bot_message_answering_the_original_is_the_answer() -> None:
    edit = edit_of("$edit", ALICE, "$q", 2_000)
    events = [ORIGINAL, answer("$a", "$q", 1_100), edit_of("$a2", BOT, "$a", 1_500), edit]

    assert find_answer(events, edit=edit, bot_user_id=BOT, window_ms=WINDOW_MS) == "$a"


def test_an_edit_made_while_the_answer_streamed_comes_before_it_in_the_room() -> None:
    edit = edit_of("$edit", ALICE, "$q", 1_050)
    events = [ORIGINAL, edit, answer("$a", "$q", 1_100), edit_of("$a2", BOT, "$a", 9_000_000)]

    assert find_answer(events, edit=edit, bot_user_id=BOT, window_ms=0) == "$a"


def test_a_new_user_message_before_the_edit_means_it_is_not_the_last() -> None:
    edit = edit_of("$edit", ALICE, "$q", 2_000)
    newer = ev("$n", ALICE, 1_500, {"body": "another"})
    events = [ORIGINAL, answer("$a", "$q", 1_100), newer, edit]

    assert find_answer(events, edit=edit, bot_user_id=BOT, window_ms=WINDOW_MS) is None


def test_a_reaction_or_an_encrypted_reaction_is_no_new_message() -> None:
    edit = edit_of("$edit", ALICE, "$q", 2_000)
    relation = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "x"}}
    events = [
        ORIGINAL,
        answer("$a", "$q", 1_100),
        ev("$r1", ALICE, 1_200, relation, "m.reaction"),
        ev("$r2", ALICE, 1_300, {"ciphertext": "...", **relation}, "m.room.encrypted"),
        edit,
    ]

    assert find_answer(events, edit=edit, bot_user_id=BOT, window_ms=WINDOW_MS) == "$a"


def test_the_window_counts_from_the_answers_last_change_including_earlier_edit_turns() -> None:
    first_edit = edit_of("$e1", ALICE, "$q", 2_000)
    second_edit = edit_of("$e2", ALICE, "$q", 2_000 + WINDOW_MS)
    events = [
        ORIGINAL,
        answer("$a", "$q", 1_100),
        first_edit,
        edit_of("$a2", BOT, "$a", 2_500, **{REPLY_TO_FIELD: "$e1"}),
        second_edit,
    ]

    assert find_answer(events, edit=second_edit, bot_user_id=BOT, window_ms=WINDOW_MS) == "$a"
    late = edit_of("$e3", ALICE, "$q", 2_501 + WINDOW_MS)
    assert find_answer([*events, late], edit=late, bot_user_id=BOT, window_ms=WINDOW_MS) is None


def test_an_unanswered_message_or_someone_elses_has_no_answer() -> None:
    edit = edit_of("$edit", ALICE, "$q", 2_000)
    assert find_answer([ORIGINAL, edit], edit=edit, bot_user_id=BOT, window_ms=WINDOW_MS) is None
    bobs = edit_of("$edit", "@bob:x", "$q", 2_000)
    events = [ORIGINAL, answer("$a", "$q", 1_100), bobs]
    assert find_answer(events, edit=bobs, bot_user_id=BOT, window_ms=WINDOW_MS) is None


def test_a_rich_reply_relation_in_the_clear_names_the_answered_event() -> None:
    edit = edit_of("$edit", ALICE, "$q", 2_000)
    clear = ev("$a", BOT, 1_100, {"m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}})

    events = [ORIGINAL, clear, edit]

    assert find_answer(events, edit=edit, bot_user_id=BOT, window_ms=WINDOW_MS) == "$a"
