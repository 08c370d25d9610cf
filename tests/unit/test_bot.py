"""SurfaceBot against a fake homeserver, the real SQLite store and the echo platform.

The bot, its fakes and the `store`/`surface` fixtures: tests/unit/surfaces.py, conftest.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from surfaces import ALICE, BOB, ECHO, EVE, Surface, t

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE
from contracts.matrix import JsonDict, MatrixUnreachable
from contracts.registry import AgentRegistry
from contracts.state import UserRecord
from contracts.store import INVITE_ENTRY_TYPE, LedgerEntry
from runtime.store import SqliteStore
from tasks.bot.table import COMMANDS
from tasks.commands import help_text

# -- onboarding ---------------------------------------------------------------------------


async def test_invite_from_an_allowed_user_creates_space_and_first_chat(surface: Surface) -> None:
    dm = await surface.invite()

    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.space_id is not None
    assert user.selected_agent_id == "echo"
    assert user.next_chat_index == 2
    room = surface.chat(ALICE, "C1")
    assert (room.space_id, room.agent_id, room.platform_chat_id) == (user.space_id, "echo", "1")
    assert dm.room_id in surface.matrix.joined
    assert surface.matrix.created == [user.space_id, room.room_id]
    space = surface.matrix.room(user.space_id)
    assert space.is_space
    assert space.name == "Lambda — Alice"
    assert (user.space_id, ALICE) in surface.matrix.invites
    assert (room.room_id, ALICE) in surface.matrix.invites


async def test_onboarding_writes_markers_sent_by_the_bot(surface: Surface) -> None:
    invite = await surface.invite()
    room = surface.chat(ALICE, "C1")
    assert room.space_id is not None

    space_marker = surface.matrix.room(room.space_id).state_event(SPACE_MARKER_TYPE)
    room_marker = surface.matrix.room(room.room_id).state_event(ROOM_MARKER_TYPE)

    assert space_marker is not None
    assert room_marker is not None
    assert space_marker.sender == room_marker.sender == surface.matrix.user_id
    assert space_marker.content == {
        "version": 1,
        "owner": ALICE,
        "selected_agent_id": "echo",
        "origin_event_id": invite.event_id,
    }
    assert room_marker.content["owner"] == ALICE
    assert room_marker.content["space_id"] == room.space_id
    assert room_marker.content["chat_id"] == "C1"
    assert room_marker.content["agent_id"] == "echo"
    assert room_marker.content["platform_chat_id"] == "1"


async def test_onboarding_links_space_and_chat_both_ways(surface: Surface) -> None:
    room = await surface.onboard()
    assert room.space_id is not None

    child = surface.matrix.room(room.space_id).state_content("m.space.child", room.room_id)
    parent = surface.matrix.room(room.room_id).state_content("m.space.parent", room.space_id)

    assert child is not None
    assert child["via"] == ["example.org"]
    assert parent is not None
    assert parent["via"] == ["example.org"]


async def test_power_levels_keep_markers_and_topology_to_the_bot(surface: Surface) -> None:
    room = await surface.onboard()
    assert room.space_id is not None

    for room_id in (room.space_id, room.room_id):
        levels = surface.matrix.room(room_id).state_content("m.room.power_levels")
        assert levels is not None
        assert levels["events"][ROOM_MARKER_TYPE] == 100
        assert levels["events"][SPACE_MARKER_TYPE] == 100
        assert levels["events"]["m.space.child"] == 100
        assert levels["users_default"] == 0
        assert levels["events_default"] == 0, "the user can still talk"


async def test_onboarding_welcomes_in_the_chat_and_points_the_dm_to_the_space(
    surface: Surface,
) -> None:
    dm = await surface.invite()
    room = surface.chat(ALICE, "C1")

    welcome = surface.answer(room.room_id, dm.event_id)
    pointer = surface.answer(dm.room_id, dm.event_id)

    assert welcome == t("welcome", name="Alice", agent="Echo", space="Lambda — Alice")
    assert "!help" in welcome
    assert pointer == t("unmanaged_room", space="Lambda — Alice")


async def test_a_second_invite_creates_no_second_space(surface: Surface) -> None:
    await surface.onboard()
    created = list(surface.matrix.created)

    second = await surface.invite()

    assert surface.matrix.created == created
    assert surface.answer(second.room_id, second.event_id) == t(
        "unmanaged_room", space="Lambda — Alice"
    )


async def test_rehandling_an_invite_creates_nothing_new(surface: Surface) -> None:
    dm = await surface.invite()
    created = list(surface.matrix.created)
    sent = len(surface.matrix.sent)

    await surface.bot.handle(
        LedgerEntry(
            event_id=dm.event_id,
            room_id=dm.room_id,
            sender=ALICE,
            type=INVITE_ENTRY_TYPE,
            content={},
        )
    )

    assert surface.matrix.created == created
    assert len(surface.matrix.sent) == sent


async def test_an_invite_from_a_user_not_allowed_is_declined(surface: Surface) -> None:
    dm = await surface.invite(EVE)

    assert [room_id for room_id, _ in surface.matrix.left] == [dm.room_id]
    assert surface.matrix.room(dm.room_id).membership(surface.matrix.user_id) == "leave"
    assert surface.matrix.created == []
    assert surface.matrix.sent == []
    assert surface.store.get_user(EVE) is None


# -- commands -----------------------------------------------------------------------------


async def test_help_lists_the_commands(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!help")

    assert surface.answer(room.room_id, asked) == help_text(COMMANDS, t)


async def test_new_creates_the_next_chat_with_a_fresh_platform_chat(surface: Surface) -> None:
    first = await surface.onboard()

    asked = await surface.send(first.room_id, "!new Research")

    second = surface.chat(ALICE, "C2")
    assert second.display_name == "Research"
    assert second.platform_chat_id not in (None, first.platform_chat_id)
    assert second.agent_id == "echo"
    assert second.space_id == first.space_id
    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.next_chat_index == 3
    marker = surface.matrix.room(second.room_id).state_content(ROOM_MARKER_TYPE)
    assert marker is not None
    assert (marker["chat_id"], marker["display_name"]) == ("C2", "Research")
    assert marker["origin_event_id"] == asked
    assert first.space_id is not None
    assert surface.matrix.room(first.space_id).state_content("m.space.child", second.room_id)
    assert surface.answer(first.room_id, asked) == t(
        "new_created", name="Research", chat_id="C2", agent="Echo"
    )


async def test_new_without_a_name_numbers_the_chat(surface: Surface) -> None:
    first = await surface.onboard()

    await surface.send(first.room_id, "!new")

    assert surface.chat(ALICE, "C2").display_name == "Chat 2"


async def test_new_rehandled_after_a_crash_creates_no_second_room(surface: Surface) -> None:
    first = await surface.onboard()
    event = surface.matrix.add_message(first.room_id, ALICE, "!new")
    await surface.bot.handle(LedgerEntry.of_event(event))
    created = list(surface.matrix.created)

    await surface.bot.handle(LedgerEntry.of_event(event))

    assert surface.matrix.created == created
    assert len(surface.answers(first.room_id, event.event_id)) == 1
    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.next_chat_index == 3


async def test_new_retried_after_the_space_link_failed_creates_one_room(surface: Surface) -> None:
    # The room exists before the Space links it; a retry must reuse it, not make another.
    first = await surface.onboard()
    assert first.space_id is not None
    event = surface.matrix.add_message(first.room_id, ALICE, "!new")
    created = len(surface.matrix.created)
    surface.matrix.fail["send_state"] = [MatrixUnreachable("502 while linking")]

    with pytest.raises(MatrixUnreachable):
        await surface.bot.handle(LedgerEntry.of_event(event))
    await surface.bot.handle(LedgerEntry.of_event(event))

    assert len(surface.matrix.created) == created + 1
    second = surface.chat(ALICE, "C2")
    assert second.room_id == surface.matrix.created[-1]
    assert surface.matrix.room(first.space_id).state_content("m.space.child", second.room_id)


async def test_chats_lists_every_chat_and_marks_this_room(surface: Surface) -> None:
    first = await surface.onboard()
    await surface.send(first.room_id, "!new Research")

    asked = await surface.send(first.room_id, "!chats")

    assert surface.answer(first.room_id, asked) == "\n".join(
        [t("chats_header"), "", "- C1 — Chat 1 ← this room", "- C2 — Research"]
    )


async def test_rename_updates_the_room_name_and_the_marker(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!rename  Holiday   plans ")

    assert surface.room(room.room_id).display_name == "Holiday plans"
    fake_room = surface.matrix.room(room.room_id)
    assert fake_room.state_content("m.room.name") == {"name": "Holiday plans"}
    marker = fake_room.state_content(ROOM_MARKER_TYPE)
    assert marker is not None
    assert marker["display_name"] == "Holiday plans"
    assert surface.store.list_chats(ALICE)[0].display_name == "Holiday plans"
    assert surface.answer(room.room_id, asked) == t("renamed", name="Holiday plans")


async def test_archive_asks_first_then_yes_archives(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!archive")

    assert not surface.room(room.room_id).archived
    assert surface.answer(room.room_id, asked) == t("archive_confirm", name="Chat 1")

    confirmed = await surface.send(room.room_id, "!yes")

    assert surface.room(room.room_id).archived
    marker = surface.matrix.room(room.room_id).state_content(ROOM_MARKER_TYPE)
    assert marker is not None
    assert marker["archived"] is True
    assert surface.answer(room.room_id, confirmed) == t("archived", name="Chat 1")


async def test_an_archived_chat_does_not_reach_the_agent(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!archive")
    await surface.send(room.room_id, "!yes")

    said = await surface.send(room.room_id, "hello?")

    assert surface.answer(room.room_id, said) == t("archived_room")
    assert surface.platform.turns_seen == []


async def test_no_cancels_the_question(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!archive")

    cancelled = await surface.send(room.room_id, "!no")
    late_yes = await surface.send(room.room_id, "!yes")

    assert surface.answer(room.room_id, cancelled) == t("cancelled")
    assert surface.answer(room.room_id, late_yes) == t("nothing_pending")
    assert not surface.room(room.room_id).archived


async def test_clear_asks_then_yes_rotates_only_this_room(surface: Surface) -> None:
    first = await surface.onboard()
    await surface.send(first.room_id, "!new")
    second = surface.chat(ALICE, "C2")

    asked = await surface.send(first.room_id, "!clear")

    assert surface.room(first.room_id).platform_chat_id == first.platform_chat_id
    assert surface.answer(first.room_id, asked) == t("clear_confirm")

    confirmed = await surface.send(first.room_id, "!yes")

    cleared = surface.room(first.room_id)
    assert cleared.platform_chat_id not in (first.platform_chat_id, second.platform_chat_id)
    assert cleared.agent_id == "echo"
    assert surface.room(second.room_id) == second
    assert surface.platform.disconnected == [("echo", first.platform_chat_id)]
    marker = surface.matrix.room(first.room_id).state_content(ROOM_MARKER_TYPE)
    assert marker is not None
    assert marker["platform_chat_id"] == cleared.platform_chat_id
    assert surface.answer(first.room_id, confirmed) == t(
        "cleared", platform_chat_id=cleared.platform_chat_id
    )


async def test_agents_lists_the_registry(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!agents")

    answer = surface.answer(room.room_id, asked)
    assert "`echo` — **Echo** (default) ← this chat: Repeats you" in answer
    assert "`helper` — **Helper**: Helps" in answer


async def test_agent_without_argument_shows_this_rooms_agent(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!agent")

    assert surface.answer(room.room_id, asked) == t("agent_show", name="Echo", id="echo")


async def test_agent_switch_rotates_and_updates_the_selection(surface: Surface) -> None:
    room = await surface.onboard()
    assert room.space_id is not None

    asked = await surface.send(room.room_id, "!agent helper")

    switched = surface.room(room.room_id)
    assert switched.agent_id == "helper"
    assert switched.platform_chat_id != room.platform_chat_id
    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.selected_agent_id == "helper"
    space_marker = surface.matrix.room(room.space_id).state_content(SPACE_MARKER_TYPE)
    assert space_marker is not None
    assert space_marker["selected_agent_id"] == "helper"
    room_marker = surface.matrix.room(room.room_id).state_content(ROOM_MARKER_TYPE)
    assert room_marker is not None
    assert room_marker["agent_id"] == "helper"
    assert surface.platform.disconnected == [("echo", room.platform_chat_id)]
    assert surface.answer(room.room_id, asked) == t("agent_switched", name="Helper", id="helper")

    await surface.send(room.room_id, "!new")
    assert surface.chat(ALICE, "C2").agent_id == "helper", "new chats use the selection"


async def test_agent_switch_to_the_same_agent_changes_nothing(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!agent echo")

    assert surface.room(room.room_id) == room
    assert surface.platform.disconnected == []
    assert surface.answer(room.room_id, asked) == t("agent_same", name="Echo")


async def test_agent_switch_to_an_unknown_agent_says_so(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!agent nobody")

    assert surface.room(room.room_id) == room
    assert surface.answer(room.room_id, asked) == t("agent_unknown", id="nobody")


async def test_save_then_load_restores_a_snapshot(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "remember this")

    saved = await surface.send(room.room_id, "!save first")
    listed = await surface.send(room.room_id, "!load")
    chosen = await surface.send(room.room_id, "1")

    assert surface.answer(room.room_id, saved) == t("saved", name="first", turns=1)
    assert "1. first (" in surface.answer(room.room_id, listed)
    assert surface.answer(room.room_id, chosen) == t("loaded", name="first", turns=1)
    assert [turn.text for turn in surface.platform.turns_seen] == ["remember this"]


async def test_a_load_choice_out_of_range_asks_again(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!save first")
    await surface.send(room.room_id, "!load")

    chosen = await surface.send(room.room_id, "7")

    assert surface.answer(room.room_id, chosen) == t("load_bad_choice", count=1)


async def test_context_shows_the_binding(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!context")

    answer = surface.answer(room.room_id, asked)
    assert "- agent: **Echo** (`echo`)" in answer
    assert f"- platform chat: {room.platform_chat_id}" in answer
    assert "- backend: in-process echo" in answer


async def test_an_unknown_command_gets_a_short_answer(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!frobnicate now")

    assert surface.answer(room.room_id, asked) == t("unknown_command", command="!frobnicate")
    assert surface.platform.turns_seen == []


@pytest.mark.parametrize(
    ("text", "usage"),
    [("!rename", "!rename <name>"), ("!help me", "!help"), ("!clear all", "!clear")],
)
async def test_bad_arguments_get_the_usage(surface: Surface, text: str, usage: str) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, text)

    assert surface.answer(room.room_id, asked) == t("usage", usage=usage)


@pytest.mark.parametrize("text", ["!save", "!load", "!agent", "hello"])
async def test_a_room_without_an_agent_explains_how_to_choose_one(
    surface: Surface, text: str
) -> None:
    room = await surface.onboard()
    surface.store.put_room(room.model_copy(update={"agent_id": None}))

    asked = await surface.send(room.room_id, text)

    assert surface.answer(room.room_id, asked) == t("agent_none", id=None)
    assert surface.platform.turns_seen == []


# -- messages -----------------------------------------------------------------------------


async def test_a_message_goes_to_the_agent_and_the_reply_is_html(surface: Surface) -> None:
    room = await surface.onboard()

    said = await surface.send(room.room_id, "hello **there**")

    [reply] = surface.answers(room.room_id, said)
    assert reply["body"] == "echo: hello **there**"
    assert reply["format"] == "org.matrix.custom.html"
    assert reply["formatted_body"] == "<p>echo: hello <strong>there</strong></p>"
    [sent_turn] = surface.platform.turns_seen
    assert (sent_turn.agent_id, sent_turn.platform_chat_id) == ("echo", room.platform_chat_id)
    assert sent_turn.idempotency_key == said
    assert sent_turn.sender == ALICE


async def test_rehandling_a_message_sends_no_second_reply(surface: Surface) -> None:
    room = await surface.onboard()
    event = surface.matrix.add_message(room.room_id, ALICE, "once")

    await surface.bot.handle(LedgerEntry.of_event(event))
    await surface.bot.handle(LedgerEntry.of_event(event))

    assert len(surface.answers(room.room_id, event.event_id)) == 1


async def test_messages_from_someone_else_in_a_chat_are_ignored(surface: Surface) -> None:
    room = await surface.onboard()

    said = await surface.send(room.room_id, "hi, I am Bob", sender=BOB)

    assert surface.answers(room.room_id, said) == []
    assert surface.platform.turns_seen == []


async def test_an_edit_is_not_a_new_turn(surface: Surface) -> None:
    room = await surface.onboard()

    said = await surface.send(
        room.room_id,
        "* fixed typo",
        **cast(JsonDict, {"m.new_content": {"msgtype": "m.text", "body": "x"}}),
    )

    assert surface.answers(room.room_id, said) == []
    assert surface.platform.turns_seen == []


async def test_a_removed_agent_gets_the_reselection_prompt(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!agent helper")
    surface.restart(registry=AgentRegistry([ECHO]))
    turns_before = len(surface.platform.turns_seen)

    said = await surface.send(room.room_id, "are you there?")

    assert surface.answer(room.room_id, said) == t("agent_missing", id="helper")
    assert len(surface.platform.turns_seen) == turns_before

    await surface.send(room.room_id, "!agent echo")
    again = await surface.send(room.room_id, "and now?")

    assert surface.answer(room.room_id, again) == "echo: and now?"


async def test_a_forgotten_room_with_a_bot_marker_is_repaired_and_answered(
    surface: Surface, tmp_path: Path
) -> None:
    room = await surface.onboard()
    with SqliteStore(tmp_path / "wiped.db") as wiped:
        surface.restart(store=wiped)

        said = await surface.send(room.room_id, "still there?")

        assert surface.answer(room.room_id, said) == "echo: still there?"
        assert wiped.get_room(room.room_id) == room
        user = wiped.get_user(ALICE)
        assert user is not None
        assert user.space_id == room.space_id


async def test_new_after_a_repair_does_not_reuse_the_repaired_chat_id(
    surface: Surface, tmp_path: Path
) -> None:
    room = await surface.onboard()
    with SqliteStore(tmp_path / "wiped.db") as wiped:
        surface.restart(store=wiped)
        await surface.send(room.room_id, "still there?")

        await surface.send(room.room_id, "!new")

        new_room = surface.matrix.created[-1]
        chat_ids = {r.chat_id for r in wiped.list_rooms(ALICE)}
        assert chat_ids == {"C1", "C2"}
        assert wiped.find_chat_room(ALICE, "C1") == room
        assert [c.room_id for c in wiped.list_chats(ALICE)] == [room.room_id, new_room]


async def test_an_unmanaged_room_gets_a_clear_answer(surface: Surface) -> None:
    await surface.onboard()
    stray = surface.matrix.add_invite(ALICE, is_direct=False)
    await surface.matrix.join(stray)

    said = await surface.send(stray, "hello?")

    assert surface.answer(stray, said) == t("unmanaged_room", space="Lambda — Alice")
    assert surface.platform.turns_seen == []
    assert surface.store.get_room(stray) is None


async def test_an_unmanaged_room_of_a_user_without_space_gets_a_clear_answer(
    surface: Surface,
) -> None:
    stray = surface.matrix.add_invite(BOB, is_direct=False)
    await surface.matrix.join(stray)

    said = await surface.send(stray, "hello?", sender=BOB)

    assert surface.answer(stray, said) == t("unmanaged_room_no_space")
    assert surface.matrix.created == []


async def test_an_unmanaged_room_ignores_users_not_allowed(surface: Surface) -> None:
    stray = surface.matrix.add_invite(EVE, is_direct=False)
    await surface.matrix.join(stray)

    said = await surface.send(stray, "hello?", sender=EVE)

    assert surface.answers(stray, said) == []


async def test_new_with_a_removed_selected_agent_asks_to_pick_one(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!agent helper")
    surface.restart(registry=AgentRegistry([ECHO]))
    created = len(surface.matrix.created)

    said = await surface.send(room.room_id, "!new")

    assert surface.answer(room.room_id, said) == t("selected_missing_new", id="helper")
    assert len(surface.matrix.created) == created  # no silent fallback to the default

    await surface.send(room.room_id, "!agent echo")
    again = await surface.send(room.room_id, "!new")
    assert "C2" in surface.answer(room.room_id, again)


async def test_onboarding_with_a_removed_selected_agent_says_the_default_is_used(
    surface: Surface, store: SqliteStore
) -> None:
    store.put_user(UserRecord(matrix_user_id=ALICE, selected_agent_id="gone"))

    entry = await surface.invite()

    room = surface.chat(ALICE, "C1")
    assert room.agent_id == "echo"
    notes = [c["body"] for c in surface.answers(room.room_id, entry.event_id)]
    assert t("selected_missing_default", id="gone", name="Echo") in notes
