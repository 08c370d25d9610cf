"""Adopting the old surface's rooms at reconciliation, through the reconcile shell.

Rooms are made on the fake homeserver as the old bot made them: a Space and chat rooms
created by the bot's own account, linked with `m.space.child` (and not always a
`m.space.parent`), no `lambda.surface.*` markers.
"""

from __future__ import annotations

from pathlib import Path

from fakes import FakeMatrix

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE
from contracts.state import RoomRecord, RoomType, UserRecord
from runtime.legacy_db import migrate_legacy_database
from runtime.store import SqliteStore
from tasks.reconcile import reconcile
from tasks.rooms import create_chat_room
from tests.legacy_fixtures import alice_rows, write_legacy_db

BOT = "@bot:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"


async def old_bot_space(
    matrix: FakeMatrix, owner: str, names: list[str], *, parent: bool = False
) -> tuple[str, list[str]]:
    """A Space and its chat rooms as the old bot created them (no markers)."""
    space = await matrix.create_room(name=f"Lambda — {owner}", invite=[owner], is_space=True)
    rooms = []
    for name in names:
        room = await matrix.create_room(name=name, invite=[owner])
        await matrix.send_state(space, "m.space.child", {"via": ["example.org"]}, state_key=room)
        if parent:
            await matrix.send_state(room, "m.space.parent", {"canonical": True}, state_key=space)
        rooms.append(room)
    return space, rooms


def marker(matrix: FakeMatrix, room_id: str, kind: str = ROOM_MARKER_TYPE) -> dict[str, object]:
    content = matrix.room(room_id).state_content(kind)
    assert content is not None, f"no {kind} in {room_id}"
    return content


