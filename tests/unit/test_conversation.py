"""Issue 18, items 3 to 6: threads, rich replies, edited questions, reaction answers,
read receipts. Against the fake homeserver and the real SQLite store (surfaces.py).
"""

from __future__ import annotations

from typing import Any

from fakes import FakeMatrix
from surfaces import ALICE, Surface, make_surface, t

from contracts.markers import REPLY_TO_FIELD, ROOM_MARKER_TYPE
from contracts.matrix import JsonDict, MatrixRequestError
from contracts.platform import QuotedMessage
from contracts.state import RoomRecord
from contracts.store import LedgerEntry
from runtime.store import SqliteStore
from tasks.bot.pending import NO_KEY, NUMBER_KEYS, YES_KEY
from tasks.room_signals import RoomSignals


def in_thread(root: str, latest: str) -> JsonDict:
    return {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": latest},
        }
    }


def reply_to(event_id: str) -> JsonDict:
    return {"m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}


async def edit(surface: Surface, room_id: str, original: str, text: str, **extra: Any) -> str:
    content: JsonDict = {
        "msgtype": "m.text",
        "body": "* " + text,
        "m.new_content": {"msgtype": "m.text", "body": text},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    event = surface.matrix.add_event(room_id, ALICE, "m.room.message", {**content, **extra})
    await surface.bot.handle(LedgerEntry.of_event(event))
    return event.event_id


async def react(surface: Surface, room_id: str, target: str, key: str) -> str:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
    event = surface.matrix.add_event(room_id, ALICE, "m.reaction", content)
    await surface.bot.handle(LedgerEntry.of_event(event))
    return event.event_id


def sent_to(surface: Surface, room_id: str, trigger: str) -> list[Any]:
    return [
        m
        for m in surface.matrix.sent
        if m.room_id == room_id and m.content.get(REPLY_TO_FIELD) == trigger
    ]


def event_id_of_answer(surface: Surface, room_id: str, trigger: str) -> str:
    [message] = [m for m in sent_to(surface, room_id, trigger) if "m.new_content" not in m.content]
    return str(message.event_id)


def reactions_on(surface: Surface, room_id: str, target: str) -> list[str]:
    return [
        m.content["m.relates_to"]["key"]
        for m in surface.matrix.sent
        if m.room_id == room_id
        and m.event_type == "m.reaction"
        and m.content["m.relates_to"]["event_id"] == target
    ]


def current_answer(surface: Surface, room_id: str, answer_id: str) -> str:
    """The answer's text as a client shows it: its latest edit's, else its own."""
    text = None
    for m in surface.matrix.sent:
        if m.room_id != room_id:
            continue
        if m.event_id == answer_id:
            text = m.content["body"]
        relates = m.content.get("m.relates_to", {})
        if relates.get("rel_type") == "m.replace" and relates.get("event_id") == answer_id:
            text = m.content["m.new_content"]["body"]
    assert isinstance(text, str)
    return text


# -- threads ------------------------------------------------------------------------------


async def test_a_message_in_a_thread_is_answered_in_that_thread(surface: Surface) -> None:
    room = await surface.onboard()
    root = await surface.send(room.room_id, "start")

    asked = await surface.send(room.room_id, "in the thread", **in_thread(root, root))

    [answer] = sent_to(surface, room.room_id, asked)
    assert answer.content["body"] == "echo: in the thread"
    assert answer.content["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": asked},
    }
    assert surface.platform.turns_seen[-1].thread_id == root


async def test_a_message_outside_a_thread_names_no_thread(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "plain")

    [answer] = sent_to(surface, room.room_id, asked)
    assert answer.content["m.relates_to"] == {"m.in_reply_to": {"event_id": asked}}
    assert surface.platform.turns_seen[-1].thread_id is None


async def test_a_command_in_a_thread_is_answered_in_the_thread(surface: Surface) -> None:
    room = await surface.onboard()
    root = await surface.send(room.room_id, "start")

    asked = await surface.send(room.room_id, "!help", **in_thread(root, root))

    [answer] = sent_to(surface, room.room_id, asked)
    assert answer.content["m.relates_to"]["rel_type"] == "m.thread"
    assert answer.content["m.relates_to"]["event_id"] == root


# -- rich replies -------------------------------------------------------------------------


async def test_a_reply_gives_the_agent_the_quoted_text_without_the_fallback(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    first = await surface.send(room.room_id, "the sky is green")
    body = "> <@alice:example.org> the sky is green\n\nis that right?"

    await surface.send(room.room_id, body, **reply_to(first))

    turn = surface.platform.turns_seen[-1]
    assert turn.text == "is that right?"
    assert turn.quoted == QuotedMessage(event_id=first, sender=ALICE, text="the sky is green")


async def test_a_reply_to_the_bots_streamed_answer_quotes_its_whole_text(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    answered = await surface.send(room.room_id, "hello")
    answer_id = event_id_of_answer(surface, room.room_id, answered)
    # A restart: nothing at hand, the quote is fetched (with its latest edit).
    surface.restart()
    surface.matrix.add_event(
        room.room_id,
        surface.matrix.user_id,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* echo: hello, and more",
            "m.new_content": {"msgtype": "m.text", "body": "echo: hello, and more"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": answer_id},
        },
    )

    await surface.send(room.room_id, "why?", **reply_to(answer_id))

    quoted = surface.platform.turns_seen[-1].quoted
    assert quoted == QuotedMessage(
        event_id=answer_id, sender=surface.matrix.user_id, text="echo: hello, and more"
    )


async def test_a_reply_to_an_event_the_bot_cannot_see_has_no_quote(surface: Surface) -> None:
    room = await surface.onboard()

    await surface.send(room.room_id, "about that", **reply_to("$gone"))

    turn = surface.platform.turns_seen[-1]
    assert (turn.text, turn.quoted) == ("about that", None)


# -- edited questions ---------------------------------------------------------------------


async def test_editing_the_last_question_asks_again_and_edits_the_answer(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "what is 2+2")
    answer_id = event_id_of_answer(surface, room.room_id, asked)

    edited = await edit(surface, room.room_id, asked, "what is 3+3")

    assert [turn.text for turn in surface.platform.turns_seen] == ["what is 2+2", "what is 3+3"]
    assert surface.platform.turns_seen[-1].idempotency_key == edited
    assert current_answer(surface, room.room_id, answer_id) == "echo: what is 3+3"
    new_messages = [
        m for m in sent_to(surface, room.room_id, edited) if "m.new_content" not in m.content
    ]
    assert new_messages == [], "the answer was edited, no new message"


async def test_the_same_edit_handled_twice_is_one_turn(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "first")
    edited = await edit(surface, room.room_id, asked, "second")
    sent_before = len(surface.matrix.sent)
    # A replay after a crash (the ledger entry was still pending).
    edit_event = next(
        e for _, e in surface.matrix.room(room.room_id).timeline if e.event_id == edited
    )

    await surface.bot.handle(LedgerEntry.of_event(edit_event))

    assert [turn.text for turn in surface.platform.turns_seen] == ["first", "second", "second"]
    assert len(surface.matrix.sent) == sent_before, "same transaction ids: nothing new"


async def test_each_edit_is_its_own_turn(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "one")
    answer_id = event_id_of_answer(surface, room.room_id, asked)

    await edit(surface, room.room_id, asked, "two")
    await edit(surface, room.room_id, asked, "three")

    assert [turn.text for turn in surface.platform.turns_seen] == ["one", "two", "three"]
    assert current_answer(surface, room.room_id, answer_id) == "echo: three"


async def test_an_edit_of_an_older_message_is_left_alone(surface: Surface) -> None:
    room = await surface.onboard()
    older = await surface.send(room.room_id, "old question")
    await surface.send(room.room_id, "newer question")

    await edit(surface, room.room_id, older, "changed")

    assert [turn.text for turn in surface.platform.turns_seen] == [
        "old question",
        "newer question",
    ]


async def test_an_edit_after_the_window_is_left_alone(store: SqliteStore) -> None:
    surface = make_surface(store, edit_window=0.0)
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "question")
    # The fake's clock moves one millisecond per event: the edit comes after the answer.

    await edit(surface, room.room_id, asked, "changed")

    assert [turn.text for turn in surface.platform.turns_seen] == ["question"]


async def test_an_edit_into_a_command_or_of_a_command_is_left_alone(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "question")
    await edit(surface, room.room_id, asked, "!archive")
    command = await surface.send(room.room_id, "!help")

    await edit(surface, room.room_id, command, "hello")

    assert [turn.text for turn in surface.platform.turns_seen] == ["question"]
    assert surface.bot.services.pending.get(room.room_id) is None


async def test_an_edit_of_a_question_in_a_thread_is_answered_in_the_thread(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    root = await surface.send(room.room_id, "start")
    asked = await surface.send(room.room_id, "in thread", **in_thread(root, root))

    await edit(surface, room.room_id, asked, "still in thread")

    assert surface.platform.turns_seen[-1].thread_id == root


# -- reactions ----------------------------------------------------------------------------


async def test_archive_question_carries_yes_and_no_reactions(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!archive")

    question = event_id_of_answer(surface, room.room_id, asked)
    assert reactions_on(surface, room.room_id, question) == [YES_KEY, NO_KEY]


async def test_a_yes_reaction_on_the_archive_question_archives(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "!archive")
    question = event_id_of_answer(surface, room.room_id, asked)

    reacted = await react(surface, room.room_id, question, YES_KEY + "\ufe0f")

    assert surface.room(room.room_id).archived
    marker = surface.matrix.room(room.room_id).state_content(ROOM_MARKER_TYPE)
    assert marker is not None and marker["archived"] is True
    assert surface.answer(room.room_id, reacted) == t("archived", name="Chat 1")


async def test_a_no_reaction_cancels_the_clear_question(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "!clear")
    question = event_id_of_answer(surface, room.room_id, asked)

    reacted = await react(surface, room.room_id, question, NO_KEY)

    assert surface.room(room.room_id).platform_chat_id == room.platform_chat_id
    assert surface.answer(room.room_id, reacted) == t("cancelled")


async def test_a_reaction_on_another_message_answers_nothing(surface: Surface) -> None:
    room = await surface.onboard()
    other = await surface.send(room.room_id, "hello")
    await surface.send(room.room_id, "!archive")

    await react(surface, room.room_id, other, YES_KEY)

    assert not surface.room(room.room_id).archived
    assert surface.bot.services.pending.get(room.room_id) is not None


async def test_a_number_reaction_on_the_load_list_loads_that_snapshot(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "remember this")
    await surface.send(room.room_id, "!save first")
    await surface.send(room.room_id, "!save second")
    listed = await surface.send(room.room_id, "!load")
    the_list = event_id_of_answer(surface, room.room_id, listed)
    assert reactions_on(surface, room.room_id, the_list) == list(NUMBER_KEYS[:2])

    reacted = await react(surface, room.room_id, the_list, "2\u20e3")  # without VS16

    assert surface.answer(room.room_id, reacted) == t("loaded", name="second", turns=1)


async def test_a_reaction_from_someone_else_answers_nothing(surface: Surface) -> None:
    room = await surface.onboard()
    asked = await surface.send(room.room_id, "!archive")
    question = event_id_of_answer(surface, room.room_id, asked)
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": question, "key": YES_KEY}}
    event = surface.matrix.add_event(room.room_id, "@bob:example.org", "m.reaction", content)

    await surface.bot.handle(LedgerEntry.of_event(event))

    assert not surface.room(room.room_id).archived


# -- read receipts ------------------------------------------------------------------------


async def test_each_message_taken_is_marked_read(surface: Surface) -> None:
    room: RoomRecord = await surface.onboard()

    first = await surface.send(room.room_id, "hello")
    second = await surface.send(room.room_id, "!help")

    assert surface.matrix.receipts == [(room.room_id, first), (room.room_id, second)]


async def test_with_signals_the_receipt_waits_until_the_bot_is_quiet(store: SqliteStore) -> None:
    matrix = FakeMatrix()
    signals = RoomSignals(matrix)  # its sender not started: what is noted stays noted
    surface = make_surface(store, signals=signals, matrix=matrix)
    room = await surface.onboard()

    first = await surface.send(room.room_id, "hello")
    second = await surface.send(room.room_id, "!help")

    assert surface.matrix.receipts == [], "noted, not sent while handling"
    assert surface.answer(room.room_id, first) == "echo: hello"
    await signals.flush()
    assert surface.matrix.receipts == [(room.room_id, second)], "one per room, the latest"


async def test_a_failed_receipt_does_not_fail_the_message(surface: Surface) -> None:
    room = await surface.onboard()
    surface.matrix.fail["send_receipt"] = [MatrixRequestError("no", status=400)]

    asked = await surface.send(room.room_id, "hello")

    assert surface.answer(room.room_id, asked) == "echo: hello"
