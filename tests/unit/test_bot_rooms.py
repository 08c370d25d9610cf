"""SurfaceBot in rooms that are not (or no longer) a user's chats: foreign rooms, the
user's direct chat with the bot, users taken off the allow list, rooms a user left.

Against the fake homeserver, the real SQLite store and the echo platform
(tests/unit/surfaces.py).
"""

from __future__ import annotations

import pytest
from surfaces import ALICE, BOB, Surface, allowed, t

from contracts.matrix import MatrixEvent, MatrixUnreachable
from contracts.store import LedgerEntry
from tasks.bot.repair import FOREIGN, RoomKind, Unmanaged, unmanaged_kind
from tasks.bot.table import COMMANDS
from tasks.commands import help_text

SPACE = "Lambda — Alice"


async def group_room(surface: Surface, *, history: int = 0) -> str:
    """Alice's group room with Bob (and `history` earlier messages); the bot joins it."""
    room_id = surface.matrix.add_room(ALICE, name="Team")
    surface.matrix.user_joins(room_id, BOB)
    for n in range(history):
        surface.matrix.add_message(room_id, BOB if n % 2 else ALICE, f"old {n}")
    surface.matrix.add_event(
        room_id, ALICE, "m.room.member", {"membership": "invite"}, state_key=surface.matrix.user_id
    )
    await surface.matrix.join(room_id)
    return room_id


def member(user_id: str, membership: str) -> MatrixEvent:
    return MatrixEvent(
        event_id=f"${user_id}",
        room_id="!r:x",
        sender=user_id,
        type="m.room.member",
        content={"membership": membership},
        state_key=user_id,
    )


# -- item 3: foreign rooms ----------------------------------------------------------------


def test_a_room_of_the_bot_and_one_user_is_that_users_direct_chat() -> None:
    state = [member("@bot:x", "join"), member(ALICE, "join")]

    assert unmanaged_kind(state, "@bot:x") == Unmanaged(RoomKind.DIRECT, owner=ALICE)


def test_a_room_with_more_members_or_only_past_ones_is_foreign() -> None:
    group = [member("@bot:x", "join"), member(ALICE, "join"), member(BOB, "invite")]
    abandoned = [member("@bot:x", "join"), member(ALICE, "leave")]

    assert unmanaged_kind(group, "@bot:x") == FOREIGN
    assert unmanaged_kind(abandoned, "@bot:x") == FOREIGN


async def test_a_foreign_room_gets_one_notice_then_silence(surface: Surface) -> None:
    await surface.onboard()
    room_id = await group_room(surface)

    first = await surface.send(room_id, "hello bot?")
    await surface.send(room_id, "anyone?", sender=BOB)
    await surface.send(room_id, "!help")

    assert surface.matrix.messages_in(room_id) == surface.answers(room_id, first)
    assert surface.answer(room_id, first) == t("foreign_room", space=SPACE)
    assert surface.platform.turns_seen == []


async def test_a_foreign_rooms_verdict_is_kept_instead_of_fetching_state_again(
    surface: Surface,
) -> None:
    await surface.onboard()
    room_id = await group_room(surface)
    await surface.send(room_id, "hello bot?")
    # A second state fetch would now fail the handling.
    surface.matrix.fail["room_state"] = [MatrixUnreachable("down")]

    await surface.send(room_id, "again")

    assert len(surface.matrix.messages_in(room_id)) == 1
    assert surface.matrix.fail["room_state"], "the state was fetched again"


async def test_a_restart_does_not_announce_a_foreign_room_again(surface: Surface) -> None:
    await surface.onboard()
    room_id = await group_room(surface)
    await surface.send(room_id, "hello bot?")
    surface.matrix.fail["room_state"] = [MatrixUnreachable("down")]

    surface.restart()
    await surface.send(room_id, "after the restart")

    assert len(surface.matrix.messages_in(room_id)) == 1
    assert surface.matrix.fail["room_state"], "the verdict was not kept across the restart"


