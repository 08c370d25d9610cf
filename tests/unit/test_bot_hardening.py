"""Issue 14, items 4, 5, 9 and 10: races on a user's record, lost createRoom answers,
`!load` choices that are not small numbers, the chat cap, names with control characters.

Against the fake homeserver and the real SQLite store (tests/unit/surfaces.py).
"""

from __future__ import annotations

import anyio
import pytest
from fakes import Gate
from surfaces import ALICE, Surface, make_surface, t

from contracts.markers import SPACE_MARKER_TYPE
from contracts.matrix import MatrixUnreachable
from contracts.store import LedgerEntry
from runtime.store import SqliteStore


def chat_ids(surface: Surface) -> list[str]:
    return [chat.chat_id for chat in surface.store.list_chats(ALICE)]


# -- item 4: a user's record is never written back stale ---------------------------------


async def test_agent_switch_racing_new_never_hands_out_one_chat_index_twice(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!new")
    second = surface.chat(ALICE, "C2")
    surface.matrix.user_joins(second.room_id, ALICE)
    # `!agent` waits at its Space marker write; `!new` runs meanwhile as far as it can.
    gate = Gate("send_state", when=lambda _room, event_type: event_type == SPACE_MARKER_TYPE)
    surface.matrix.gates.append(gate)
    switch = surface.matrix.add_message(room.room_id, ALICE, "!agent helper")
    new = surface.matrix.add_message(second.room_id, ALICE, "!new")

    async with anyio.create_task_group() as tg:
        tg.start_soon(surface.bot.handle, LedgerEntry.of_event(switch))
        await gate.reached.wait()
        tg.start_soon(surface.bot.handle, LedgerEntry.of_event(new))
        await anyio.wait_all_tasks_blocked()
        gate.opened.set()
    await surface.send(second.room_id, "!new")

    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.selected_agent_id == "helper"
    assert user.next_chat_index == 5
    assert chat_ids(surface) == ["C1", "C2", "C3", "C4"]
    assert len({c.room_id for c in surface.store.list_chats(ALICE)}) == 4


async def test_agent_switch_changes_only_the_selected_agent_of_the_user(surface: Surface) -> None:
    room = await surface.onboard()
    before = surface.store.get_user(ALICE)
    assert before is not None

    await surface.send(room.room_id, "!agent helper")

    after = surface.store.get_user(ALICE)
    assert after == before.model_copy(update={"selected_agent_id": "helper"})


# -- item 5: a lost createRoom answer never makes a second room ---------------------------


async def test_a_new_chat_whose_create_answer_was_lost_is_found_on_retry_not_created_again(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    surface.matrix.lose_answer["create_room"] = [MatrixUnreachable("timed out")]
    event = surface.matrix.add_message(room.room_id, ALICE, "!new Notes")
    entry = LedgerEntry.of_event(event)
    created_before = len(surface.matrix.created)

    with pytest.raises(MatrixUnreachable):
        await surface.bot.handle(entry)
    await surface.bot.handle(entry)  # the sync task's retry of the same event

    assert len(surface.matrix.created) == created_before + 1
    new_room = surface.chat(ALICE, "C2")
    assert new_room.room_id == surface.matrix.created[-1]
    assert new_room.display_name == "Notes"
    assert surface.store.room_origin(event.event_id) == new_room.room_id
    space = surface.matrix.room(room.space_id or "")
    assert space.state_event("m.space.child", new_room.room_id) is not None
    assert surface.answer(room.room_id, event.event_id).startswith("Created **Notes** (C2)")
    await surface.send(room.room_id, "!new")
    assert chat_ids(surface) == ["C1", "C2", "C3"]


async def test_a_lost_new_chat_is_found_even_after_another_room_created_one_meanwhile(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!new")
    other = surface.chat(ALICE, "C2")
    surface.matrix.lose_answer["create_room"] = [MatrixUnreachable("timed out")]
    lost = LedgerEntry.of_event(surface.matrix.add_message(room.room_id, ALICE, "!new Lost"))

    with pytest.raises(MatrixUnreachable):
        await surface.bot.handle(lost)
    await surface.send(other.room_id, "!new Meanwhile")  # before the retry of the first
    await surface.bot.handle(lost)

    names = {c.chat_id: c.display_name for c in surface.store.list_chats(ALICE)}
    assert names == {"C1": "Chat 1", "C2": "Chat 2", "C3": "Lost", "C4": "Meanwhile"}
    assert len(surface.matrix.created) == 5  # the Space and four chats


async def test_a_retried_new_chat_creates_the_room_when_the_lost_attempt_made_none(
    surface: Surface,
) -> None:
    room = await surface.onboard()
    surface.matrix.fail["create_room"] = [MatrixUnreachable("connection refused")]
    entry = LedgerEntry.of_event(surface.matrix.add_message(room.room_id, ALICE, "!new"))
    created_before = len(surface.matrix.created)

    with pytest.raises(MatrixUnreachable):
        await surface.bot.handle(entry)
    await surface.bot.handle(entry)

    assert len(surface.matrix.created) == created_before + 1
    assert chat_ids(surface) == ["C1", "C2"]


async def test_a_space_whose_create_answer_was_lost_is_found_on_retry_not_created_again(
    surface: Surface,
) -> None:
    surface.matrix.lose_answer["create_room"] = [MatrixUnreachable("502 from the proxy")]
    dm = surface.matrix.add_invite(ALICE)
    entry = LedgerEntry.invite(dm, inviter=ALICE, is_direct=True)

    with pytest.raises(MatrixUnreachable):
        await surface.bot.handle(entry)
    await surface.bot.handle(entry)

    [space_id, chat_room_id] = surface.matrix.created
    user = surface.store.get_user(ALICE)
    assert user is not None
    assert user.space_id == space_id
    assert surface.chat(ALICE, "C1").room_id == chat_room_id
    assert surface.chat(ALICE, "C1").space_id == space_id


async def test_a_creation_that_went_through_looks_for_no_lost_room(surface: Surface) -> None:
    room = await surface.onboard()

    await surface.send(room.room_id, "!new")

    assert surface.matrix.joined_rooms_calls == 0


# -- item 9: a `!load` choice is one to four ASCII digits --------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("²", id="superscript-two"),
        pytest.param("٣", id="arabic-indic-three"),
        pytest.param("9" * 5000, id="5000-digits"),
        pytest.param("12345", id="five-digits"),
    ],
)
async def test_a_load_answer_that_is_not_a_small_number_goes_to_the_agent(
    surface: Surface, answer: str
) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!save first")
    await surface.send(room.room_id, "!load")

    asked = await surface.send(room.room_id, answer)

    assert [turn.text for turn in surface.platform.turns_seen] == [answer]
    assert surface.answers(room.room_id, asked)


async def test_a_load_answer_with_leading_zeros_picks_by_its_number(surface: Surface) -> None:
    room = await surface.onboard()
    await surface.send(room.room_id, "!save first")
    await surface.send(room.room_id, "!load")

    chosen = await surface.send(room.room_id, "0001")

    assert surface.answer(room.room_id, chosen) == t("loaded", name="first", turns=0)


# -- item 10: the chat cap; names without control characters -----------------------------


async def test_new_past_the_chat_limit_is_refused_naming_the_limit_until_one_is_archived(
    store: SqliteStore,
) -> None:
    surface = make_surface(store, max_chats_per_user=2)
    room = await surface.onboard()
    await surface.send(room.room_id, "!new")
    created = len(surface.matrix.created)

    refused = await surface.send(room.room_id, "!new")

    assert surface.answer(room.room_id, refused) == t("new_limit", limit=2)
    assert "2" in t("new_limit", limit=2) and "!archive" in t("new_limit", limit=2)
    assert len(surface.matrix.created) == created
    await surface.send(room.room_id, "!archive")
    await surface.send(room.room_id, "!yes")
    allowed = await surface.send(room.room_id, "!new")
    assert surface.answer(room.room_id, allowed).startswith("Created **Chat 3** (C3)")


async def test_rename_strips_control_and_bidi_control_characters(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!rename Pl\x00an\x07s \u202eevil\u2066 x\u2069")

    assert surface.room(room.room_id).display_name == "Plans evil x"
    assert surface.matrix.room(room.room_id).state_content("m.room.name") == {
        "name": "Plans evil x"
    }
    assert surface.answer(room.room_id, asked) == t("renamed", name="Plans evil x")


async def test_rename_to_only_control_characters_is_refused(surface: Surface) -> None:
    room = await surface.onboard()

    asked = await surface.send(room.room_id, "!rename \x00\u202e\u2067\x1b")

    assert surface.room(room.room_id) == room
    assert surface.answer(room.room_id, asked) == t("rename_empty")


async def test_new_with_a_name_of_control_characters_gets_the_default_name(
    surface: Surface,
) -> None:
    room = await surface.onboard()

    await surface.send(room.room_id, "!new \u202e\x00")

    assert surface.chat(ALICE, "C2").display_name == "Chat 2"
