"""find_unanswered: which user messages after a known point still need an answer."""

from __future__ import annotations

import itertools

from contracts.markers import REPLY_TO_FIELD
from contracts.matrix import MatrixEvent
from tasks.catchup import find_unanswered, is_user_message

BOT = "@bot:example.org"
ALICE = "@alice:example.org"
ROOM = "!chat:example.org"
_ids = itertools.count()


def user_message(body: str = "hi") -> MatrixEvent:
    return MatrixEvent(
        event_id=f"$u{next(_ids)}",
        room_id=ROOM,
        sender=ALICE,
        type="m.room.message",
        content={"msgtype": "m.text", "body": body},
    )


def bot_reply(to: MatrixEvent | str) -> MatrixEvent:
    target = to if isinstance(to, str) else to.event_id
    return MatrixEvent(
        event_id=f"$b{next(_ids)}",
        room_id=ROOM,
        sender=BOT,
        type="m.room.message",
        content={"msgtype": "m.notice", "body": "ok", REPLY_TO_FIELD: target},
    )


def member(user_id: str, membership: str = "join") -> MatrixEvent:
    return MatrixEvent(
        event_id=f"$m{next(_ids)}",
        room_id=ROOM,
        sender=user_id,
        type="m.room.member",
        content={"membership": membership},
        state_key=user_id,
    )


def room_create() -> MatrixEvent:
    return MatrixEvent(
        event_id=f"$c{next(_ids)}",
        room_id=ROOM,
        sender=BOT,
        type="m.room.create",
        content={"creator": BOT},
        state_key="",
    )


def test_messages_after_an_answered_one_are_unanswered() -> None:
    m1, m2, m3 = user_message(), user_message(), user_message()

    result = find_unanswered([m1, bot_reply(m1), m2, m3], BOT)

    assert result.unanswered == [m2, m3]
    assert result.anchored


def test_user_messages_before_the_anchor_are_ignored() -> None:
    # Rooms are handled in order: the answer to m1 means m0 was handled too.
    m0, m1, m2 = user_message(), user_message(), user_message()

    result = find_unanswered([m0, m1, bot_reply(m1), m2], BOT)

    assert result.unanswered == [m2]


def test_an_answer_after_later_messages_anchors_at_the_answered_message() -> None:
    m1, m2 = user_message(), user_message()

    result = find_unanswered([m1, m2, bot_reply(m1)], BOT)

    assert result.unanswered == [m2]
    assert result.anchored


def test_the_bots_join_is_an_anchor() -> None:
    before, after = user_message(), user_message()

    result = find_unanswered([before, member(BOT), after], BOT)

    assert result.unanswered == [after]
    assert result.anchored


def test_another_users_join_is_no_anchor() -> None:
    m1, m2 = user_message(), user_message()

    result = find_unanswered([m1, member(ALICE), m2], BOT)

    assert result.unanswered == [m1, m2]
    assert not result.anchored


def test_the_bot_leaving_is_no_anchor() -> None:
    m1 = user_message()

    result = find_unanswered([member(BOT, "leave"), m1], BOT)

    assert not result.anchored


def test_room_creation_is_an_anchor() -> None:
    m1 = user_message()

    result = find_unanswered([room_create(), m1], BOT)

    assert result.unanswered == [m1]
    assert result.anchored


def test_nothing_anchored_returns_the_whole_window_unanchored() -> None:
    m1, m2 = user_message(), user_message()

    result = find_unanswered([m1, m2], BOT)

    assert result.unanswered == [m1, m2]
    assert not result.anchored


def test_an_answer_to_an_event_outside_the_window_anchors_nothing() -> None:
    # The answered message is older than the window; m1 may have come before or after it.
    m1 = user_message()

    result = find_unanswered([m1, bot_reply("$older")], BOT)

    assert result.unanswered == [m1]
    assert not result.anchored


def test_the_last_anchor_wins() -> None:
    m1, m2, m3 = user_message(), user_message(), user_message()

    result = find_unanswered([room_create(), m1, bot_reply(m1), m2, member(BOT), m3], BOT)

    assert result.unanswered == [m3]


def test_an_empty_window_is_unanchored() -> None:
    result = find_unanswered([], BOT)

    assert result.unanswered == []
    assert not result.anchored


def test_bot_messages_and_state_events_are_not_user_messages() -> None:
    m1 = user_message()
    state = MatrixEvent(
        event_id="$s",
        room_id=ROOM,
        sender=ALICE,
        type="m.room.message",
        content={},
        state_key="",
    )

    assert is_user_message(m1, BOT)
    assert not is_user_message(bot_reply(m1), BOT)
    assert not is_user_message(state, BOT)
    assert find_unanswered([room_create(), bot_reply("$x"), state], BOT).unanswered == []


def encrypted_user_message() -> MatrixEvent:
    return MatrixEvent(
        event_id=f"$e{next(_ids)}",
        room_id=ROOM,
        sender=ALICE,
        type="m.room.encrypted",
        content={"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "..."},
    )


def encrypted_bot_reply(to: MatrixEvent) -> MatrixEvent:
    """What an encrypted reply looks like to a bot that lost its keys: only the relation."""
    return MatrixEvent(
        event_id=f"$eb{next(_ids)}",
        room_id=ROOM,
        sender=BOT,
        type="m.room.encrypted",
        content={
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "...",
            "m.relates_to": {"m.in_reply_to": {"event_id": to.event_id}},
        },
    )


def test_encrypted_history_is_anchored_by_the_relation_in_the_clear() -> None:
    answered = encrypted_user_message()
    pending = encrypted_user_message()
    events = [answered, encrypted_bot_reply(answered), pending]
    result = find_unanswered(events, BOT)
    assert result.anchored
    assert [e.event_id for e in result.unanswered] == [pending.event_id]


def test_an_encrypted_message_from_a_user_counts_as_a_user_message() -> None:
    assert is_user_message(encrypted_user_message(), BOT)
    assert not is_user_message(encrypted_bot_reply(encrypted_user_message()), BOT)