async def test_an_invite_to_a_group_room_is_its_one_notice(surface: Surface) -> None:
    await surface.onboard()
    room_id = surface.matrix.add_room(ALICE, name="Team")
    surface.matrix.user_joins(room_id, BOB)
    surface.matrix.add_event(
        room_id,
        ALICE,
        "m.room.member",
        {"membership": "invite"},
        state_key=surface.matrix.user_id,
    )
    await surface.bot.handle(LedgerEntry.invite(room_id, inviter=ALICE, is_direct=False))

    await surface.send(room_id, "hello bot?")
    await surface.send(room_id, "hi", sender=BOB)

    assert room_id in surface.matrix.joined
    assert len(surface.matrix.messages_in(room_id)) == 1


async def test_a_foreign_room_ignores_users_not_allowed(surface: Surface) -> None:
    room_id = await group_room(surface)

    await surface.send(room_id, "hello?", sender="@mallory:elsewhere.net")

    assert surface.matrix.messages_in(room_id) == []


async def test_an_unreachable_homeserver_while_sorting_a_room_out_is_retried_later(
    surface: Surface,
) -> None:
    await surface.onboard()
    room_id = await group_room(surface)
    surface.matrix.fail["room_state"] = [MatrixUnreachable("down")]

    with pytest.raises(MatrixUnreachable):
        await surface.send(room_id, "hello bot?")
    assert surface.bot.repair.known_kind(room_id) is None
    assert surface.matrix.messages_in(room_id) == []


# -- the user's direct chat (issue 17 item 8) ---------------------------------------------


async def test_the_direct_chat_keeps_pointing_to_the_space(surface: Surface) -> None:
    dm = await surface.invite()

    first = await surface.send(dm.room_id, "where are my chats?")
    second = await surface.send(dm.room_id, "hello?")

    assert surface.answer(dm.room_id, first) == t("unmanaged_room", space=SPACE)
    assert surface.answer(dm.room_id, second) == t("unmanaged_room", space=SPACE)


async def test_help_in_the_direct_chat_answers_with_the_help(surface: Surface) -> None:
    dm = await surface.invite()

    asked = await surface.send(dm.room_id, "!help")

    answer = surface.answer(dm.room_id, asked)
    assert answer.startswith(help_text(COMMANDS, t))
    assert t("help_direct", space=SPACE) in answer


async def test_chats_in_the_direct_chat_lists_the_chats(surface: Surface) -> None:
    dm = await surface.invite()

    asked = await surface.send(dm.room_id, "!chats")

    assert surface.answer(dm.room_id, asked) == "\n".join([t("chats_header"), "", "- C1 — Chat 1"])


async def test_someone_else_in_a_users_direct_chat_is_ignored(surface: Surface) -> None:
    dm = await surface.invite()
    await surface.send(dm.room_id, "hi")  # the verdict is taken while it is Alice's DM
    surface.matrix.user_joins(dm.room_id, BOB)

    said = await surface.send(dm.room_id, "!help", sender=BOB)

    assert surface.answers(dm.room_id, said) == []


# -- item 7: taken off the allow list -----------------------------------------------------


def allowed_without_alice(user_id: str) -> bool:
    return allowed(user_id) and user_id != ALICE