async def test_the_old_bots_space_and_rooms_are_adopted_and_marked(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space, (c1, c2) = await old_bot_space(matrix, ALICE, ["Чат 1", "Чат 2"])
    created = list(matrix.created)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert matrix.created == created  # no room or Space made
    assert len(report.adopted) == 3 and len(report.ids_filled) == 2
    assert store.get_user(ALICE) == UserRecord(
        matrix_user_id=ALICE, space_id=space, next_chat_index=3, selected_agent_id="echo"
    )
    rooms = {r.room_id: r for r in store.list_rooms(ALICE)}
    assert (rooms[c1].chat_id, rooms[c2].chat_id) == ("C1", "C2")
    assert (rooms[c1].display_name, rooms[c1].agent_id) == ("Чат 1", "echo")
    ids = {rooms[c1].platform_chat_id, rooms[c2].platform_chat_id}
    assert len(ids) == 2 and None not in ids
    assert marker(matrix, space, SPACE_MARKER_TYPE)["owner"] == ALICE
    assert marker(matrix, c2)["platform_chat_id"] == rooms[c2].platform_chat_id
    # The old bot wrote no m.space.parent: written now, with via.
    assert matrix.room(c1).state_content("m.space.parent", space) == {
        "canonical": True,
        "via": ["example.org"],
    }


async def test_a_second_run_after_adoption_changes_nothing(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    await old_bot_space(matrix, ALICE, ["Чат 1", "Чат 2"])
    await reconcile(store, matrix, default_agent_id="echo")
    writes = len(matrix.state_writes)

    again, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert again.changes == 0 and again.adopted == [] and again.conflicts == []
    assert len(matrix.state_writes) == writes


async def test_the_legacy_records_give_the_binding(store: SqliteStore, tmp_path: Path) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space, (c1, c3) = await old_bot_space(matrix, ALICE, ["Research", "Чат 3"])
    legacy = tmp_path / "legacy.db"
    write_legacy_db(
        legacy,
        alice_rows(
            ALICE,
            space,
            {c1: ("C1", "Research", "7"), c3: ("C3", "Чат 3", "42")},
            seq=42,
            selected="helper",
        ),
    )
    migrate_legacy_database(legacy)
    with SqliteStore(legacy) as migrated:
        report, _ = await reconcile(migrated, matrix, default_agent_id="echo")

        assert report.ids_filled == []
        assert {a.source for a in report.adopted} == {"legacy"}
        room = migrated.get_room(c3)
        assert room is not None
        assert (room.chat_id, room.platform_chat_id, room.agent_id) == ("C3", "42", "helper")
        assert marker(matrix, c1)["platform_chat_id"] == "7"
        assert marker(matrix, space, SPACE_MARKER_TYPE)["selected_agent_id"] == "helper"
        assert migrated.sequence_state().next_value == 43


async def test_dry_run_reports_the_adoption_and_changes_nothing(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    await old_bot_space(matrix, ALICE, ["Чат 1"])
    writes = len(matrix.state_writes)

    report, _ = await reconcile(store, matrix, dry_run=True, default_agent_id="echo")

    assert len(report.adopted) == 2 and report.as_dict()["adopted"] == 2
    assert store.list_rooms() == [] and len(matrix.state_writes) == writes


async def test_rooms_the_bot_did_not_create_are_never_adopted(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space, _ = await old_bot_space(matrix, ALICE, [])
    theirs = matrix.add_room(ALICE, name="Chat 9")  # Alice's own room, linked and joined
    matrix.add_event(theirs, BOT, "m.room.member", {"membership": "join"}, state_key=BOT)
    await matrix.send_state(space, "m.space.child", {"via": ["example.org"]}, state_key=theirs)
    foreign_space = matrix.add_room(ALICE, name="Alice's Space")
    matrix.add_event(foreign_space, BOT, "m.room.member", {"membership": "join"}, state_key=BOT)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert [a.room_id for a in report.adopted] == [space]
    assert store.get_room(theirs) is None and store.get_room(foreign_space) is None
    assert matrix.room(theirs).state_content(ROOM_MARKER_TYPE) is None
    assert {s.room_id for s in report.skipped} == {theirs, foreign_space}


async def test_a_space_with_more_than_one_possible_owner_is_not_adopted(
    store: SqliteStore,
) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space = await matrix.create_room(name="Shared", invite=[ALICE, BOB], is_space=True)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert report.adopted == [] and store.get_room(space) is None
    assert "no one owner" in report.skipped[0].reason


async def test_unnumbered_rooms_take_free_chat_ids_in_creation_order(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    _space, (plans, research, ninth) = await old_bot_space(
        matrix, ALICE, ["Plans", "Research", "Чат 1"]
    )

    await reconcile(store, matrix, default_agent_id="echo")

    ids = {r.room_id: r.chat_id for r in store.list_rooms(ALICE) if r.room_type is RoomType.CHAT}
    assert ids == {ninth: "C1", plans: "C2", research: "C3"}
    assert store.get_user(ALICE).next_chat_index == 4  # type: ignore[union-attr]


async def test_a_marked_room_without_platform_chat_id_gets_one(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space, _ = await old_bot_space(matrix, ALICE, [])
    await reconcile(store, matrix, default_agent_id="echo")
    draft = RoomRecord(
        room_id="",
        room_type=RoomType.CHAT,
        matrix_user_id=ALICE,
        space_id=space,
        chat_id="C1",
        display_name="Chat 1",
        agent_id="echo",
    )
    room = await create_chat_room(matrix, draft)
    await matrix.send_state(space, "m.space.child", {"via": ["example.org"]}, state_key=room)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert report.ids_filled == [room]
    filled = store.get_room(room)
    assert filled is not None and filled.platform_chat_id is not None
    assert marker(matrix, room)["platform_chat_id"] == filled.platform_chat_id


async def test_links_without_via_are_rewritten(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    space, (c1,) = await old_bot_space(matrix, ALICE, ["Чат 1"], parent=True)
    await matrix.send_state(space, "m.space.child", {"order": "1"}, state_key=c1)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert {(link.room_id, link.event_type) for link in report.links_repaired} == {
        (space, "m.space.child"),
        (c1, "m.space.parent"),
    }
    assert matrix.room(space).state_content("m.space.child", c1) == {
        "order": "1",
        "via": ["example.org"],
    }


async def test_rooms_the_bot_has_left_are_dropped_and_reported(store: SqliteStore) -> None:
    matrix = FakeMatrix(user_id=BOT)
    _, (c1, c2) = await old_bot_space(matrix, ALICE, ["Чат 1", "Чат 2"])
    await reconcile(store, matrix, default_agent_id="echo")
    await matrix.leave(c2)

    report, _ = await reconcile(store, matrix, default_agent_id="echo")

    assert report.dropped == [c2]
    assert store.get_room(c2) is None
    assert [c.room_id for c in store.list_chats(ALICE)] == [c1]
