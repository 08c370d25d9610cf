"""plan_rebuild: the pure decision that turns Matrix markers into local records."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.markers import ROOM_MARKER_TYPE, SPACE_MARKER_TYPE
from contracts.matrix import JsonDict, MatrixEvent
from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord
from runtime.store import SqliteStore
from tasks.rebuild import plan_rebuild
from tasks.rebuild_plan import LocalState, RebuildPlan
from tasks.reconcile import apply_plan, local_state

BOT = "@bot:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"
MALLORY = "@mallory:example.org"
SPACE = "!space:example.org"
_ids = itertools.count()

Rooms = dict[str, list[MatrixEvent]]


def state_event(
    room_id: str, event_type: str, content: JsonDict, *, state_key: str = "", sender: str = BOT
) -> MatrixEvent:
    return MatrixEvent(
        event_id=f"$s{next(_ids)}",
        room_id=room_id,
        sender=sender,
        type=event_type,
        content=content,
        state_key=state_key,
    )


def space_state(
    space_id: str,
    owner: str,
    *,
    children: Sequence[str] = (),
    selected: str | None = "echo",
    name: str | None = None,
    sender: str = BOT,
) -> list[MatrixEvent]:
    events = [
        state_event(
            space_id,
            SPACE_MARKER_TYPE,
            {"version": 1, "owner": owner, "selected_agent_id": selected},
            sender=sender,
        ),
        state_event(space_id, "m.room.name", {"name": name or f"Lambda — {owner}"}),
    ]
    events += [
        state_event(space_id, "m.space.child", {"via": ["example.org"]}, state_key=child)
        for child in children
    ]
    return events


def chat_state(
    room_id: str,
    owner: str,
    chat_id: str,
    *,
    space_id: str = SPACE,
    agent_id: str | None = "echo",
    platform_chat_id: str | None = "1",
    display_name: str | None = None,
    archived: bool = False,
    sender: str = BOT,
    origin: str | None = None,
    parent: bool = True,
) -> list[MatrixEvent]:
    content: JsonDict = {
        "version": 1,
        "owner": owner,
        "space_id": space_id,
        "chat_id": chat_id,
        "display_name": display_name or f"Chat {chat_id}",
        "agent_id": agent_id,
        "platform_chat_id": platform_chat_id,
        "archived": archived,
    }
    if origin:
        content["origin_event_id"] = origin
    events = [state_event(room_id, ROOM_MARKER_TYPE, content, sender=sender)]
    if parent:  # as the bot creates it: linked to its Space
        events.append(
            state_event(
                room_id,
                "m.space.parent",
                {"via": ["example.org"], "canonical": True},
                state_key=space_id,
            )
        )
    return events


EMPTY = LocalState(users={}, rooms={}, chats={})


def applied(plan: RebuildPlan, local: LocalState) -> LocalState:
    """The local state after writing the plan (as the SQLite store would)."""
    users = {**local.users, **{u.matrix_user_id: u for u in plan.users}}
    rooms = {**local.rooms, **{r.room_id: r for r in plan.rooms}}
    chats = {k: c for k, c in local.chats.items() if c.room_id not in plan.drop}
    for room_id in plan.drop:
        rooms.pop(room_id, None)
    for room in plan.rooms:
        if room.room_type is RoomType.CHAT and room.chat_id:
            chats[(room.matrix_user_id, room.chat_id)] = ChatRecord(
                matrix_user_id=room.matrix_user_id,
                chat_id=room.chat_id,
                room_id=room.room_id,
                display_name=room.display_name or room.chat_id,
                archived=room.archived,
            )
    chats.update({(c.matrix_user_id, c.chat_id): c for c in plan.chats})
    return LocalState(
        users=users,
        rooms=rooms,
        chats=chats,
        sequence_next=max(local.sequence_next, plan.sequence_floor),
    )


def alice_with_two_chats() -> Rooms:
    return {
        SPACE: space_state(SPACE, ALICE, children=["!c1:example.org", "!c2:example.org"]),
        "!c1:example.org": chat_state("!c1:example.org", ALICE, "C1", platform_chat_id="4"),
        "!c2:example.org": chat_state("!c2:example.org", ALICE, "C2", platform_chat_id="9"),
    }


# -- restore, keep, repair ----------------------------------------------------------------


def test_missing_user_rooms_and_chats_are_restored() -> None:
    plan = plan_rebuild(alice_with_two_chats(), EMPTY, bot_user_id=BOT)

    [user] = plan.users
    assert user == UserRecord(
        matrix_user_id=ALICE, space_id=SPACE, next_chat_index=3, selected_agent_id="echo"
    )
    rooms = {r.room_id: r for r in plan.rooms}
    assert rooms[SPACE].room_type is RoomType.SPACE
    assert rooms["!c2:example.org"] == RoomRecord(
        room_id="!c2:example.org",
        room_type=RoomType.CHAT,
        matrix_user_id=ALICE,
        space_id=SPACE,
        chat_id="C2",
        display_name="Chat C2",
        agent_id="echo",
        platform_chat_id="9",
    )
    assert sorted(c.chat_id for c in plan.chats) == ["C1", "C2"]
    report = plan.report
    assert (report.users_restored, report.rooms_restored, report.chats_restored) == (1, 3, 2)
    assert report.repaired == 0
    assert report.conflicts == []


def test_valid_local_records_are_kept() -> None:
    rooms = alice_with_two_chats()
    local = applied(plan_rebuild(rooms, EMPTY, bot_user_id=BOT), EMPTY)

    plan = plan_rebuild(rooms, local, bot_user_id=BOT)

    assert (plan.users, plan.rooms, plan.chats) == ([], [], [])
    assert plan.report.changes == 0


def test_a_disagreeing_record_is_repaired_and_the_conflict_named() -> None:
    rooms = alice_with_two_chats()
    local = applied(plan_rebuild(rooms, EMPTY, bot_user_id=BOT), EMPTY)
    stale = local.rooms["!c1:example.org"].model_copy(
        update={"agent_id": "old-agent", "platform_chat_id": "2"}
    )
    local = LocalState(
        users=local.users,
        rooms={**local.rooms, stale.room_id: stale},
        chats=local.chats,
        sequence_next=local.sequence_next,
    )

    plan = plan_rebuild(rooms, local, bot_user_id=BOT)

    [repaired] = plan.rooms
    assert repaired.agent_id == "echo"
    assert repaired.platform_chat_id == "4"
    assert plan.report.repaired == 1
    [conflict] = plan.report.conflicts
    assert conflict.room_id == "!c1:example.org"
    assert "agent_id" in conflict.reason
    assert "platform_chat_id" in conflict.reason


def test_the_selected_agent_comes_from_the_space_marker() -> None:
    rooms = alice_with_two_chats()
    rooms[SPACE] = space_state(SPACE, ALICE, children=["!c1:example.org"], selected="helper")
    local = LocalState(
        users={ALICE: UserRecord(matrix_user_id=ALICE, space_id=SPACE, selected_agent_id="echo")},
        rooms={},
        chats={},
    )

    plan = plan_rebuild(rooms, local, bot_user_id=BOT)

    [user] = plan.users
    assert user.selected_agent_id == "helper"


def test_origins_of_chat_rooms_are_recovered() -> None:
    rooms = {"!c1:example.org": chat_state("!c1:example.org", ALICE, "C1", origin="$new-cmd")}

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert plan.origins == {"$new-cmd": "!c1:example.org"}


# -- what is not trusted ------------------------------------------------------------------


def test_a_marker_not_sent_by_the_bot_is_skipped() -> None:
    rooms = {"!evil:example.org": chat_state("!evil:example.org", ALICE, "C1", sender=MALLORY)}

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert (plan.users, plan.rooms, plan.chats) == ([], [], [])
    [skipped] = plan.report.skipped
    assert skipped.room_id == "!evil:example.org"
    assert MALLORY in skipped.reason


def test_a_room_without_marker_is_skipped() -> None:
    rooms = {"!dm:example.org": [state_event("!dm:example.org", "m.room.name", {"name": "DM"})]}

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert plan.rooms == []
    assert plan.report.skipped[0].reason.startswith("no lambda.surface marker")


def test_an_invalid_marker_is_skipped() -> None:
    bad = [state_event("!bad:example.org", ROOM_MARKER_TYPE, {"owner": ALICE})]

    plan = plan_rebuild({"!bad:example.org": bad}, EMPTY, bot_user_id=BOT)

    assert plan.rooms == []
    assert "invalid marker" in plan.report.skipped[0].reason


def test_a_chat_whose_owner_differs_from_its_spaces_owner_is_a_conflict() -> None:
    rooms = {
        SPACE: space_state(SPACE, ALICE, children=["!c1:example.org"]),
        "!c1:example.org": chat_state("!c1:example.org", BOB, "C1"),
    }

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert [r.room_id for r in plan.rooms] == [SPACE]
    assert any("differs" in c.reason for c in plan.report.conflicts)


def test_two_rooms_claiming_one_chat_id_keep_one() -> None:
    rooms = {
        SPACE: space_state(SPACE, ALICE, children=["!a:example.org", "!b:example.org"]),
        "!a:example.org": chat_state("!a:example.org", ALICE, "C1"),
        "!b:example.org": chat_state("!b:example.org", ALICE, "C1"),
    }

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert [c.room_id for c in plan.chats] == ["!a:example.org"]
    assert any(c.room_id == "!b:example.org" for c in plan.report.conflicts)


# -- counters -----------------------------------------------------------------------------


def test_next_chat_index_is_one_above_the_highest_chat() -> None:
    rooms = {
        SPACE: space_state(SPACE, ALICE),
        "!c1:example.org": chat_state("!c1:example.org", ALICE, "C1"),
        "!c7:example.org": chat_state("!c7:example.org", ALICE, "C7"),
        "!c3:example.org": chat_state("!c3:example.org", ALICE, "C3"),
    }

    [user] = plan_rebuild(rooms, EMPTY, bot_user_id=BOT).users

    assert user.next_chat_index == 8


def test_next_chat_index_is_never_lowered() -> None:
    local = LocalState(
        users={ALICE: UserRecord(matrix_user_id=ALICE, space_id=SPACE, next_chat_index=12)},
        rooms={},
        chats={},
    )

    plan = plan_rebuild(alice_with_two_chats(), local, bot_user_id=BOT)

    [user] = plan.users
    assert user.next_chat_index == 12


def test_sequence_floor_is_above_every_platform_chat_id() -> None:
    plan = plan_rebuild(alice_with_two_chats(), EMPTY, bot_user_id=BOT, high_water=0)

    assert plan.sequence_floor == 10


def test_sequence_floor_is_above_the_high_water_mark() -> None:
    plan = plan_rebuild(alice_with_two_chats(), EMPTY, bot_user_id=BOT, high_water=64)

    assert plan.sequence_floor == 65


def test_sequence_floor_never_lowers_the_local_sequence() -> None:
    local = LocalState(users={}, rooms={}, chats={}, sequence_next=200)

    plan = plan_rebuild(alice_with_two_chats(), local, bot_user_id=BOT, high_water=64)

    assert plan.sequence_floor == 200


def test_sequence_floor_counts_ids_of_rooms_lost_to_a_conflict() -> None:
    # The losing room's platform chat was issued by the bot: it must never be reused.
    rooms = {
        SPACE: space_state(SPACE, ALICE, children=["!a:example.org", "!b:example.org"]),
        "!a:example.org": chat_state("!a:example.org", ALICE, "C1", platform_chat_id="3"),
        "!b:example.org": chat_state("!b:example.org", ALICE, "C1", platform_chat_id="77"),
    }

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    assert plan.sequence_floor == 78


def test_two_spaces_for_one_owner_keep_one_and_name_the_conflict() -> None:
    rooms = {
        "!s1:example.org": space_state("!s1:example.org", ALICE),
        "!s2:example.org": space_state("!s2:example.org", ALICE),
    }

    plan = plan_rebuild(rooms, EMPTY, bot_user_id=BOT)

    [user] = plan.users
    assert user.space_id == "!s1:example.org"
    assert [r.room_id for r in plan.rooms] == ["!s1:example.org"]
    [conflict] = plan.report.conflicts
    assert conflict.room_id == "!s2:example.org"
    assert "second Space" in conflict.reason


def test_two_spaces_for_one_owner_keep_the_local_one() -> None:
    rooms = {
        "!s1:example.org": space_state("!s1:example.org", ALICE),
        "!s2:example.org": space_state("!s2:example.org", ALICE),
    }
    local = LocalState(
        users={ALICE: UserRecord(matrix_user_id=ALICE, space_id="!s2:example.org")},
        rooms={},
        chats={},
    )

    plan = plan_rebuild(rooms, local, bot_user_id=BOT)

    assert [r.room_id for r in plan.rooms] == ["!s2:example.org"]
    assert plan.report.conflicts[0].room_id == "!s1:example.org"


# -- properties ---------------------------------------------------------------------------

OWNERS = [ALICE, BOB]
SPACE_IDS = ["!s1:example.org", "!s2:example.org", "!s3:example.org"]
CHAT_ROOM_IDS = [f"!c{n}:example.org" for n in range(1, 7)]


# Strategies built once: building them inside a draw costs more than the test.
owners = st.sampled_from(OWNERS)
senders = st.sampled_from([BOT, BOT, BOT, MALLORY])
agents = st.sampled_from([None, "echo", "helper"])
space_ids = st.sampled_from(SPACE_IDS)
some_spaces = st.lists(space_ids, unique=True, max_size=3)
some_children = st.lists(st.sampled_from(CHAT_ROOM_IDS), unique=True, max_size=4)
some_chat_rooms = st.lists(st.sampled_from(CHAT_ROOM_IDS), unique=True, max_size=6)
chat_ids = st.sampled_from(["C1", "C2", "C3", "C12", "X1", "C0"])
platform_chat_ids = st.one_of(st.none(), st.integers(1, 500).map(str), st.just("abc"))
display_names = st.sampled_from([None, "Plans", "Research"])


@st.composite
def matrix_rooms(draw: st.DrawFn) -> tuple[Rooms, int]:
    """Spaces and chats of up to two owners, some untrusted, some conflicting."""
    rooms: Rooms = {}
    for space_id in draw(some_spaces):
        rooms[space_id] = space_state(
            space_id,
            draw(owners),
            children=draw(some_children),
            selected=draw(agents),
            sender=draw(senders),
        )
    for room_id in draw(some_chat_rooms):
        rooms[room_id] = chat_state(
            room_id,
            draw(owners),
            draw(chat_ids),
            space_id=draw(space_ids),
            agent_id=draw(agents),
            platform_chat_id=draw(platform_chat_ids),
            display_name=draw(display_names),
            archived=draw(st.booleans()),
            sender=draw(senders),
        )
    return rooms, draw(st.integers(0, 600))


local_owners = st.lists(owners, unique=True)
local_spaces = st.sampled_from([None, *SPACE_IDS])
local_selected = st.sampled_from([None, "echo", "gone"])
local_rooms = st.lists(st.sampled_from(CHAT_ROOM_IDS), unique=True, max_size=3)
local_chat_ids = st.sampled_from(["C1", "C2", "C3"])


@st.composite
def local_records(draw: st.DrawFn) -> LocalState:
    """Whatever a database might hold before reconciliation, stale or not."""
    users = {
        owner: UserRecord(
            matrix_user_id=owner,
            space_id=draw(local_spaces),
            next_chat_index=draw(st.integers(1, 20)),
            selected_agent_id=draw(local_selected),
        )
        for owner in draw(local_owners)
    }
    rooms: dict[str, RoomRecord] = {}
    for room_id in draw(local_rooms):
        rooms[room_id] = RoomRecord(
            room_id=room_id,
            room_type=RoomType.CHAT,
            matrix_user_id=draw(owners),
            space_id=draw(space_ids),
            chat_id=draw(local_chat_ids),
            display_name="stale",
            agent_id="gone",
            platform_chat_id=str(draw(st.integers(1, 500))),
        )
    return LocalState(users=users, rooms=rooms, chats={}, sequence_next=draw(st.integers(1, 600)))


def seen_platform_chat_ids(rooms: Mapping[str, Sequence[MatrixEvent]]) -> list[int]:
    """Every numeric platform_chat_id in a valid marker the bot sent."""
    seen = []
    for state in rooms.values():
        for event in state:
            value = event.content.get("platform_chat_id")
            if (
                event.type == ROOM_MARKER_TYPE
                and event.sender == BOT
                and isinstance(value, str)
                and value.isdigit()
            ):
                seen.append(int(value))
    return seen


def write(store: SqliteStore, local: LocalState) -> None:
    for user in local.users.values():
        store.put_user(user)
    for room in local.rooms.values():
        store.put_room(room)
    store.raise_sequence_floor(local.sequence_next)


@settings(max_examples=300)
@given(matrix_rooms(), local_records())
def test_rebuild_applied_then_rerun_changes_nothing(
    generated: tuple[Rooms, int], before: LocalState
) -> None:
    rooms, high_water = generated
    local = applied(RebuildPlan(rooms=list(before.rooms.values())), before)
    first = plan_rebuild(rooms, local, bot_user_id=BOT, high_water=high_water)

    again = plan_rebuild(rooms, applied(first, local), bot_user_id=BOT, high_water=high_water)

    assert (again.users, again.rooms, again.chats, again.drop) == ([], [], [], [])
    # Matrix is not changed here, so only the local side can settle.
    assert again.report.local_changes == 0
    assert again.sequence_floor == first.sequence_floor


# Fewer examples: each one opens a fresh database file (about 30 ms).
@settings(max_examples=50, deadline=None)
@given(matrix_rooms(), local_records())
def test_rebuild_written_to_sqlite_then_rerun_changes_nothing(
    generated: tuple[Rooms, int], before: LocalState
) -> None:
    rooms, high_water = generated
    with tempfile.TemporaryDirectory() as tmp, SqliteStore(Path(tmp) / "bot.db") as store:
        write(store, before)
        first = plan_rebuild(rooms, local_state(store), bot_user_id=BOT, high_water=high_water)
        apply_plan(store, first)

        again = plan_rebuild(rooms, local_state(store), bot_user_id=BOT, high_water=high_water)

        assert (again.users, again.rooms, again.chats, again.drop) == ([], [], [], [])
        assert again.report.local_changes == 0
        assert again.sequence_floor == first.sequence_floor


@settings(max_examples=300)
@given(matrix_rooms(), local_records())
def test_sequence_floor_is_above_everything_seen(
    generated: tuple[Rooms, int], before: LocalState
) -> None:
    rooms, high_water = generated

    plan = plan_rebuild(rooms, before, bot_user_id=BOT, high_water=high_water)

    assert plan.sequence_floor >= before.sequence_next
    assert plan.sequence_floor > high_water
    assert all(plan.sequence_floor > seen for seen in seen_platform_chat_ids(rooms))
