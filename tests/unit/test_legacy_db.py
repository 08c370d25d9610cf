"""Migrating the old key-value database: the pure mapping and the file migration."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from contracts.state import ChatRecord, RoomRecord, RoomType, UserRecord
from runtime.legacy_db import (
    REPORT_META_KEY,
    backup_path,
    detect_legacy,
    migrate_legacy_database,
    plan_migration,
)
from runtime.store import SqliteStore
from tests.legacy_fixtures import (
    SEQUENCE_KEY,
    alice_rows,
    chat_value,
    room_value,
    write_legacy_db,
)

ALICE = "@alice:example.org"
SPACE = "!space:example.org"
C1, C3 = "!c1:example.org", "!c3:example.org"


def rows() -> dict[str, object]:
    return alice_rows(
        ALICE,
        SPACE,
        {C1: ("C1", "Чат 1", "7"), C3: ("C3", "Чат 3", "42")},
        seq=40,
        selected="agent-2",
    )


def as_rows(data: Mapping[str, object]) -> list[tuple[str, str]]:
    return [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]


# -- the mapping -------------------------------------------------------------------------------


def test_the_seed_records_map_to_users_rooms_and_chats() -> None:
    imported = plan_migration(as_rows(rows()))

    assert imported.users == {
        ALICE: UserRecord(
            matrix_user_id=ALICE, space_id=SPACE, next_chat_index=4, selected_agent_id="agent-2"
        )
    }
    assert imported.rooms[C3] == RoomRecord(
        room_id=C3,
        room_type=RoomType.CHAT,
        matrix_user_id=ALICE,
        space_id=SPACE,
        chat_id="C3",
        display_name="Чат 3",
        agent_id="agent-2",
        platform_chat_id="42",
    )
    assert imported.chats[(ALICE, "C1")] == ChatRecord(
        matrix_user_id=ALICE, chat_id="C1", room_id=C1, display_name="Чат 1"
    )
    # The old chat entries' own fields (user_id, platform, ...) are what the records hold.
    assert all(" field " in u for u in imported.unmapped)


def test_the_sequence_continues_above_the_legacy_counter() -> None:
    assert plan_migration(as_rows(rows())).sequence_next == 43  # id 42 seen above seq 40


def test_the_sequence_continues_above_a_counter_higher_than_every_id() -> None:
    data = {**rows(), SEQUENCE_KEY: 100}
    assert plan_migration(as_rows(data)).sequence_next == 101


def test_a_numeric_platform_chat_id_becomes_text() -> None:
    data = rows()
    value = dict(data[f"matrix_room:{C1}"])  # type: ignore[call-overload]
    value["platform_chat_id"] = 7
    data[f"matrix_room:{C1}"] = value
    assert plan_migration(as_rows(data)).rooms[C1].platform_chat_id == "7"


def test_what_cannot_be_mapped_is_named() -> None:
    data: dict[str, object] = {
        **rows(),
        "auth_state:@bob:example.org": {"step": 2},
        "matrix_room:!dm:example.org": {"room_type": "dm", "matrix_user_id": ALICE},
        "matrix_user:@carol:example.org": "{not json",
        SEQUENCE_KEY: '"many"',
    }

    unmapped = plan_migration(as_rows(data)).unmapped

    assert any(u.startswith("auth_state:@bob:example.org: unknown key") for u in unmapped)
    assert any(u.startswith("matrix_room:!dm:example.org: room_type 'dm'") for u in unmapped)
    assert any(u.startswith("matrix_user:@carol:example.org: value is not JSON") for u in unmapped)
    assert any(u.startswith(f"{SEQUENCE_KEY}: not a number") for u in unmapped)


def test_an_unknown_field_is_named_not_dropped_silently() -> None:
    data = rows()
    data[f"matrix_user:{ALICE}"] = {"space_id": SPACE, "next_chat_index": 4, "dm_room": "!dm"}

    unmapped = plan_migration(as_rows(data)).unmapped

    assert f"matrix_user:{ALICE}: field 'dm_room' not kept" in unmapped


def test_a_chat_without_its_room_record_keeps_label_and_name() -> None:
    data: dict[str, object] = {
        f"chat:{ALICE}:C5": chat_value(owner=ALICE, chat_id="C5", room_id=C1, name="Research")
    }

    imported = plan_migration(as_rows(data))

    room = imported.rooms[C1]
    assert (room.chat_id, room.display_name, room.matrix_user_id) == ("C5", "Research", ALICE)
    assert room.platform_chat_id is None  # filled at reconciliation
    assert imported.users[ALICE].next_chat_index == 6


def test_a_chat_that_disagrees_with_its_room_is_named() -> None:
    data = rows()
    data[f"chat:{ALICE}:C9"] = chat_value(owner=ALICE, chat_id="C9", room_id=C1, name="x")

    unmapped = plan_migration(as_rows(data)).unmapped

    assert any(u.startswith(f"chat:{ALICE}:C9: disagrees") for u in unmapped)


def test_next_chat_index_is_above_every_chat_of_the_user() -> None:
    data = rows()
    data[f"matrix_user:{ALICE}"] = {"space_id": SPACE, "next_chat_index": 1}
    assert plan_migration(as_rows(data)).users[ALICE].next_chat_index == 4


def test_a_room_owner_without_user_record_gets_one() -> None:
    data = {
        f"matrix_room:{C1}": room_value(
            owner=ALICE,
            space_id=SPACE,
            chat_id="C2",
            display_name="x",
            platform_chat_id="3",
            agent_id="a",
        )
    }
    assert plan_migration(as_rows(data)).users[ALICE].next_chat_index == 3


# -- the file ----------------------------------------------------------------------------------


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    path = tmp_path / "lambda_matrix.db"
    write_legacy_db(path, rows())
    return path


def test_migration_keeps_the_original_and_imports_everything(legacy_db: Path) -> None:
    original = legacy_db.read_bytes()

    result = migrate_legacy_database(legacy_db)

    assert result is not None
    assert result.migrated == 1 + 2 + 2  # user, rooms, chats
    assert backup_path(legacy_db).read_bytes() == original
    with SqliteStore(legacy_db) as store:
        assert store.get_room(C3) is not None and store.get_room(C3).platform_chat_id == "42"  # type: ignore[union-attr]
        assert [c.chat_id for c in store.list_chats(ALICE)] == ["C1", "C3"]
        assert store.get_user(ALICE).selected_agent_id == "agent-2"  # type: ignore[union-attr]
        assert store.sequence_state().next_value == 43
        report = json.loads(store.get_meta(REPORT_META_KEY) or "{}")
    assert report["rooms"] == 2 and report["table"] == "kv"
    with sqlite3.connect(legacy_db) as db:  # the old table is gone: nothing to redo
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "kv" not in tables


def test_migration_runs_once(legacy_db: Path) -> None:
    assert migrate_legacy_database(legacy_db) is not None
    assert migrate_legacy_database(legacy_db) is None
    assert detect_legacy(legacy_db) is None


def test_a_migrated_database_allocates_above_every_legacy_id(legacy_db: Path) -> None:
    migrate_legacy_database(legacy_db)
    with SqliteStore(legacy_db) as store:
        store.set_reserved_through(100)
        assert store.allocate_platform_chat_id() == 43


def test_records_already_in_our_tables_are_kept_and_named(legacy_db: Path) -> None:
    # A start of the new bot before the upgrade was noticed made its tables beside the old one.
    with SqliteStore(legacy_db) as store:
        store.put_user(UserRecord(matrix_user_id=ALICE, space_id="!second:example.org"))

    result = migrate_legacy_database(legacy_db)

    assert result is not None
    assert f"matrix_user:{ALICE}: a record exists, kept" in result.imported.unmapped
    with SqliteStore(legacy_db) as store:
        assert store.get_user(ALICE).space_id == "!second:example.org"  # type: ignore[union-attr]
        assert store.get_room(C1) is not None


def test_our_own_database_is_not_taken_for_a_legacy_one(tmp_path: Path) -> None:
    path = tmp_path / "lambda_matrix.db"
    with SqliteStore(path) as store:
        store.set_meta("chat:not-legacy", "x")  # our meta table is key/value too

    assert migrate_legacy_database(path) is None
    assert not backup_path(path).exists()


def test_other_files_are_left_alone(tmp_path: Path) -> None:
    missing = tmp_path / "absent.db"
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all")

    assert migrate_legacy_database(missing) is None
    assert migrate_legacy_database(garbage) is None
    assert not missing.exists() and garbage.read_bytes() == b"not a database at all"


def test_a_key_value_table_without_legacy_keys_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    write_legacy_db(path, {"something": {"else": 1}})
    assert migrate_legacy_database(path) is None