async def test_a_user_taken_off_the_allow_list_gets_one_notice_and_no_answers(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    surface.restart(is_allowed=allowed_without_alice)

    first = await surface.send(room.room_id, "hello?")
    await surface.send(room.room_id, "!new")
    await surface.send(room.room_id, "anyone?")

    assert surface.answer(room.room_id, first) == t("not_allowed")
    assert len(surface.answers(room.room_id, first)) == 1
    welcome_and_notice = 2
    assert len(surface.matrix.messages_in(room.room_id)) == welcome_and_notice
    assert surface.platform.turns_seen == []
    assert surface.store.find_chat_room(ALICE, "C2") is None
    assert surface.store.get_room(room.room_id) == room, "the room is kept"


async def test_the_not_allowed_notice_is_not_repeated_after_a_restart(surface: Surface) -> None:
    room = await surface.onboard()
    surface.restart(is_allowed=allowed_without_alice)
    await surface.send(room.room_id, "hello?")
    sent = len(surface.matrix.sent)

    surface.restart(is_allowed=allowed_without_alice)
    await surface.send(room.room_id, "still nothing?")

    assert len(surface.matrix.sent) == sent


async def test_a_user_taken_off_the_allow_list_gets_one_notice_in_the_direct_chat(
    surface: Surface,
) -> None:
    dm = await surface.invite()
    await surface.send(dm.room_id, "hi")
    surface.restart(is_allowed=allowed_without_alice)

    first = await surface.send(dm.room_id, "!help")
    second = await surface.send(dm.room_id, "!chats")

    assert surface.answer(dm.room_id, first) == t("not_allowed")
    assert surface.answers(dm.room_id, second) == []


async def test_a_user_let_back_in_is_answered_and_told_again_after_another_removal(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    surface.restart(is_allowed=allowed_without_alice)
    await surface.send(room.room_id, "hello?")

    surface.restart()
    back = await surface.send(room.room_id, "back?")
    surface.restart(is_allowed=allowed_without_alice)
    again = await surface.send(room.room_id, "and now?")

    assert surface.answer(room.room_id, back) == "echo: back?"
    assert surface.answer(room.room_id, again) == t("not_allowed")


async def test_a_user_taken_off_the_allow_list_gets_nothing_in_a_foreign_room(
    surface: Surface,
) -> None:
    await surface.onboard()
    room_id = await group_room(surface)
    await surface.send(room_id, "hello bot?")
    sent = len(surface.matrix.sent)

    surface.restart(is_allowed=allowed_without_alice)
    await surface.send(room_id, "hello again")

    assert len(surface.matrix.sent) == sent


# -- item 12: back into rooms the user left -----------------------------------------------


async def leave_c2_and_archive_c3(surface: Surface) -> tuple[str, str, str]:
    first = await surface.onboard()
    await surface.send(first.room_id, "!new")
    await surface.send(first.room_id, "!new")
    c2, c3 = surface.chat(ALICE, "C2"), surface.chat(ALICE, "C3")
    for room_id in (c2.room_id, c3.room_id):
        surface.matrix.user_joins(room_id, ALICE)
    await surface.send(c3.room_id, "!archive")
    await surface.send(c3.room_id, "!yes")
    for room_id in (c2.room_id, c3.room_id):
        surface.matrix.user_leaves(room_id, ALICE)
    assert first.space_id is not None
    surface.matrix.user_joins(first.space_id, ALICE)
    surface.matrix.user_leaves(first.space_id, ALICE)
    return first.room_id, c2.room_id, c3.room_id


async def test_inviting_the_bot_to_a_direct_chat_again_invites_back_to_left_rooms(
    surface: Surface,
) -> None:
    c1, c2, c3 = await leave_c2_and_archive_c3(surface)
    space_id = surface.chat(ALICE, "C1").space_id
    assert space_id is not None

    dm = await surface.invite()

    matrix = surface.matrix
    assert matrix.room(c2).membership(ALICE) == "invite"
    assert matrix.room(space_id).membership(ALICE) == "invite"
    assert matrix.room(c3).membership(ALICE) == "leave", "archived chats are not offered"
    assert matrix.room(c1).membership(ALICE) == "join"
    rejoin = [
        c["body"]
        for c in surface.answers(dm.room_id, dm.event_id)
        if c["body"] != t("unmanaged_room", space=SPACE)
    ]
    assert rejoin == [t("rejoin_invited", rooms="C2 — Chat 2")]


async def test_chats_marks_left_rooms_and_invites_back(surface: Surface) -> None:
    c1, c2, _c3 = await leave_c2_and_archive_c3(surface)

    asked = await surface.send(c1, "!chats")

    assert surface.answer(c1, asked) == "\n".join(
        [
            t("chats_header"),
            "",
            "- C1 — Chat 1 ← this room",
            "- C2 — Chat 2 (you left)",
            "- C3 — Chat 3 (archived) (you left)",
            "",
            t("chats_reinvited", count=2),
        ]
    )
    assert surface.matrix.room(c2).membership(ALICE) == "invite"


async def test_a_first_invite_sends_no_rejoin_message(surface: Surface) -> None:
    dm = await surface.invite()

    assert [c["body"] for c in surface.answers(dm.room_id, dm.event_id)] == [
        t("unmanaged_room", space=SPACE)
    ]
